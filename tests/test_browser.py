"""One end-to-end test in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven
by Playwright, the review notebook run from the page, and Approve clicked on the panel.

Without /usr/bin/chromium (``apt-get install -y chromium``) or Playwright this module
skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import python_env, wait_for

import nbqueue

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} is not available here")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        missing(f"chromium ({CHROMIUM}; apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_code(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, browser) -> Iterator[dict]:
    base_dir = tmp_path_factory.mktemp("lab")
    root = base_dir / "root"
    root.mkdir()
    settings = base_dir / "settings"
    notices = settings / "@jupyterlab" / "apputils-extension"
    notices.mkdir(parents=True)
    (notices / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(base_dir / "config"),
               JUPYTER_DATA_DIR=str(base_dir / "data"),
               JUPYTER_RUNTIME_DIR=str(base_dir / "runtime"),
               IPYTHONDIR=str(base_dir / "ipython"), TMPDIR=str(base_dir),
               NBQUEUE_DIR=str(root / "q"))
    log = (base_dir / "lab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={settings}",
         f"--LabApp.workspaces_dir={base_dir / 'workspaces'}"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or
                 status_code(f"{base}/api/status?token={token}") == 200,
                 timeout=120, interval=0.2, message="JupyterLab to answer")
        assert proc.poll() is None, (base_dir / "lab.log").read_text()[-3000:]
        yield {"base": base, "token": token, "root": root, "log": base_dir / "lab.log"}
    finally:
        request = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
            proc.wait(timeout=60)
        except Exception:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def review_notebook_without_auto_approve(path: Path) -> None:
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "03-review-gates.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if "auto-approve" not in c.metadata.get("tags", [])]
    assert nb.cells and all(not c.get("outputs") for c in nb.cells)
    nbformat.write(nb, path)


def test_click_approve_in_jupyterlab(lab, browser, tmp_path):
    name = f"review-{uuid.uuid4().hex[:8]}.ipynb"
    review_notebook_without_auto_approve(lab["root"] / name)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"{lab['base']}/lab/workspaces/{uuid.uuid4().hex}/tree/{name}"
                  f"?reset&token={lab['token']}")
        tab = page.locator("li.lm-TabBar-tab.lm-mod-current", has_text=name)
        tab.wait_for(timeout=120_000)
        panel = page.locator(f"[id='{tab.get_attribute('data-id')}']")
        page.wait_for_function(
            """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => {
                   const t = e.textContent.trim();
                   return t.endsWith('| Idle') && !t.startsWith('No Kernel'); })""",
            timeout=120_000)
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        # the full panel (%nbq) is the last one; its review card appears once the
        # report job has run and the gate is in review
        queue_panel = panel.locator(".nbq-panel").last
        approve = queue_panel.locator("button.nbq-approve:visible")
        approve.wait_for(timeout=120_000)
        card = queue_panel.locator(".nbq-review-card:visible")
        card.locator("svg").wait_for(timeout=60_000)  # the report's chart, rendered
        assert "Review report" in card.inner_text()
        shot = tmp_path / "panel.png"  # saved with the test's files (docs/panel.png is
        queue_panel.screenshot(path=str(shot))  # test_the_panel_at_laptop_width's)
        assert shot.stat().st_size > 0

        card.locator("textarea.nbq-comment, .nbq-comment textarea").first.fill("clicked in a browser")
        approve.click()

        q = nbqueue.Queue(lab["root"] / "q", start=False)
        gate, = q.jobs(name="Review report")
        wait_for(lambda: gate.state == "done", timeout=120, interval=0.1,
                 message="the gate to be approved on disk")
        assert gate.result().comment == "clicked in a browser"
        publish, = q.jobs(name="publish")
        assert publish.result(timeout=120) == {"published": "PUBLISHED - Q3 sales: 446 units, "
                                                            "best region east"}
        # the page re-rendered: no review card left in the panel
        queue_panel.locator(".nbq-review-card:visible").first.wait_for(state="hidden",
                                                                 timeout=60_000)
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(lab["log"].read_text()[-4000:])
        raise
    finally:
        context.close()


RESTART_CELLS = [
    ("markdown", "The fit runs in the queue's detached service, not in this kernel: restart "
                 "the kernel while it runs, then run the cells again to attach to it."),
    ("code", "%load_ext nbqueue"),
    ("code", "%nbq use q-restart --detach -w 1"),
    ("code", """%%enqueue fit --out coef,score
import time
import nbqueue

steps = 60
print('fitting', steps, 'epochs')
for epoch in range(steps):
    time.sleep(0.25)
    nbqueue.progress(epoch + 1, steps, 'epochs')
    if epoch % 20 == 0:
        print('epoch', epoch)
coef = [1.5, -2.0]
score = 0.93"""),
    ("code", "%nbq wait fit"),
    ("code", "print(f'coef = {coef}, score = {score}')"),
]


def restart_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell(text) if kind == "markdown"
                else nbformat.v4.new_code_cell(text) for kind, text in RESTART_CELLS]
    nbformat.write(nb, path)


def api(lab: dict, path: str, method: str = "GET") -> object:
    """A call to the JupyterLab server's REST API; its JSON answer (None if empty)."""
    request = urllib.request.Request(f"{lab['base']}{path}", method=method,
                                     headers={"Authorization": f"token {lab['token']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


def session_of(lab: dict, name: str) -> dict:
    sessions = [s for s in api(lab, "/api/sessions") if s["path"] == name]
    assert len(sessions) == 1, sessions
    return sessions[0]


def kernel_pids(lab: dict, name: str) -> set[int]:
    """The pids of the kernel process of notebook ``name`` (found by its connection file,
    which names the kernel's id; a restart keeps the id and starts a new process)."""
    import psutil

    kernel_id = session_of(lab, name)["kernel"]["id"]
    found = set()
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "ipykernel_launcher" in " ".join(cmd) and any(f"kernel-{kernel_id}.json" in part
                                                         for part in cmd):
            found.add(p.pid)
    return found


def running(process) -> bool:
    """Whether this very process (a ``psutil.Process``) still runs; a zombie does not."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@contextlib.contextmanager
def opened(path: Path) -> Iterator[nbqueue.Queue]:
    """The queue directory opened from the test (no dispatcher), closed after."""
    q = nbqueue.Queue(path, start=False)
    try:
        yield q
    finally:
        q.close()


def status_line_text(panel) -> str:
    return panel.locator(".nbq-line").first.inner_text()


def test_restart_the_kernel_in_jupyterlab_while_a_detached_job_runs(lab, browser, tmp_path):
    import psutil

    name = f"restart-{uuid.uuid4().hex[:8]}.ipynb"
    restart_notebook(lab["root"] / name)
    qdir = lab["root"] / "q-restart"
    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    service: list[psutil.Process] = []
    kernel_idle = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => {
                         const t = e.textContent.trim();
                         return t.endsWith('| Idle') && !t.startsWith('No Kernel'); })"""
    try:
        page.goto(f"{lab['base']}/lab/workspaces/{uuid.uuid4().hex}/tree/{name}"
                  f"?reset&token={lab['token']}")
        tab = page.locator("li.lm-TabBar-tab.lm-mod-current", has_text=name)
        tab.wait_for(timeout=120_000)
        panel = page.locator(f"[id='{tab.get_attribute('data-id')}']")
        page.wait_for_function(kernel_idle, timeout=120_000)
        # the notebook alone, 1280 px wide: fold the file browser away
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        line = panel.locator(".nbq-line").first
        line.wait_for(timeout=120_000)
        wait_for(lambda: "running" in status_line_text(panel), timeout=120, interval=0.1,
                 message="the status line to show fit running")
        with opened(qdir) as q:
            fit, = q.jobs(name="fit")
            record = fit.record()
            assert (record.state, record.attempt) == ("running", 1), record
            service += [psutil.Process(q.service.pid)]
            service += service[0].children(recursive=True)
        before = kernel_pids(lab, name)
        assert len(before) == 1, before
        old_line = line.element_handle()

        page.get_by_role("menuitem", name="Kernel", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Restart Kernel…")).click()
        restart = page.locator(".jp-Dialog button.jp-mod-accept")  # the dialog's "Restart"
        assert restart.inner_text().strip() == "Restart"
        restart.click()
        wait_for(lambda: (now := kernel_pids(lab, name)) and now.isdisjoint(before),
                 timeout=120, interval=0.1, message="a new kernel process")
        page.wait_for_function(kernel_idle, timeout=120_000)
        with opened(qdir) as q:
            record = q.job(fit.id).record()
            assert (record.state, record.attempt) == ("running", 1), record  # still running

        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        page.wait_for_function("el => !el.isConnected", arg=old_line, timeout=120_000)
        wait_for(lambda: "running" in status_line_text(panel), timeout=120, interval=0.1,
                 message="the status line of the re-run cell to show fit running (attached)")
        wait_for(lambda: "done" in status_line_text(panel), timeout=120, interval=0.2,
                 message="the status line to show fit done")
        printed = panel.locator(".jp-OutputArea-output", has_text="coef = [1.5, -2.0]")
        printed.wait_for(timeout=60_000)
        assert printed.inner_text().strip() == "coef = [1.5, -2.0], score = 0.93"
        panel.locator(".nbq-bound", has_text="coef").first.wait_for(timeout=30_000)
        page.wait_for_function(kernel_idle, timeout=60_000)

        shot = tmp_path / "restart.png"  # saved with the test's files
        panel.screenshot(path=str(shot))
        assert shot.stat().st_size > 0
        if os.environ.get("NBQUEUE_UPDATE_SCREENSHOT"):  # refresh the one in docs/
            shutil.copyfile(shot, REPO / "docs" / "restart.png")

        with opened(qdir) as q:
            jobs = q.jobs(name="fit")
            assert [j.id for j in jobs] == [fit.id]  # the same job, attached to
            record = jobs[0].record()
            # it ran once, start to end, in the service's worker: no attempt was lost
            assert (record.state, record.attempt, record.deaths) == ("done", 1, 0), record
            assert "--- attempt" not in jobs[0].logs
            assert q.service is not None and q.service.pid == service[0].pid
        assert not errors, errors
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(lab["log"].read_text()[-4000:])
        raise
    finally:
        context.close()
        with contextlib.suppress(Exception):  # shut its kernel down (the server would, later)
            api(lab, f"/api/sessions/{session_of(lab, name)['id']}", method="DELETE")
        stopped = subprocess.run([sys.executable, "-m", "nbqueue", "stop", str(qdir)],
                                 env=python_env(), capture_output=True, text=True, timeout=120)
        try:
            assert stopped.returncode == 0, stopped.stderr
            wait_for(lambda: not any(running(p) for p in service), timeout=60,
                     message="the service and its workers to end")
        finally:
            for p in service:
                try:
                    p.kill()
                except psutil.Error:
                    pass


SAVED_CELLS = [
    "%load_ext nbqueue",
    "%nbq use q-saved",
    "%%enqueue data\nimport pandas as pd\n\nsales = pd.DataFrame({'region': ['north', 'south', "
    "'east'], 'units': [120, 95, 231]})\nsales",
    "%%enqueue slow\nimport time\nimport nbqueue\n\nfor step in range(8):\n    time.sleep(0.25)\n"
    "    nbqueue.progress(step + 1, 8, 'steps')\n    print('step', step)\nslow_done = True",
    "%%enqueue summary\ntotal = int(sales.units.sum())\nbest = sales.loc[sales.units.idxmax(), "
    "'region']\nprint('total', total, 'best', best)",
    "%%enqueue chart --review\nfrom matplotlib.figure import Figure\n\nfig = Figure(figsize=(4, 2.5))"
    "\nax = fig.subplots()\nax.bar(sales.region, sales.units)\nax.set_title(f'units by region "
    "(best: {best})')\nfig",
    "%nbq",
]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
KERNEL_IDLE = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => {
                     const t = e.textContent.trim();
                     return t.endsWith('| Idle') && !t.startsWith('No Kernel'); })"""


def enqueue_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("%%enqueue")]


def plain_text(cell) -> str:
    return "\n".join(o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def saved_if_readable(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception:  # caught while the server writes it
        return None


def test_the_saved_notebook_keeps_the_results_when_the_kernel_is_gone(lab, browser, tmp_path):
    import nbformat

    name = f"saved-{uuid.uuid4().hex[:8]}.ipynb"
    path = lab["root"] / name
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in SAVED_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, path)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def open_notebook():
        page.goto(f"{lab['base']}/lab/workspaces/{uuid.uuid4().hex}/tree/{name}"
                  f"?reset&token={lab['token']}")
        tab = page.locator("li.lm-TabBar-tab.lm-mod-current", has_text=name)
        tab.wait_for(timeout=120_000)
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        return page.locator(f"[id='{tab.get_attribute('data-id')}']")

    def save(until) -> object:
        page.keyboard.press("Control+s")
        return wait_for(lambda: (nb := saved_if_readable(path)) is not None and until(nb) and nb,
                        timeout=60, interval=0.2, message="the notebook to be saved")

    def shots(*pairs) -> None:
        for locator, file in pairs:
            locator.screenshot(path=str(tmp_path / file))  # saved with the test's files
            if os.environ.get("NBQUEUE_UPDATE_SCREENSHOT"):  # refresh the ones in docs/
                shutil.copyfile(tmp_path / file, REPO / "docs" / file)

    seen: list[str] = []
    try:
        panel = open_notebook()
        # 1280 px with the file browser open: the notebook gets what is left
        assert page.locator("#filebrowser").is_visible()
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        queue_panel = panel.locator(".nbq-panel").last
        approve = queue_panel.locator("button.nbq-approve:visible")
        approve.wait_for(timeout=180_000)
        card = queue_panel.locator(".nbq-review-card:visible")
        card.locator("img").first.wait_for(timeout=60_000)  # the chart, in the card
        assert "Review chart" in card.inner_text()
        queue_panel.scroll_into_view_if_needed()
        shots((page, "notebook-panel.png"), (card, "notebook-review-card.png"))
        card.locator("textarea.nbq-comment, .nbq-comment textarea").first.fill("the chart is right")
        approve.click()

        # each cell's output follows its job to the end, the review included (textContent:
        # JupyterLab skips rendering the cells out of view, and innerText with them)
        lines = panel.locator(".nbq-cell .nbq-line")

        def all_done() -> bool:
            seen[:] = lines.all_text_contents()
            return (len(seen) == 4 and all(" done" in t for t in seen)
                    and "review done" in seen[-1])

        wait_for(all_done, timeout=180, interval=0.2, message="the four cells to show done")
        page.wait_for_function(KERNEL_IDLE, timeout=60_000)

        saved = save(lambda nb: "review done" in plain_text(enqueue_cells(nb)[-1]))
        data, slow, summary, chart = enqueue_cells(saved)
        for cell in (data, slow, summary, chart):
            assert cell.outputs and not any(WIDGET_MIME in o.get("data", {}) for o in cell.outputs)
            assert " done" in plain_text(cell).splitlines()[0], plain_text(cell)
            assert "<nbqueue job" not in plain_text(cell)
        assert "<table" in data.outputs[-1].data["text/html"]  # the DataFrame, as pandas shows it
        assert "step 0\nstep 1" in plain_text(slow) and "step 7" in plain_text(slow)  # log tail
        assert "total 446 best east" in plain_text(summary)
        assert "review done" in plain_text(chart)
        png = [o.data["image/png"] for o in chart.outputs if "image/png" in o.get("data", {})]
        assert len(png) == 1 and len(png[0]) > 1000  # the figure, as a PNG output

        # the kernel shuts down: the live panel leaves a static snapshot in its place
        page.get_by_role("menuitem", name="Kernel", exact=True).click()
        page.get_by_role("menuitem", name=re.compile(r"^Shut Down Kernel")).click()
        dialog = page.locator(".jp-Dialog button.jp-mod-accept")
        with contextlib.suppress(Exception):  # a confirmation, in some versions
            dialog.click(timeout=5_000)
        panel.locator(".nbq-panel-snapshot").wait_for(timeout=60_000)
        saved = save(lambda nb: "nbq-panel-snapshot" in json.dumps(nb.cells[-1].outputs))
        assert not any(WIDGET_MIME in o.get("data", {}) for c in saved.cells
                       for o in c.get("outputs", [])), "a widget view left in the document"

        # reopened without that kernel: the results are there, no widget error
        panel = open_notebook()
        panel.locator(".nbq-cell").nth(3).wait_for(timeout=60_000)
        panel.locator(".nbq-panel-snapshot").wait_for(timeout=60_000)
        chart_img = panel.locator(".jp-OutputArea-output img").last
        chart_img.wait_for(timeout=60_000)
        assert chart_img.evaluate("img => img.naturalWidth") > 100
        text = panel.text_content()
        assert "model not found" not in text and "Error displaying widget" not in text
        assert text.count("back in the notebook") + text.count(" done") >= 4
        assert "total 446 best east" in text
        chart_img.scroll_into_view_if_needed()
        shots((page, "notebook-saved.png"))
        assert not errors, errors
    except BaseException:  # pytest.fail too
        page.screenshot(path=str(tmp_path / "failure.png"))
        print("status lines:", seen)
        print(lab["log"].read_text()[-4000:])
        raise
    finally:
        context.close()
        with contextlib.suppress(Exception):  # the kernel of the reopened notebook
            api(lab, f"/api/sessions/{session_of(lab, name)['id']}", method="DELETE")


LAPTOP_CELLS = [
    "%load_ext nbqueue\n%nbq use q-laptop -w 3",
    "%%enqueue prep\ndata = list(range(100))",
    "rate = 0",
    "%%enqueue fit\nmodel = sum(data) / rate",  # fails: run again below with another rate
    "rate = 2",
    "%%enqueue fit\nmodel = sum(data) / rate",
    "%%enqueue train\nimport time\nimport nbqueue\n\nfor epoch in range(900):\n"
    "    time.sleep(0.5)\n    nbqueue.progress(epoch + 1, 900, 'epochs')\nweights = [1.0]",
    "%%enqueue evaluate --needs train\nscore = 0.93",
    "%%enqueue preprocess-the-whole-customer-dataset-of-the-third-quarter --after 'in 2h' "
    "--resources db\nrows = 1",
    "import pathlib\nimport time\n\nq = %nbq queue\n\n"
    "def download(path):\n    count = pathlib.Path(path)\n"
    "    n = int(count.read_text()) if count.exists() else 0\n"
    "    count.write_text(str(n + 1))\n    print('download attempt', n + 1)\n"
    "    if n == 0:\n        raise ConnectionError('the server hung up')\n    return n + 1\n\n"
    "q.submit(download, 'download-count', retries=2, retry_delay=0.2, name='download')\n"
    "q.submit(time.sleep, 60, after='in 1h', name='backup').cancel()",
    "%%enqueue report --review --out summary\nsummary = {'north': 120, 'south': 95, 'east': 231}\n\n"
    "class Table:\n    def _repr_html_(self):\n"
    "        rows = ''.join(f'<tr><td>{k}</td><td>{v}</td></tr>' for k, v in summary.items())\n"
    "        return f'<table><tr><th>region</th><th>units</th></tr>{rows}</table>'\n\nTable()",
    "%nbq",
    # keeps the kernel busy until the test creates the file: clicks wait meanwhile
    "import os\nimport time\n\nfor _ in range(3000):\n    if os.path.exists('release-kernel'):\n"
    "        break\n    time.sleep(0.2)",
]

TRUNCATED_BUTTONS = """panel => [...panel.querySelectorAll('button')]
    .filter(b => b.offsetParent !== null && b.scrollWidth > b.clientWidth)
    .map(b => `${b.textContent} (${b.scrollWidth} > ${b.clientWidth})`)"""
WRAPPED_ROWS = """panel => [...panel.querySelectorAll('.nbq-job, .nbq-children, .nbq-runs')]
    .filter(r => r.offsetParent !== null && r.getBoundingClientRect().height > 40)
    .map(r => r.textContent.trim().slice(0, 60))"""
BAR_LEFTS = """panel => [...panel.querySelectorAll('.nbq-job .nbq-col-bar')]
    .filter(b => b.offsetParent !== null).map(b => Math.round(b.getBoundingClientRect().left))"""
BUSY_LABEL = """b => b.classList.contains('mod-active')
    && getComputedStyle(b, '::after').content.includes('approving')"""


def test_the_panel_at_laptop_width(lab, browser, tmp_path):
    import nbformat

    name = f"laptop-{uuid.uuid4().hex[:8]}.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in LAPTOP_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, lab["root"] / name)
    release = lab["root"] / "release-kernel"
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def shot(locator, file: str) -> None:
        locator.screenshot(path=str(tmp_path / file))  # saved with the test's files
        if os.environ.get("NBQUEUE_UPDATE_SCREENSHOT"):  # refresh the one in docs/
            shutil.copyfile(tmp_path / file, REPO / "docs" / file)

    try:
        page.goto(f"{lab['base']}/lab/workspaces/{uuid.uuid4().hex}/tree/{name}"
                  f"?reset&token={lab['token']}")
        tab = page.locator("li.lm-TabBar-tab.lm-mod-current", has_text=name)
        tab.wait_for(timeout=120_000)
        notebook = page.locator(f"[id='{tab.get_attribute('data-id')}']")
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        assert page.locator("#filebrowser").is_visible()  # the laptop's usual layout
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

        panel = notebook.locator(".nbq-panel").last
        card = panel.locator(".nbq-review-card:visible")
        approve = card.locator("button.nbq-approve")
        approve.wait_for(timeout=180_000)
        card.locator("table").first.wait_for(timeout=60_000)  # the report's table, in the card
        running = panel.locator(".nbq-job:visible", has_text="train")
        running.locator(".nbq-state", has_text="running").wait_for(timeout=120_000)
        panel.locator(".nbq-job:visible", has_text="download").locator(
            ".nbq-state", has_text="done").wait_for(timeout=120_000)
        panel.locator(".nbq-runs:visible", has_text="1 earlier run").wait_for(timeout=60_000)
        panel.scroll_into_view_if_needed()

        assert panel.evaluate(TRUNCATED_BUTTONS) == []
        assert panel.evaluate(WRAPPED_ROWS) == []
        assert panel.evaluate("p => p.scrollWidth <= p.clientWidth")  # no sideways scrolling
        lefts = panel.evaluate(BAR_LEFTS)
        assert len(lefts) >= 5 and len(set(lefts)) == 1, lefts  # one column, row after row
        text = panel.inner_text()
        assert "needs train" in text and "needs job" not in text
        assert "2 attempts" in text
        title = card.locator(".nbq-card-title")
        assert title.evaluate("t => t.getBoundingClientRect().height") < 30  # id on its line
        shot(card, "review-card.png")

        # the kernel is busy (the last cell waits for a file): the click shows at once
        page.wait_for_function("""() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
                                  .some(e => e.textContent.trim().endsWith('| Busy'))""")
        approve.click()
        page.wait_for_function(BUSY_LABEL, arg=approve.element_handle(), timeout=5_000)
        assert card.locator("button.nbq-reject").is_disabled()
        card.screenshot(path=str(tmp_path / "approving.png"))  # saved with the test's files
        with opened(lab["root"] / "q-laptop") as q:
            gate, = q.jobs(name="Review report")
            assert gate.state == "review"  # the kernel has not handled the click yet
            release.touch()
            wait_for(lambda: gate.state == "done", timeout=120, interval=0.1,
                     message="the click to be handled once the kernel is idle")
        card.wait_for(state="hidden", timeout=60_000)
        page.wait_for_function(KERNEL_IDLE, timeout=60_000)

        # the detail view of a job that ran twice: each attempt's output, under its row
        row = panel.locator(".nbq-job:visible", has_text="download")
        details = row.locator("button.nbq-details")
        details.click()
        detail = panel.locator(".nbq-detail:visible")
        detail.wait_for(timeout=60_000)
        # the kernel handled the click, then released the button: it reads "hide" now
        page.wait_for_function("b => !b.classList.contains('mod-active') && "
                               "b.textContent.trim() === 'hide'", arg=details.element_handle(),
                               timeout=30_000)
        assert "attempt 2: attempt 1 failed with ConnectionError" in detail.inner_text()
        assert "the server hung up" in detail.inner_text()
        assert "nbqueue/runtime.py" not in detail.inner_text()
        assert panel.evaluate(TRUNCATED_BUTTONS) == []
        assert panel.evaluate(WRAPPED_ROWS) == []
        lefts = panel.evaluate(BAR_LEFTS)
        assert len(set(lefts)) == 1, lefts  # the row whose details are open too
        page.screenshot(path=str(tmp_path / "page.png"))  # the whole window, 1280 x 800
        page.set_viewport_size({"width": 1280, "height": 1400})  # as wide, tall enough
        panel.scroll_into_view_if_needed()
        shot(panel, "panel.png")
        assert not errors, errors
    except BaseException:  # pytest.fail too
        page.screenshot(path=str(tmp_path / "failure.png"))
        print(lab["log"].read_text()[-4000:])
        raise
    finally:
        release.touch()
        context.close()
        with contextlib.suppress(Exception):  # its kernel hands train back and stops
            api(lab, f"/api/sessions/{session_of(lab, name)['id']}", method="DELETE")
