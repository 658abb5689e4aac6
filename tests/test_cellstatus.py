"""A cell job's outputs (``nbqueue.cellstatus``) follow a real job on a real queue: the
bundles they publish, and that a refresher keeps them current. The outputs are recorded
by a ``publish`` function standing in for IPython's display (``test_notebooks.py`` checks
them in a real kernel, ``test_browser.py`` in JupyterLab)."""

from __future__ import annotations

import jobs
import pytest
from conftest import wait_for

from nbqueue.cellrun import run_cell
from nbqueue.notebook.cellstatus import CellStatus
from nbqueue.widgets.refresher import Refresher

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class Outputs:
    """The outputs of one cell as a front end keeps them: by display id, in order."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, str]] = {}
        self.updates = 0

    def __call__(self, data: dict[str, str], display_id: str, update: bool) -> None:
        assert update == (display_id in self.by_id), "an update of an output never shown"
        assert WIDGET_MIME not in data
        self.by_id[display_id] = data
        self.updates += update

    def status(self, status: CellStatus) -> dict[str, str]:
        return self.by_id[status.display_ids[0]]

    def result(self, status: CellStatus) -> dict[str, str]:
        return self.by_id[status.display_ids[1]]


@pytest.fixture
def refresher(queue):
    r = Refresher(queue.changes, interval=0.05)
    try:
        yield r
    finally:
        r.stop()


def test_the_outputs_follow_a_job_to_its_result(queue, refresher):
    outputs = Outputs()
    cell = "print('hello')\ny = 2 * x\n{'text/plain': 'ignored'} and y"
    job = queue.submit(run_cell, cell, {"x": 21}, ["y"], label="dbl", name="dbl")
    status = CellStatus(job, refresher=refresher, publish=outputs)
    assert list(outputs.by_id) == list(status.display_ids)  # both shown at once
    wait_for(lambda: status.final, timeout=60, message="the status to end")
    wait_for(lambda: "done" in outputs.status(status)["text/plain"], timeout=10,
             message="the published status to say done")
    shown = outputs.status(status)
    assert "nbq-done" in shown["text/html"] and ">y</td>" in shown["text/html"]
    assert "42" in shown["text/html"] and "hello" in shown["text/html"]  # table, its output
    plain = shown["text/plain"]
    assert plain.startswith(f"dbl (job {job.id}) done") and "y  int  42" in plain
    assert "hello" in plain
    assert outputs.result(status) == {"text/plain": "42"}  # the last expression's display
    assert outputs.updates >= 1


def test_the_outputs_show_the_remote_traceback(queue, refresher):
    outputs = Outputs()
    job = queue.submit(jobs.boom, "kaput")
    status = CellStatus(job, refresher=refresher, publish=outputs)
    wait_for(lambda: "failed" in outputs.status(status)["text/plain"], timeout=60,
             message="the status to say failed")
    shown = outputs.status(status)
    assert "nbq-traceback" in shown["text/html"] and "ValueError: kaput" in shown["text/html"]
    assert "ValueError: kaput" in shown["text/plain"]
    assert outputs.result(status) == {"text/plain": ""}


def test_an_unchanged_job_publishes_nothing_more_and_close_stops_following(queue, refresher):
    outputs = Outputs()
    job = queue.submit(jobs.add, 1, 2, after="in 2h")
    status = CellStatus(job, refresher=refresher, publish=outputs)
    assert "waiting" in outputs.status(status)["text/plain"]
    for _ in range(3):
        status.refresh()
    assert outputs.updates == 0
    status.close()
    job.cancel()
    queue.submit(jobs.add, 2, 3).result(timeout=60)  # the store moves on
    status._refresh(True)
    assert outputs.updates == 0 and "waiting" in outputs.status(status)["text/plain"]
