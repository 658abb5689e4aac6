"""One end-to-end test in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven
by Playwright, the review notebook run from the page, and Approve clicked on the panel.

Without /usr/bin/chromium (``apt-get install -y chromium``) or Playwright this module
skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
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
from conftest import wait_for

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
        shot = tmp_path / "panel.png"  # saved with the test's files
        queue_panel.screenshot(path=str(shot))
        assert shot.stat().st_size > 0
        if os.environ.get("NBQUEUE_UPDATE_SCREENSHOT"):  # refresh the one in docs/
            shutil.copyfile(shot, REPO / "docs" / "panel.png")

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
