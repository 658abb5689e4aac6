"""The panel and the cell status line, without a browser: ``Button.click()``, trait values,
and a real refresher thread that notices changes made by another process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("ipywidgets")

import ipywidgets as W  # noqa: E402
import jobs  # noqa: E402
from conftest import run_python, wait_for  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.widgets import CellStatus, QueuePanel  # noqa: E402


def visible(widget: W.Widget, cls: str) -> list[W.Widget]:
    """The widgets with CSS class ``cls`` under ``widget`` that are not hidden."""
    if getattr(widget, "layout", None) is not None and widget.layout.display == "none":
        return []
    found = [widget] if cls in getattr(widget, "_dom_classes", ()) else []
    for child in getattr(widget, "children", ()):
        found += visible(child, cls)
    return found


def html_of(widget: W.Widget) -> str:
    """All HTML values under a widget, joined."""
    if getattr(widget, "layout", None) is not None and widget.layout.display == "none":
        return ""
    text = widget.value if isinstance(widget, W.HTML) else ""
    return text + "".join(html_of(c) for c in getattr(widget, "children", ()))


@pytest.fixture
def panel_of() -> Iterator:
    panels: list[QueuePanel] = []

    def make(q: nbqueue.Queue, **kwargs) -> QueuePanel:
        panel = QueuePanel(q, **kwargs)
        panels.append(panel)
        return panel

    yield make
    for panel in panels:
        panel.close()


class Figure:
    """A payload with an HTML and a PNG form."""

    def _repr_html_(self) -> str:
        return "<p class='fig'>the Q3 figure</p>"

    def _repr_png_(self) -> bytes:
        return b"\x89PNG\r\n\x1a\nnot-really"


def test_panel_shows_counts_jobs_and_results(queue, panel_of):
    queue.submit(jobs.add, 1, 2, name="adder").result(timeout=60)
    with pytest.raises(nbqueue.JobFailed):
        queue.submit(jobs.boom, "bad", name="boomer").result(timeout=60)
    panel = panel_of(queue)
    header = panel._header.value
    assert "nbq-done" in header and "nbq-failed" in header
    rows = visible(panel, "nbq-job")
    assert len(rows) == 2
    text = html_of(panel)
    assert "adder" in text and "boomer" in text
    # ended jobs: failed first, so it comes before done
    assert text.index("boomer") < text.index("adder")
    assert "dispatcher(s)" in header and "died" not in header


def test_approve_button_releases_the_gate(queue, panel_of):
    gate = queue.review("Approve the Q3 report", payload=Figure())
    publish = queue.submit(jobs.add, 40, 2, needs=[gate], name="publish")
    panel = panel_of(queue)
    card, = visible(panel, "nbq-review-card")
    assert "the Q3 figure" in html_of(card)
    comment, = visible(card, "nbq-comment")
    comment.value = "looks right"
    approve, = visible(card, "nbq-approve")
    assert approve.description == "Approve"
    approve.click()
    assert gate.state == "done"
    decision = gate.result()
    assert decision and decision.comment == "looks right"
    assert visible(panel, "nbq-review-card") == []  # re-read at once
    assert publish.result(timeout=60) == 42


def test_reject_button_cancels_dependents(queue, panel_of):
    gate = queue.review("Ship it?", payload="plain words")
    ship = queue.submit(jobs.noop, needs=[gate], name="ship")
    panel = panel_of(queue)
    card, = visible(panel, "nbq-review-card")
    assert "plain words" in html_of(card)
    reject, = visible(card, "nbq-reject")
    assert reject.description == "Reject"
    reject.click()
    assert gate.state == "rejected"
    assert ship.state == "cancelled"
    assert visible(panel, "nbq-review-card") == []


def test_image_payload_is_rendered(stopped_queue, panel_of):
    class Picture:
        def _repr_png_(self) -> bytes:
            return b"\x89PNG\r\n\x1a\n"

    stopped_queue.review("Look at this", payload=Picture())
    panel = panel_of(stopped_queue)
    card, = visible(panel, "nbq-review-card")
    assert "data:image/png;base64," in html_of(card)


def test_cancel_and_retry_buttons(queue, panel_of):
    job = queue.submit(jobs.add, 2, 3, after="in 2h", name="later")
    panel = panel_of(queue)
    row, = visible(panel, "nbq-job")
    cancel, = visible(row, "nbq-cancel")
    retry, = visible(row, "nbq-retry")
    assert retry.disabled and not cancel.disabled
    cancel.click()
    assert job.state == "cancelled"
    assert "nbq-cancelled" in html_of(row) and not retry.disabled and cancel.disabled
    retry.click()
    assert job.result(timeout=60) == 5


def test_a_refused_action_is_shown_not_raised(queue, panel_of):
    gate = queue.review("Decide")
    panel = panel_of(queue, interval=3600)  # no refresh between the two decisions
    card, = visible(panel, "nbq-review-card")
    approve, = visible(card, "nbq-approve")
    queue.approve(gate.id)  # decided elsewhere first
    approve.click()
    assert "only a gate in review" in panel._message.value
    assert gate.state == "done"


def test_availability_toggle(queue, panel_of):
    queue.set_resource("db", capacity=2)
    panel = panel_of(queue)
    row, = visible(panel, "nbq-resource")
    toggle, = visible(row, "nbq-available")
    assert toggle.value is True and "capacity 2" in html_of(row)
    toggle.value = False
    assert queue.resources()["db"]["available"] is False
    assert toggle.description == "unavailable"
    job = queue.submit(jobs.noop, resources=["db"], name="uses-db")
    wait_for(lambda: job.state == "waiting", message="the job to wait for db")
    toggle.value = True
    assert queue.resources()["db"]["available"] is True
    job.result(timeout=60)


def test_paging_puts_active_jobs_first(stopped_queue, panel_of):
    handles = stopped_queue.map(jobs.square, range(25), name="sq")
    for h in handles[:5]:
        h.cancel()
    panel = panel_of(stopped_queue, page_size=10)
    first = [r.job_id for r in panel._rows if r.job_id]
    assert first == [h.id for h in handles[5:15]]  # ready ones, oldest first
    assert "page 1 of 3" in panel._page_label.value
    panel._next.click()
    panel._next.click()
    last = [r.job_id for r in panel._rows if r.job_id]
    assert last == [h.id for h in reversed(handles[:5])]  # cancelled, newest first
    assert len(visible(panel, "nbq-job")) == 5
    assert "no dispatcher serves this queue" in panel._header.value


def test_a_change_by_another_process_shows_up(queue, panel_of):
    gate = queue.review("Remote decision")
    panel = panel_of(queue)
    assert len(visible(panel, "nbq-review-card")) == 1
    run_python(f"""
        import nbqueue
        q = nbqueue.Queue({str(queue.path)!r}, start=False)
        q.approve({gate.id!r}, comment="from the CLI")
    """)
    wait_for(lambda: not visible(panel, "nbq-review-card"), timeout=60,
             message="the panel to drop the approved review")
    wait_for(lambda: "nbq-done" in panel._header.value, timeout=60,
             message="the counts to show the gate done")
    assert gate.result().comment == "from the CLI"


def test_close_stops_the_refresher(queue):
    panel = QueuePanel(queue)
    assert panel._refresher.alive
    panel.close()
    assert not panel._refresher.alive


def test_cell_status_follows_a_job_to_its_result(queue):
    from nbqueue.cells import run_cell

    job = queue.submit(run_cell, "print('hello')\ny = 2 * x", {"x": 21}, ["y"], label="dbl")
    status = CellStatus(job)
    try:
        wait_for(lambda: status.final, timeout=60, message="the status to end")
        text = html_of(status)
        assert "nbq-done" in text and "<td>y</td>" in text and "42" in text
        assert "hello" in text  # the job's output
        assert status._bar.value == 1.0 and status._bar.bar_style == "success"
    finally:
        status._refresher.stop()


def test_cell_status_shows_the_remote_traceback(queue):
    job = queue.submit(jobs.boom, "kaput")
    status = CellStatus(job)
    try:
        wait_for(lambda: status.final, timeout=60, message="the status to end")
        text = html_of(status)
        assert "nbq-traceback" in text and "ValueError: kaput" in text
        assert status._bar.bar_style == "danger"
    finally:
        status._refresher.stop()


def test_panel_says_when_the_dispatcher_died(queue, panel_of):
    from nbqueue import job as J
    from nbqueue.store.transitions import new_id

    queue.store.submit_many([J.NewJob(id=new_id(), name="corrupt", options=J.Options())])
    queue.dispatcher.wake()
    wait_for(lambda: not queue.dispatcher.alive, message="the dispatcher to die")
    panel = panel_of(queue)
    assert "died" in panel._header.value and "Error" in panel._header.value
