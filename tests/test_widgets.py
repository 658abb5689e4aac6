"""The panel without a browser: ``Button.click()``, trait values, and a real refresher
thread that notices changes made by another process. (A cell's status outputs, which are
no widgets, are tested in ``test_cellstatus.py``.)"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

pytest.importorskip("ipywidgets")

import ipywidgets as W  # noqa: E402
import jobs  # noqa: E402
from conftest import run_python, wait_for  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.details import clock  # noqa: E402
from nbqueue.display import state_badge  # noqa: E402
from nbqueue.widgets import QueuePanel  # noqa: E402
from nbqueue.widgets.tree import TreeLimits  # noqa: E402


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


def tree_lines(panel: QueuePanel) -> list[tuple[str, str, int]]:
    """The job section's visible lines, in order: ("job", id, depth) for a job's row,
    ("children", parent id, depth) for the summary of a parent's children, ("runs", id,
    depth) for the summary of a job's earlier runs."""
    out = []
    for widget in panel._jobs.children:
        if widget.layout.display == "none":
            continue
        if "nbq-job" in widget._dom_classes:
            out.append(("job", widget.job_id, widget.depth))
        elif "nbq-children" in widget._dom_classes:
            out.append(("children", widget.parent_id, widget.depth))
        elif "nbq-runs" in widget._dom_classes:
            out.append(("runs", widget.parent_id, widget.depth))
    return out


def count_badges(counts: dict[str, int]) -> list[str]:
    """The badges a summary line shows for these counts."""
    return [f"{state_badge(s)}&nbsp;{n}" for s, n in counts.items() if n]


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
    # ended jobs: newest end first, so the failed one (it ended last) comes first
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


def test_schedules_show_their_next_firing_and_a_pause_switch(stopped_queue, panel_of):
    q = stopped_queue
    panel = panel_of(q)
    assert visible(panel, "nbq-schedule") == []  # no schedules: no section
    s = q.schedule(jobs.noop, cron="0 9 * * mon-fri", tz="Europe/Berlin", name="report")
    q.schedule(jobs.noop, every="10m", after="now", name="poll", overlap=True)
    q._store.fire_schedules(time.time() + 1)
    panel.refresh()
    poll, report = visible(panel, "nbq-schedule")  # by name
    assert "report" in html_of(report) and "Europe/Berlin" in html_of(report)
    assert clock(s.next) in html_of(report) and "next" in html_of(report)
    job = q.schedule_of("poll").jobs()[0]
    assert f"last job {job.id} ready" in html_of(poll) and "every 10m" in html_of(poll)
    switch, = visible(report, "nbq-firing")
    assert switch.value is True and switch.description == "firing"
    switch.value = False
    assert s.paused and switch.description == "paused" and "paused" in html_of(report)
    switch.value = True
    assert not s.paused and s.next is not None


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


def test_panel_says_when_the_dispatcher_died(queue, panel_of):
    from nbqueue import job as J
    from nbqueue.store.ids import new_id

    queue._store.submit_many([J.NewJob(id=new_id(), name="corrupt", options=J.Options())])
    queue.dispatcher.wake()
    wait_for(lambda: not queue.dispatcher.alive, message="the dispatcher to die")
    panel = panel_of(queue)
    assert "died" in panel._header.value and "Error" in panel._header.value


# -- the job tree -------------------------------------------------------------------------------


def test_fan_out_children_sit_under_their_parent(queue, panel_of):
    parent = queue.submit(jobs.fan_out, 25, name="fan")
    assert parent.result(timeout=60) == sum(i * i for i in range(25))
    kids = parent.children
    assert len(kids) == 25
    panel = panel_of(queue, interval=3600)
    # only the parent is a top-level job: one page, one top-level row, no child rows while
    # collapsed (none of its children is active)
    assert "page 1 of 1" in panel._page_label.value
    assert tree_lines(panel) == [("job", parent.id, 0), ("children", parent.id, 1)]
    summary, = visible(panel, "nbq-children")
    text = html_of(summary)
    assert "25 children" in text and all(b in text for b in count_badges({"done": 25}))
    assert visible(panel, "nbq-child") == []

    expand, = visible(summary, "nbq-expand")
    expand.click()
    assert expand.description == "collapse"
    newest_first = [k.id for k in reversed(kids)]  # ended children: newest first
    lines = tree_lines(panel)
    assert lines[:2] == [("job", parent.id, 0), ("children", parent.id, 1)]
    assert lines[2:] == [("job", k, 1) for k in newest_first[:10]]
    assert all("&#x2514;" in html_of(r) for r in visible(panel, "nbq-child"))
    assert "1&ndash;10 shown" in html_of(summary)
    older, = visible(summary, "nbq-children-older")
    older.click()
    older.click()
    assert [line[1] for line in tree_lines(panel)[2:]] == newest_first[20:]
    assert "21&ndash;25 shown" in html_of(summary) and older.disabled

    panel.tree = TreeLimits(lines=4)  # the lines under top-level jobs are bounded
    panel._expand(parent.id, 0)
    assert [line[1] for line in tree_lines(panel)[2:]] == newest_first[:4]

    expand.click()
    assert tree_lines(panel) == [("job", parent.id, 0), ("children", parent.id, 1)]
    assert len(panel._rows) <= panel.page_size + panel.tree.lines + 10  # a pool, reused


def test_active_children_show_under_a_collapsed_parent(queue, panel_of, tmp_path):
    flag = tmp_path / "flag"
    parent = queue.submit(jobs.waits_on, str(flag), 6, name="waiter")
    other = queue.submit(jobs.add, 1, 1, name="other")
    assert other.result(timeout=60) == 2
    panel = panel_of(queue, interval=3600)

    def shows_the_store() -> bool:
        panel.refresh()
        kids = parent.children
        states = Counter(k.state for k in kids)
        if len(kids) != 6 or not states["running"]:
            return False
        active = ([k.id for k in kids if k.state == "running"]
                  + [k.id for k in kids if k.state == "ready"])[:3]
        blocks = visible(panel, "nbq-children")
        if not blocks:  # the panel was refreshed before the parent's children existed
            return False
        summary = html_of(blocks[0])
        return (tree_lines(panel) == [("job", parent.id, 0), ("children", parent.id, 1)]
                + [("job", k, 1) for k in active] + [("job", other.id, 0)]
                and all(b in summary for b in count_badges(states)) and "6 children" in summary)

    # the children block on the flag: their states settle, and the panel must match them
    wait_for(shows_the_store, message="the panel to show the active children")
    flag.touch()
    assert parent.result(timeout=60) == list(range(6))
    panel.refresh()
    # both ended: newest end first (the parent ended last)
    assert tree_lines(panel) == [("job", parent.id, 0), ("children", parent.id, 1),
                                 ("job", other.id, 0)]
    assert all(b in html_of(panel) for b in count_badges({"done": 6}))


def test_grandchildren_sit_under_their_parent(queue, panel_of, tmp_path):
    flag = tmp_path / "flag"
    top = queue.submit(jobs.waits_below, str(flag), name="below")
    wait_for(lambda: len(top.children) == 1 and len(top.children[0].children) == 2,
             message="the grandchildren to exist")
    child = top.children[0]
    grandchildren = {g.id for g in child.children}
    panel = panel_of(queue, interval=3600)
    panel._expand(top.id, 0)
    lines = tree_lines(panel)
    assert lines[:4] == [("job", top.id, 0), ("children", top.id, 1), ("job", child.id, 1),
                         ("children", child.id, 2)]
    # both grandchildren are running or ready (active): shown under their own parent
    assert {line[1] for line in lines[4:]} == grandchildren
    assert all(line[0] == "job" and line[2] == 2 for line in lines[4:])
    flag.touch()
    assert top.result(timeout=60) == [0, 1]


def test_spawned_children_sit_under_their_parent(queue, panel_of):
    parent = queue.submit(jobs.spawner, 3, name="spawner")
    ids = parent.result(timeout=60)
    assert [k.id for k in parent.children] == ids
    assert [k.result(timeout=60) for k in parent.children] == [0, 1, 4]
    panel = panel_of(queue, interval=3600)
    summary, = visible(panel, "nbq-children")
    assert "3 children" in html_of(summary)
    assert all(b in html_of(summary) for b in count_badges({"done": 3}))
    visible(summary, "nbq-expand")[0].click()
    assert tree_lines(panel) == [("job", parent.id, 0), ("children", parent.id, 1)] + [
        ("job", k, 1) for k in reversed(ids)]
    row = next(r for r in visible(panel, "nbq-child") if r.job_id == ids[0])
    assert "nbq-done" in html_of(row)


# -- laptop width: order, filter, earlier runs, names, attempts, details ------------------------


def row_of(panel: QueuePanel, job_id: str) -> W.Widget:
    row, = [r for r in visible(panel, "nbq-job") if r.job_id == job_id]
    return row


def listed(panel: QueuePanel) -> list[str]:
    """The ids of the top-level job rows, in order."""
    return [line[1] for line in tree_lines(panel) if line[0] == "job" and line[2] == 0]


def test_ended_jobs_come_newest_end_first_after_the_active_ones(stopped_queue, panel_of):
    q = stopped_queue
    a, b, c, d = (q.submit(jobs.add, i, i, after="in 2h", name=n)
                  for i, n in enumerate("abcd"))
    for h in (c, a, b):  # b is cancelled last: it comes first of the ended jobs
        h.cancel()
    gate = q.review("Decide")
    q.reject(gate.id)
    panel = panel_of(q, interval=3600)
    assert listed(panel) == [d.id, gate.id, b.id, a.id, c.id]
    assert "(5 listed)" in panel._jobs_title.value


def test_filter_by_state_and_by_name(stopped_queue, panel_of):
    q = stopped_queue
    squares = q.map(jobs.square, range(4), name="square")
    cubes = q.map(jobs.square, range(10, 13), name="cube")
    squares[1].cancel()
    panel = panel_of(q, interval=3600, page_size=3)
    assert "page 1 of 3" in panel._page_label.value
    panel._state_filter.value = "cancelled"  # as the dropdown does in the browser
    assert listed(panel) == [squares[1].id] and "(1 match)" in panel._jobs_title.value
    panel._state_filter.value = ""
    panel._name_filter.value = "cu"
    assert listed(panel) == [h.id for h in cubes] and "page 1 of 1" in panel._page_label.value
    panel._name_filter.value = "sq"
    panel._state_filter.value = "active"
    assert listed(panel) == [squares[0].id, squares[2].id, squares[3].id]
    panel.set_filter()
    assert panel._name_filter.value == "" and len(listed(panel)) == 3  # a page of 7


def fail_cell(q: nbqueue.Queue, key: str, source: str = "x = 1 / 0") -> nbqueue.Job:
    """A job as ``%%enqueue fit`` makes it: ``run_cell``, named fit, keyed ``cell:...``."""
    from nbqueue.cellrun import run_cell

    return q.submit(run_cell, source, {}, ["x"], label="fit", name="fit", key=key)


def test_earlier_runs_of_a_cell_fold_under_the_newest(queue, panel_of):
    first = fail_cell(queue, "cell:1")
    first.wait(timeout=60)
    second = fail_cell(queue, "cell:2")  # the cell run again: a new job of the same name
    second.wait(timeout=60)
    newest = fail_cell(queue, "cell:3", "x = 42")
    assert newest.result(timeout=60) == {"x": 42}
    other = queue.submit(jobs.add, 1, 2, name="fit")  # not a cell: never folded
    other.result(timeout=60)
    old_gate = queue.review("Check fit", key="g1")
    queue.reject(old_gate.id, comment="no")
    new_gate = queue.review("Check fit", key="g2")
    panel = panel_of(queue, interval=3600)
    lines = tree_lines(panel)
    assert listed(panel) == [new_gate.id, other.id, newest.id]
    assert ("runs", new_gate.id, 1) in lines and ("runs", newest.id, 1) in lines
    runs, = [r for r in visible(panel, "nbq-runs") if r.parent_id == newest.id]
    assert "2 earlier runs" in html_of(runs)
    assert all(b in html_of(runs) for b in count_badges({"failed": 2}))
    assert "(3 listed)" in panel._jobs_title.value
    visible(runs, "nbq-expand")[0].click()
    lines = tree_lines(panel)
    at = lines.index(("runs", newest.id, 1))
    assert lines[at + 1:at + 3] == [("job", second.id, 1), ("job", first.id, 1)]
    gate_runs, = [r for r in visible(panel, "nbq-runs") if r.parent_id == new_gate.id]
    assert "1 earlier run" in html_of(gate_runs) and "nbq-rejected" in html_of(gate_runs)
    panel.set_filter(name="fit")  # a filter by name folds them the same way
    assert listed(panel) == [other.id, newest.id] and "(2 match)" in panel._jobs_title.value
    panel.set_filter(state="failed")  # one state: every job in it, earlier runs included
    assert listed(panel) == [second.id, first.id]


def test_a_job_that_ran_again_says_which_attempt_and_why(queue, panel_of, tmp_path):
    h = queue.submit(jobs.flaky, str(tmp_path / "count"), 1, retries=1, retry_delay=0.1,
                     name="flaky")
    assert h.result(timeout=60) == 2
    panel = panel_of(queue, interval=3600)
    note = row_of(panel, h.id)._reason.value
    assert '<span class="nbq-attempt" title="attempt 1 failed with RuntimeError">2 attempts' \
        in note


def test_needs_are_shown_by_name(stopped_queue, panel_of):
    prep = stopped_queue.submit(jobs.add, 1, 1, after="in 2h", name="prep")
    fit = stopped_queue.submit(jobs.add, 2, 2, needs=[prep], name="fit")
    assert fit.reason == f"needs job {prep.id}"  # stored as it was: others parse it
    panel = panel_of(stopped_queue, interval=3600)
    note = row_of(panel, fit.id)._reason.value
    assert "needs prep" in note and prep.id not in note
    prep.cancel()
    panel.refresh()
    assert "needs prep, which ended cancelled" in row_of(panel, fit.id)._reason.value


def test_gates_read_as_what_they_are(stopped_queue, panel_of):
    rejected, approved = stopped_queue.review("No"), stopped_queue.review("Yes")
    stopped_queue.reject(rejected.id)
    stopped_queue.approve(approved.id)
    pending = stopped_queue.review("Review report " + "very " * 20 + "long title")
    panel = panel_of(stopped_queue, interval=3600)
    bar = row_of(panel, rejected.id)._bar
    assert (bar.value, bar.bar_style) == (1.0, "danger")  # red, not green
    bar = row_of(panel, approved.id)._bar
    assert (bar.value, bar.bar_style) == (1.0, "success")
    row = row_of(panel, pending.id)
    assert row._reason.value == "" and "nbq-review" in row._state.value  # no "review review"
    card, = visible(panel, "nbq-review-card")
    title = card._title.value
    assert 'class="nbq-card-title"' in title and f'<span class="nbq-id">{pending.id}</span>' in title


def test_details_show_each_attempt_the_traceback_and_the_result(queue, panel_of, tmp_path):
    bad = queue.submit(jobs.flaky_loud, str(tmp_path / "count"), 5, retries=1,
                       retry_delay=0.1, name="bad")
    with pytest.raises(nbqueue.JobFailed):
        bad.result(timeout=60)
    good = queue.submit(jobs.chatty, 2, name="good")
    assert good.result(timeout=60) == 2
    panel = panel_of(queue, interval=3600)
    assert visible(panel, "nbq-detail") == []
    details, = visible(row_of(panel, bad.id), "nbq-details")
    details.click()
    assert details.value is False  # released once the kernel has done it
    assert details.description == "hide"
    detail, = visible(panel, "nbq-detail")
    children = list(panel._jobs.children)
    assert children.index(detail) == children.index(row_of(panel, bad.id)) + 1  # under it
    text = html_of(detail)
    assert "attempt 1 · 1 line" in text and "run 1" in text
    assert "attempt 2: attempt 1 failed with RuntimeError · 1 line" in text and "run 2" in text
    assert "<b>call</b></td><td>flaky_loud(" in text
    assert "in flaky_loud" in text and "RuntimeError: failure 2" in text
    assert "nbqueue/runtime.py" not in text  # the traceback starts at the user's code

    visible(row_of(panel, good.id), "nbq-details")[0].click()  # one detail view at a time
    detail, = visible(panel, "nbq-detail")
    text = html_of(detail)
    assert "line 0" in text and "<b>result</b>" in text and "2" in text
    assert visible(row_of(panel, bad.id), "nbq-details")[0].description == "details"
    visible(row_of(panel, good.id), "nbq-details")[0].click()
    assert visible(panel, "nbq-detail") == []


def test_buttons_say_what_they_do_before_the_kernel_answers(stopped_queue, panel_of):
    from nbqueue.widgets.style import BUSY_LABELS

    stopped_queue.review("Decide")
    panel = panel_of(stopped_queue, interval=3600)
    style = panel._header.value
    card, = visible(panel, "nbq-review-card")
    for cls, label in (("nbq-approve", "approving…"), ("nbq-reject", "rejecting…")):
        button, = visible(card, cls)
        # a toggle button: the browser presses it at once (mod-active), without the kernel
        assert isinstance(button, W.ToggleButton) and "nbq-action" in button._dom_classes
        assert f'.nbq-panel .{cls}.mod-active::after {{ content: "{label}"; }}' in style
    assert {"nbq-cancel", "nbq-retry", "nbq-details"} <= set(BUSY_LABELS)
    row, = visible(panel, "nbq-job")
    assert all(isinstance(b, W.ToggleButton) for b in visible(row, "nbq-action"))


def test_a_long_list_is_counted_up_to_a_bound_and_paged_to_its_end(stopped_queue, panel_of):
    from nbqueue.store.listing import COUNT_BOUND

    handles = stopped_queue.map(jobs.square, range(COUNT_BOUND + 5), after="in 2h", name="sq")
    panel = panel_of(stopped_queue, interval=3600)
    # the count stops at its bound: no scan of every job to draw a page
    assert f"({COUNT_BOUND:,}+ listed)" in panel._jobs_title.value
    assert panel._page_label.value == f"page 1 of {COUNT_BOUND // 10}+"
    assert not panel._next.disabled
    panel.page = COUNT_BOUND // 10  # the page past the bound: counted to its end there
    panel.refresh()
    assert listed(panel) == [h.id for h in handles[COUNT_BOUND:]]
    assert panel._page_label.value == f"page {COUNT_BOUND // 10 + 1} of {COUNT_BOUND // 10 + 1}"
    assert panel._next.disabled


def test_a_chunked_map_is_one_row_with_its_counts_and_progress(queue, panel_of, tmp_path):
    there, gate = tmp_path / "there", tmp_path / "gate"
    there.touch()
    hs = queue.map(jobs.wait_for_file, [there] * 4 + [gate] * 6, range(10), chunksize=2,
                   name="waits")
    wait_for(lambda: (hs.map.progress or {}).get("items_done") == 4,
             message="the first four items to be done")
    panel = panel_of(queue)
    panel.refresh()
    assert tree_lines(panel) == [("job", hs.id, 0)]  # one row; its chunks are no lines
    (row,) = [r for r in panel._rows if r.job_id == hs.id]
    assert "4 of 10 items done (40%)" in row._reason.value
    assert row._bar.value == pytest.approx(0.4)
    assert row._state.value == state_badge("running")
    gate.touch()
    hs.map.wait(timeout=60)
    panel.refresh()
    assert "10 items done" in row._reason.value and row._bar.value == 1.0
    assert row._state.value == state_badge("done")
