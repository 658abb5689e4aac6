"""The review page: the registry of known queues, its HTML, ``nbqueue serve`` (token,
cookie, XSRF) over plain HTTP, and in a real browser against JupyterLab (with no kernel
running) and against ``nbqueue serve``.

The browser tests use test_browser.py's fixtures (JupyterLab on 127.0.0.1, Debian's
Chromium); without Chromium they skip, except under ``CI=true``.
"""

from __future__ import annotations

import html.parser
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

import jobs
import pytest
import test_browser
from conftest import python_env, start_python, wait_for
from test_browser import api, free_port

import nbqueue
from nbqueue.registry import known_queues, record_queue
from nbqueue.reviews import pending_reviews
from nbqueue.web.render import card_html, payload_html

REPO = Path(__file__).resolve().parent.parent
browser = test_browser.browser  # fixtures: Chromium, JupyterLab (one per module)
lab = test_browser.lab
FIELDS = {"threshold": 0.5, "region": ["east", "west", "north"], "note": str, "notify": True}


class Report:
    """A payload as a notebook would show it: an HTML table, plus what a hostile payload
    would try (a script and an image's onerror acting on the page around it)."""

    def _repr_html_(self) -> str:
        return ("<table><tr><th>region</th><th>units</th></tr><tr><td>east</td><td>246</td>"
                "</tr><tr><td>west</td><td>120</td></tr><tr><td>north</td><td>80</td></tr>"
                "</table><script>parent.document.title = 'pwned'</script>"
                '<img src="x" style="display:none" '
                'onerror="parent.document.body.dataset.pwned = 1">')


def make_queue(path: Path, *, chart: bool = False) -> tuple[nbqueue.Queue, dict[str, str]]:
    """A queue with a gate that asks for answers, a job that needs it, and (``chart``) a
    second gate showing a matplotlib chart. Opened without a dispatcher."""
    q = nbqueue.Queue(path, start=False)
    gate = q.review("Publish the Q3 report?", payload=Report(), name="publish-gate",
                    fields=FIELDS, deadline=4 * 3600, on_deadline="reject", key=None)
    publish = q.submit(jobs.publish_decision, gate, name="publish", key=None)
    ids = {"gate": gate.id, "publish": publish.id}
    if chart:
        import matplotlib

        matplotlib.use("agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4, 2.4))
        ax.bar(["east", "west", "north"], [246, 120, 80], color="#8250df")
        ax.set_title("Q3 units by region")
        fig.tight_layout()
        ids["chart"] = q.review("Check the chart", payload=fig, key=None).id
        plt.close(fig)
    return q, ids


# -- the registry -------------------------------------------------------------------------


def test_each_opened_queue_is_recorded_once_and_gone_ones_are_dropped(tmp_path):
    registry = tmp_path / "registry" / "queues.json"
    env = {"NBQUEUE_REGISTRY": str(registry)}
    # four processes open four queues at once: all are recorded (the registry's lock)
    procs = [start_python(f"import nbqueue; nbqueue.Queue({str(tmp_path / f'q{i}')!r}, "
                          "start=False).close()", cwd=tmp_path, env=env) for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    expected = sorted(tmp_path / f"q{i}" for i in range(4))
    assert sorted(known_queues(registry)) == expected
    record_queue(tmp_path / "q0", registry)  # opened again: listed once
    assert json.loads(registry.read_text())["queues"].count(str(tmp_path / "q0")) == 1
    shutil.rmtree(tmp_path / "q1")
    assert sorted(known_queues(registry)) == [p for p in expected if p.name != "q1"]
    registry.write_text("{not json")  # a damaged registry lists nothing, breaks nothing
    assert known_queues(registry) == []
    nbqueue.Queue(tmp_path / "q2", start=False).close()


def test_a_queue_opened_in_python_is_recorded_in_the_registry_of_the_environment(tmp_path):
    q = nbqueue.Queue(tmp_path / "q", start=False)
    q.close()
    assert tmp_path / "q" in known_queues()  # $NBQUEUE_REGISTRY, set by conftest.py


# -- the page's HTML ----------------------------------------------------------------------


class Elements(html.parser.HTMLParser):
    """Every start tag of a piece of HTML, with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_a_card_escapes_everything_and_sandboxes_the_payload_html(tmp_path):
    q = nbqueue.Queue(tmp_path / "q", start=False)
    q.review("<script>alert('title')</script>", payload=Report(), fields={
        "<b>n</b>": ["<i>a</i>", "b"], "count": 3, "sure": False, "why": str}, key=None)
    review, = pending_reviews(q)
    text = card_html("abc", review, now=review.created + 90)
    tags = Elements(text).tags
    assert "script" not in [t for t, _ in tags]
    assert "<i>a</i>" not in text and "&lt;i&gt;a&lt;/i&gt;" in text
    frames = [a for t, a in tags if t == "iframe"]
    assert len(frames) == 1 and frames[0]["sandbox"] == ""
    assert "parent.document.title" in frames[0]["srcdoc"]  # the payload is only in there
    controls = {a.get("data-field"): (t, a.get("type")) for t, a in tags if a.get("data-field")}
    assert controls == {"<b>n</b>": ("select", None), "count": ("input", "text"),
                        "sure": ("input", "checkbox"), "why": ("input", "text")}
    assert "created 1m ago" in text and "no deadline" in text
    # images are data: images, text is escaped text
    assert payload_html({"image/svg+xml": "<svg onload='x()'/>"}).startswith(
        '<img class="nbq-image" alt="payload" src="data:image/svg+xml;base64,')
    assert Elements(payload_html({"text/plain": "<script>x</script>"})).tags == [("pre", {
        "class": "nbq-text"})]
    q.close()


class CellOutputsRef:
    """The payload ``%%enqueue --review`` gives its gate: "the outputs of job X"."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def _repr_mimebundle_(self, include=None, exclude=None):
        from nbqueue.cellview import RESULT_REF_MIME

        return {"text/plain": f"the outputs of job {self.job_id}",
                RESULT_REF_MIME: json.dumps({"job": self.job_id})}


def test_a_review_of_a_jobs_outputs_shows_them_once_the_job_is_done(tmp_path):
    from nbqueue.web.desk import ReviewDesk

    q = nbqueue.Queue(tmp_path / "q", workers=1, start=False)
    job = q.submit(jobs.add, 20, 22, key=None)
    gate = q.review("Check the sum", payload=CellOutputsRef(job.id), key=None)
    desk = ReviewDesk(queues=[tmp_path / "q"])
    try:
        card, = desk.state()["queues"][0]["cards"]
        assert f"the outputs of job {job.id}" in card["html"] and "iframe" not in card["html"]
        q.start()
        assert job.result(timeout=120) == 42
        q.stop()
        card, = desk.state()["queues"][0]["cards"]
        frame, = [a for t, a in Elements(card["html"]).tags if t == "iframe"]
        assert "42" in frame["srcdoc"]
        q.approve(gate, comment="sum checked")
        assert desk.state()["queues"][0]["cards"] == [] and desk._results == {}
    finally:
        desk.close()
        q.close()


# -- nbqueue serve over plain HTTP ---------------------------------------------------------


def request(base: str, method: str, path: str, *, headers: dict[str, str] | None = None,
            body: str | bytes | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One HTTP request, no redirect followed: status, headers, body."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def cookies_of(headers: http.client.HTTPMessage) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for line in headers.get_all("Set-Cookie") or []:
        jar.load(line)
    return jar


def cookie_header(*jars: SimpleCookie) -> str:
    return "; ".join(f"{k}={m.value}" for jar in jars for k, m in jar.items())


def xsrf_of(page: bytes) -> str:
    return re.search(rb'<meta name="nbq-xsrf" content="([^"]+)"', page).group(1).decode()


# Blocks jupyter_server: `nbqueue serve` must work with tornado alone.
SERVE = textwrap.dedent("""
    import sys
    sys.modules["jupyter_server"] = None
    from nbqueue.cli import main
    code = main(sys.argv[1:])
    assert "jupyter_server" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
    sys.exit(code)
""")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict]:
    """``nbqueue serve ROOT`` (jupyter_server unimportable) over a folder holding a queue
    with a gate that asks for answers; stopped with SIGINT, which must exit 0."""
    root = tmp_path / "root"
    root.mkdir()
    q, ids = make_queue(root / "q")
    out = (tmp_path / "serve.out").open("w")
    proc = subprocess.Popen([sys.executable, "-c", SERVE, "serve", str(root)], cwd=tmp_path,
                            env=python_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        found = wait_for(lambda: proc.poll() is not None or re.search(
            r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", (tmp_path / "serve.out").read_text()),
            timeout=120, message="nbqueue serve to print its address")
        assert proc.poll() is None, (tmp_path / "serve.out").read_text()
        yield {"url": found.group(0), "base": f"http://127.0.0.1:{found.group(1)}",
               "port": int(found.group(1)), "token": found.group(2), "queue": q, **ids}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            out.close()
            q.close()
        assert code == 0, (tmp_path / "serve.out").read_text()


def test_serve_refuses_every_request_without_the_token(served):
    base, token = served["base"], served["token"]
    for method, path in [("GET", "/"), ("GET", "/nbqueue/"), ("GET", "/nbqueue/api/state"),
                         ("GET", "/no/such/page"), ("GET", f"/nbqueue/?token={token}x"),
                         ("POST", "/nbqueue/api/decide")]:
        status, _, body = request(base, method, path, body="{}" if method == "POST" else None)
        assert status == 403, (method, path, status)
        assert b"Publish the Q3" not in body
    # the token, but a request for another host name (DNS rebinding): refused too
    status, _, _ = request(base, "GET", f"/nbqueue/?token={token}",
                           headers={"Host": f"attacker.example:{served['port']}"})
    assert status == 403
    assert served["queue"].job(served["gate"]).state == "review"


def test_serve_keeps_the_token_in_a_strict_cookie_and_needs_xsrf_to_decide(served):
    base, token, q = served["base"], served["token"], served["queue"]
    status, headers, _ = request(base, "GET", f"/?token={token}")
    assert (status, headers["Location"]) == (302, "/nbqueue/")
    login = cookies_of(headers)
    morsel = login[f"nbqueue-token-{served['port']}"]
    assert morsel.value == token and morsel["httponly"] and morsel["samesite"] == "Strict"
    status, headers, page = request(base, "GET", "/nbqueue/",
                                    headers={"Cookie": cookie_header(login)})
    assert status == 200 and b"Publish the Q3 report?" in page
    assert "script-src 'nonce-" in headers["Content-Security-Policy"]
    xsrf_cookie = cookies_of(headers)
    state = json.loads(request(base, "GET", "/nbqueue/api/state",
                               headers={"Cookie": cookie_header(login)})[2])
    queue_id = state["queues"][0]["id"]
    decision = json.dumps({"queue": queue_id, "gate": served["gate"], "action": "approve",
                           "comment": "ok", "values": {"note": "from HTTP"}})
    # the cookie alone (what a cross-site form would send): refused, nothing changes
    for headers in ({"Cookie": cookie_header(login)},
                    {"Cookie": cookie_header(login, xsrf_cookie)},
                    {"Cookie": cookie_header(login), "X-XSRFToken": xsrf_of(page)}):
        status, _, _ = request(base, "POST", "/nbqueue/api/decide", headers=headers,
                               body=decision)
        assert status == 403
    assert q.job(served["gate"]).state == "review"
    # with the page's XSRF token as well: decided
    status, _, body = request(base, "POST", "/nbqueue/api/decide", body=decision, headers={
        "Cookie": cookie_header(login, xsrf_cookie), "X-XSRFToken": xsrf_of(page)})
    assert status == 200, body
    result = q.job(served["gate"]).result()
    assert (bool(result), result.comment, result.values) == (True, "ok", {
        "threshold": 0.5, "region": "east", "note": "from HTTP", "notify": True})


def test_serve_says_which_answers_are_wrong_and_changes_nothing(served):
    base, token, q = served["base"], served["token"], served["queue"]
    status, headers, page = request(base, "GET", f"/nbqueue/?token={token}")
    assert status == 302
    login = cookies_of(headers)
    _, headers, page = request(base, "GET", "/nbqueue/", headers={"Cookie": cookie_header(login)})
    auth = {"Cookie": cookie_header(login, cookies_of(headers)), "X-XSRFToken": xsrf_of(page)}
    queue_id = re.search(rb'data-queue="([0-9a-f]+)"', page).group(1).decode()

    def decide(**body):
        status, _, text = request(base, "POST", "/nbqueue/api/decide", headers=auth,
                                  body=json.dumps({"queue": queue_id, **body}))
        return status, json.loads(text)

    status, answer = decide(gate=served["gate"], action="approve",
                            values={"threshold": "high", "note": " ", "region": "south"})
    assert status == 400
    assert answer["errors"] == {"threshold": "'high' is not a number; give a number such as 0.5",
                                "note": "needs a value", "region": "'south' is not one of "
                                "east, west, north"}
    assert decide(gate="0000", action="approve")[0] == 404
    assert decide(gate=served["gate"], action="maybe")[0] == 400
    assert q.job(served["gate"]).state == "review"
    q.reject(served["gate"], comment="elsewhere")  # decided elsewhere meanwhile
    status, answer = decide(gate=served["gate"], action="approve", values={"note": "x"})
    assert status == 409 and "rejected already" in answer["message"]
    assert q.job(served["gate"]).record().reason == "rejected by root: elsewhere"


# -- in a real browser -----------------------------------------------------------------------


def attack_page(target: str, queue_id: str, gate: str) -> str:
    """A page of another origin that posts a decision to ``target`` as soon as it loads:
    a form of enctype text/plain whose body is valid JSON (what a cross-site attacker can
    send with the victim's cookies, but without the page's XSRF token)."""
    name = json.dumps({"queue": queue_id, "gate": gate, "action": "approve",
                       "comment": "forged", "values": {"note": "forged"}, "pad": ""})[:-2]
    return (f'<form id="f" method="POST" action="{target}" enctype="text/plain">'
            f"<input name='{name}' value='\"}}'></form>"
            "<script>document.getElementById('f').submit()</script>")


def post_from_another_origin(context, target: str, queue_id: str, gate: str) -> int:
    """Load an attacker's page on 127.0.0.1:<another port> in ``context`` (a browser that
    holds the page's cookies) and return the status of the POST it makes."""
    page = context.new_page()
    attacker = f"http://127.0.0.1:{free_port()}/attack"
    page.route(attacker, lambda route: route.fulfill(
        status=200, content_type="text/html", body=attack_page(target, queue_id, gate)))
    try:
        with page.expect_response(lambda r: r.url == target, timeout=60_000) as answer:
            page.goto(attacker)
        return answer.value.status
    finally:
        page.close()


def card_of(page, title: str):
    return page.locator(".nbq-card", has_text=title)


def test_review_page_in_jupyterlab_with_no_kernel(lab, browser, tmp_path):
    qdir = lab["root"] / f"q-page-{uuid.uuid4().hex[:6]}"
    q, ids = make_queue(qdir, chart=True)
    status = request(lab["base"], "GET", "/nbqueue/api/state",
                     headers={"Authorization": f"token {lab['token']}"})[0]
    assert status == 200, ("the Jupyter server extension is not enabled: pip install -e . "
                           "installs jupyter-config/jupyter_server_config.d/nbqueue.json")
    assert api(lab, "/api/kernels") == []  # no kernel runs, none is started below
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{lab['base']}/nbqueue/?token={lab['token']}")
        card = card_of(page, "Publish the Q3 report?")
        card.wait_for(timeout=60_000)
        assert "publish-gate" in card.locator(".nbq-name").inner_text()
        assert re.fullmatch(r"3h 59m left \(then rejected\)",
                            card.locator(".nbq-left").inner_text())
        frame = card.locator("iframe.nbq-frame")
        assert frame.get_attribute("sandbox") == ""
        assert "246" in page.frame_locator(f"#gate-{ids['gate']} iframe").locator(
            "table").inner_text()
        card_of(page, "Check the chart").locator("img.nbq-image").wait_for()

        # a wrong answer: shown next to its field, nothing changed
        card.locator("[data-field=threshold]").fill("high")
        card.locator("button.nbq-approve").click()
        error = card.locator(".nbq-error[data-error-for=threshold]")
        error.wait_for()
        assert "is not a number" in error.inner_text()
        assert card.locator(".nbq-error[data-error-for=note]").inner_text() == "needs a value"
        assert q.job(ids["gate"]).state == "review"
        card.screenshot(path=str(tmp_path / "review-card.png"))

        card.locator("[data-field=threshold]").fill("0.75")
        assert error.inner_text() == ""  # corrected: its error goes
        card.locator("[data-field=region]").select_option("north")
        card.locator("[data-field=note]").fill("checked the <b>table</b>")
        card.locator("[data-field=notify]").uncheck()
        card.locator("textarea.nbq-comment").fill("approved in the browser")
        page.wait_for_timeout(1100)  # the ages tick: screenshots as a reviewer sees them
        shot = tmp_path / "review-page.png"
        page.screenshot(path=str(shot), full_page=True)
        if os.environ.get("NBQUEUE_UPDATE_SCREENSHOT"):  # refresh the ones in docs/
            shutil.copyfile(shot, REPO / "docs" / "review-page.png")
            shutil.copyfile(tmp_path / "review-card.png", REPO / "docs" / "review-card.png")

        # a decision made elsewhere shows at once: its card goes
        q.reject(ids["chart"], comment="decided in Python")
        card_of(page, "Check the chart").wait_for(state="detached", timeout=30_000)

        card.locator("button.nbq-approve").click()
        card.wait_for(state="detached", timeout=30_000)
        result = q.job(ids["gate"]).result()
        assert (bool(result), result.comment) == (True, "approved in the browser")
        assert result.values == {"threshold": 0.75, "region": "north",
                                 "note": "checked the <b>table</b>", "notify": False}
        assert q.job(ids["publish"]).state in ("waiting", "ready")  # no dispatcher yet
        assert page.title() == "nbqueue reviews" and page.evaluate(
            "() => document.body.dataset.pwned") is None  # the payload's script never ran
        assert api(lab, "/api/kernels") == []
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(lab["log"].read_text()[-4000:])
        raise
    finally:
        context.close()
        q.close()
    with nbqueue.Queue(qdir, workers=1) as served_queue:  # a dispatcher: the job runs
        assert served_queue.job(ids["publish"]).result(timeout=120) == {
            "approved": True, "comment": "approved in the browser", "values": result.values}


def test_review_page_in_jupyterlab_refuses_strangers_and_cross_site_posts(lab, browser):
    q, ids = make_queue(lab["root"] / f"q-refuse-{uuid.uuid4().hex[:6]}")
    target = f"{lab['base']}/nbqueue/api/decide"
    # no token, plain HTTP: the page sends to the login page, the API refuses
    status, headers, _ = request(lab["base"], "GET", "/nbqueue/")
    assert status == 302 and "/login" in headers["Location"]
    for method, path in [("GET", "/nbqueue/api/state"), ("POST", "/nbqueue/api/decide")]:
        assert request(lab["base"], method, path, body="{}" if method == "POST" else None,
                       )[0] == 403
    # logged in by cookie, POST without the XSRF token: refused
    pattern = rb'data-key="([0-9a-f]+)/' + ids["gate"].encode()
    pages: list[tuple[int, dict, bytes]] = []

    def page_lists_the_gate() -> bool:  # the page's thread reads the registry on its own time
        pages.append(request(lab["base"], "GET", f"/nbqueue/?token={lab['token']}"))
        return pages[-1][0] == 200 and re.search(pattern, pages[-1][2]) is not None

    wait_for(page_lists_the_gate, timeout=60, interval=0.5, message="the page to list the gate")
    status, headers, page_html = pages[-1]
    queue_id = re.search(pattern, page_html).group(1)
    body = json.dumps({"queue": queue_id.decode(), "gate": ids["gate"], "action": "approve",
                       "values": {"note": "forged"}})
    status, _, _ = request(lab["base"], "POST", "/nbqueue/api/decide", body=body,
                           headers={"Cookie": cookie_header(cookies_of(headers))})
    assert status == 403
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()  # no token: the login page, no review
        page.goto(f"{lab['base']}/nbqueue/")
        assert "/login" in page.url and "Publish the Q3" not in page.content()
        page.goto(f"{lab['base']}/nbqueue/?token={lab['token']}")  # now logged in
        card_of(page, "Publish the Q3 report?").wait_for(timeout=60_000)
        status = post_from_another_origin(context, target, queue_id.decode(), ids["gate"])
        assert status in (403, 404), status  # Jupyter: XSRF (403) or origin check (404)
        page.reload()  # the page's own session still works
        card_of(page, "Publish the Q3 report?").wait_for(timeout=60_000)
    finally:
        context.close()
    assert q.job(ids["gate"]).state == "review"
    q.close()


def test_review_page_of_nbqueue_serve_in_a_browser(served, browser):
    q = served["queue"]
    target = f"{served['base']}/nbqueue/api/decide"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    stranger = browser.new_context()
    try:
        response = stranger.new_page().goto(f"{served['base']}/nbqueue/")
        assert response.status == 403
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(served["url"])
        assert page.url == f"{served['base']}/nbqueue/"  # the token went into a cookie
        card = card_of(page, "Publish the Q3 report?")
        card.wait_for(timeout=60_000)
        queue_id = card.get_attribute("data-queue")
        status = post_from_another_origin(context, target, queue_id, served["gate"])
        assert status == 403
        assert q.job(served["gate"]).state == "review"

        card.locator("[data-field=note]").fill("served without Jupyter")
        card.locator("[data-field=region]").select_option("west")
        card.locator("button.nbq-approve").click()
        card.wait_for(state="detached", timeout=30_000)
        assert q.job(served["gate"]).result().values == {
            "threshold": 0.5, "region": "west", "note": "served without Jupyter",
            "notify": True}
        # a gate that comes later shows up by itself
        q.review("A later review", key=None)
        card_of(page, "A later review").wait_for(timeout=30_000)
        assert not errors, errors
    finally:
        context.close()
        stranger.close()


# -- which queues Jupyter's page shows ---------------------------------------------------------


def test_the_jupyter_page_shows_the_queues_under_its_root_and_those_configured(tmp_path):
    root = tmp_path / "root"
    for path in (root / "sub" / "q-in", tmp_path / "q-outside", tmp_path / "q-configured"):
        nbqueue.Queue(path, start=False).review(f"gate of {path.name}").queue.close()
    port, token = free_port(), uuid.uuid4().hex
    env = python_env({"JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
                      "JUPYTER_DATA_DIR": str(tmp_path / "data"),
                      "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--NbqueueReviews.queues={tmp_path / 'q-configured'}"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    try:
        wait_for(lambda: server.poll() is not None or test_browser.status_code(
            f"{base}/api/status?token={token}") == 200, timeout=120, interval=0.2,
            message="the Jupyter server to answer")
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        status, headers, _ = request(base, "GET", "/nbqueue", headers=auth)
        assert (status, headers["Location"]) == (302, "/nbqueue/")
        status, _, body = request(base, "GET", "/nbqueue/api/state", headers=auth)
        assert status == 200, body
        heads = " ".join(q["head"] for q in json.loads(body)["queues"])
        assert str(tmp_path / "q-configured") in heads and str(root / "sub" / "q-in") in heads
        assert "q-outside" not in heads  # opened, but not under the root nor configured
        assert len(json.loads(body)["queues"]) == 2
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


# -- enabled on install ----------------------------------------------------------------------


def test_the_jupyter_server_extension_is_enabled_on_install():
    from jupyter_core.paths import jupyter_config_path

    shipped = REPO / "jupyter-config" / "jupyter_server_config.d" / "nbqueue.json"
    assert json.loads(shipped.read_text()) == {
        "ServerApp": {"jpserver_extensions": {"nbqueue": True}}}
    tomllib = pytest.importorskip("tomllib")
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    assert build["targets"]["wheel"]["shared-data"] == {
        "jupyter-config/jupyter_server_config.d/nbqueue.json":
            "etc/jupyter/jupyter_server_config.d/nbqueue.json"}
    installed = [Path(d) / "jupyter_server_config.d" / "nbqueue.json"
                 for d in jupyter_config_path()]
    assert any(p.is_file() for p in installed), (
        "not installed: pip install -e . puts it in <prefix>/etc/jupyter")
    points = nbqueue._jupyter_server_extension_points()
    module = __import__(points[0]["module"], fromlist=["_load_jupyter_server_extension"])
    assert callable(module._load_jupyter_server_extension)
