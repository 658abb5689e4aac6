"""The panel's rows: a job, the summary of a parent's children (or of a job's earlier
runs), a resource. Their columns and buttons are laid out by the panel's stylesheet
(``style``).

Rows are pooled: made once, then shown with new values or hidden.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from .. import job as J
from ..details import clock, note_with_names
from ..display import (
    bar_value,
    capacity_text,
    children_html,
    count_badges,
    elapsed_text,
    progress_text,
    state_badge,
    tree_indent,
)
from ..handle import Job
from .base import ActionButton, set_traits, show
from .tree import ChildrenLine, RunsLine

if TYPE_CHECKING:
    from ..recurrence import ScheduleRecord
    from .panel import QueuePanel


class JobRow(W.HBox):
    """One job: name and id (indented under its parent), state, why it waits (needed jobs
    by name) or which attempt runs and why, progress, elapsed, resources; details,
    cancel and retry."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.job_id: str | None = None
        self.depth = 0
        self._name = _cell("nbq-col-name")
        self._state = _cell("nbq-col-state")
        self._reason = _cell("nbq-col-note")
        self._bar = W.FloatProgress(min=0.0, max=1.0)
        self._bar.add_class("nbq-col-bar")
        self._elapsed = _cell("nbq-col-elapsed")
        self._details = ActionButton("details", "nbq-details", tooltip="show everything "
                                     "about this job below it: attempts, output, error, result")
        self._cancel = ActionButton("cancel", "nbq-cancel")
        self._retry = ActionButton("retry", "nbq-retry")
        self._details.on_press(self._on_details)
        self._cancel.on_press(self._on_cancel)
        self._retry.on_press(self._on_retry)
        super().__init__([self._name, self._state, self._reason, self._bar, self._elapsed,
                          self._details, self._cancel, self._retry])
        self.add_class("nbq-job")

    def show(self, record: J.JobRecord, depth: int = 0, names: Mapping[str, str] | None = None,
             *, open_details: bool = False) -> None:
        self.job_id, self.depth = record.id, depth
        # both leave the classes as they are (no message) when nothing changes
        (self.add_class if depth > 0 else self.remove_class)("nbq-child")
        set_traits(self._name, value=name_html(record, depth))
        set_traits(self._state, value=state_badge(record.state))
        set_traits(self._reason, value=note_html(record, names or {}))
        value, style = bar_value(record)
        set_traits(self._bar, value=value, bar_style=style)
        set_traits(self._elapsed, value=html.escape(elapsed_text(record)))
        set_traits(self._details, description="hide" if open_details else "details")
        set_traits(self._cancel, disabled=record.state in J.ENDED)
        set_traits(self._retry, disabled=record.state not in (J.FAILED, J.CANCELLED)
                   or record.kind == J.GATE)
        show(self, True)

    def hide(self) -> None:
        self.job_id = None
        show(self, False)

    def _on_details(self, _button: W.Widget) -> None:
        if self.job_id is not None:
            self._panel._toggle_details(self.job_id)

    def _on_cancel(self, _button: W.Widget) -> None:
        if self.job_id is not None:
            job_id = self.job_id
            self._panel._act(lambda: Job(self._panel.queue, job_id).cancel())

    def _on_retry(self, _button: W.Widget) -> None:
        if self.job_id is not None:
            job_id = self.job_id
            self._panel._act(lambda: Job(self._panel.queue, job_id).retry())


def _cell(column: str) -> W.HTML:
    """A column of a row: its text is cut with an ellipsis rather than wrapped."""
    cell = W.HTML()
    cell.add_class("nbq-cell")
    cell.add_class(column)
    return cell


def name_html(record: J.JobRecord, depth: int = 0) -> str:
    """A job's name and id, indented ``depth`` levels (its tooltip has both whole).

    >>> "nbq-id" in name_html(J.JobRecord(id="a1.2", name="sq", state="ready"), 1)
    True
    """
    title = html.escape(f"{record.name} · job {record.id}", quote=True)
    return (f'<span title="{title}">{tree_indent(depth)}<b>{html.escape(record.name)}</b> '
            f'<span class="nbq-id">{html.escape(record.id)}</span></span>')


def note_html(record: J.JobRecord, names: Mapping[str, str]) -> str:
    """Beside the state: why the job waits (needed jobs by name), what ended it or, while
    it runs, its progress; for a job that ran again, which attempt and why; the resources
    it takes. The tooltip holds it whole.

    >>> r = J.JobRecord(id="b", name="fit", state="waiting", reason="needs job a1")
    >>> note_html(r, {"a1": "prep"}).count("needs prep")
    2
    >>> r = J.JobRecord(id="b", name="fit", state="running", attempt=2, why="it died")
    >>> "attempt 2</span> it died" in note_html(r, {})
    True
    """
    note = note_with_names(record, names)
    if not note and record.state == J.RUNNING and record.progress:
        note = progress_text(record.progress)
    chip = ""
    if record.attempt > 1 and record.why:
        label = f"attempt {record.attempt}" if record.state not in J.ENDED else \
            f"{record.attempt} attempts"
        chip = (f'<span class="nbq-attempt" title="{html.escape(record.why, quote=True)}">'
                f"{label}</span> ")
        if note == record.attempt_note:
            note = record.why  # the chip says which attempt
    resources = ", ".join(k if n == 1 else f"{k}={n}"
                          for k, n in record.options.resources.items())
    text = note + (f" · {resources}" if resources else "") if note else resources
    title = " — ".join(t for t in (record.attempt_note if chip else "", text) if t)
    return (f'<span title="{html.escape(title, quote=True)}">{chip}{html.escape(text)}</span>'
            if chip or text else "")


class ChildrenRow(W.HBox):
    """The summary of a parent's children, or of a job's earlier runs, by state, with an
    expand / collapse toggle and, when expanded over several pages, buttons to page
    through them."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.parent_id: str | None = None  # whose children, or whose earlier runs
        self.key: str | None = None  # its key among the panel's expanded lines
        self.depth = 0
        self.expanded = False
        self._page = 0
        self._summary = _cell("nbq-col-summary")
        self._toggle = ActionButton("expand", "nbq-expand")
        self._newer = ActionButton("newer", "nbq-children-newer")
        self._older = ActionButton("older", "nbq-children-older")
        self._toggle.on_press(self._on_toggle)
        self._newer.on_press(lambda _b: self._turn(-1))
        self._older.on_press(lambda _b: self._turn(1))
        super().__init__([self._summary, self._toggle, self._newer, self._older])

    def show(self, line: ChildrenLine | RunsLine) -> None:
        runs = isinstance(line, RunsLine)
        self.parent_id = line.head if isinstance(line, RunsLine) else line.parent
        self.key = line.key if isinstance(line, RunsLine) else line.parent
        self.depth, self._page, self.expanded = line.depth, line.page, line.expanded
        (self.add_class if runs else self.remove_class)("nbq-runs")
        (self.remove_class if runs else self.add_class)("nbq-children")
        make = runs_html if runs else children_html
        set_traits(self._summary, value=make(line.counts, depth=line.depth, first=line.first,
                                             shown=line.shown, expanded=line.expanded))
        set_traits(self._toggle, description="collapse" if line.expanded else "expand")
        paged = line.expanded and line.pages > 1
        show(self._newer, paged)
        show(self._older, paged)
        set_traits(self._newer, disabled=line.page == 0)
        set_traits(self._older, disabled=line.page >= line.pages - 1)
        show(self, True)

    def hide(self) -> None:
        self.parent_id = self.key = None
        show(self, False)

    def _on_toggle(self, _button: W.Widget) -> None:
        if self.key is not None:
            self._panel._expand(self.key, None if self.expanded else 0)

    def _turn(self, step: int) -> None:
        if self.key is not None:
            self._panel._expand(self.key, max(self._page + step, 0))


def runs_html(counts: dict[str, int], *, depth: int, first: int = 0, shown: int = 0,
              expanded: bool = False) -> str:
    """The line over a job's earlier runs: how many, in which states, which follow.

    >>> text = runs_html({"failed": 2, "cancelled": 1}, depth=1)
    >>> "3 earlier runs" in text and "nbq-failed" in text
    True
    """
    total = sum(counts.values())
    which = f" &middot; {first}&ndash;{first + shown - 1} shown" if expanded and shown else ""
    noun = "earlier run" if total == 1 else "earlier runs"
    title = html.escape(f"{total} {noun} of this job (same name), folded: "
                        + ", ".join(f"{n} {s}" for s, n in counts.items()), quote=True)
    return (f'<span class="nbq-runs-summary" title="{title}">{tree_indent(depth)}'
            f"<i>{total} {noun}</i> {count_badges(counts)}"
            + (f'<small style="color:#777">{which}</small>' if which else "") + "</span>")


class SwitchRow(W.HBox):
    """A line of text and a switch (a toggle button) that changes what it shows in the
    queue: pressed means ``on``. ``_flip(key, value)`` makes the change."""

    KIND = ""  # the row's CSS class
    SWITCH = ""  # the switch's
    LABELS = ("off", "on")
    STYLES = ("warning", "success")

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.key: str | None = None
        self._on: bool | None = None
        self._info = _cell("nbq-col-resource")
        self._toggle = W.ToggleButton(description=self.LABELS[1])
        self._toggle.add_class(self.SWITCH)
        self._toggle.add_class("nbq-switch")
        self._toggle.observe(self._on_toggle, names="value")
        super().__init__([self._info, self._toggle])
        self.add_class(self.KIND)

    def _show(self, key: str, text: str, on: bool) -> None:
        self.key = key
        set_traits(self._info, value=text)
        self._on = on
        set_traits(self._toggle, value=on, description=self.LABELS[on],
                   button_style=self.STYLES[on])
        show(self, True)

    def hide(self) -> None:
        self.key = None
        show(self, False)

    def _on_toggle(self, change: dict[str, Any]) -> None:
        # a change made by _show() repeats what the store says: nothing to do
        if self.key is None or change["new"] == self._on:
            return
        key, on = self.key, bool(change["new"])
        self._panel._act(lambda: self._flip(key, on))

    def _flip(self, key: str, on: bool) -> None:
        raise NotImplementedError


class ResourceRow(SwitchRow):
    """One resource: capacity, holders, waiting jobs, and an availability switch."""

    KIND = "nbq-resource"
    SWITCH = "nbq-available"
    LABELS = ("unavailable", "available")

    def show(self, name: str, info: dict[str, Any], names: dict[str, str]) -> None:
        holders = ", ".join(
            f"{names.get(h['job'], h['job'])}" + (f" ({h['units']})" if h["units"] != 1 else "")
            for h in info.get("holders", []))
        rate = f"; rate {info['rate']}" if info.get("rate") else ""
        if info.get("next_start"):
            rate += f", next start {clock(info['next_start'])}"
        text = (f"<b>{html.escape(name)}</b> {capacity_text(info['capacity'])}{rate}; "
                f"held by {html.escape(holders) if holders else 'nobody'}"
                + (f"; {info['waiting']} waiting" if info.get("waiting") else ""))
        self._show(name, text, bool(info["available"]))

    def _flip(self, key: str, on: bool) -> None:
        self._panel.queue.set_resource(key, available=on)


class ScheduleRow(SwitchRow):
    """One schedule: when it fires, its next firing, its last job; a switch pauses it."""

    KIND = "nbq-schedule"
    SWITCH = "nbq-firing"
    LABELS = ("paused", "firing")

    def show(self, record: ScheduleRecord, last_state: str | None) -> None:
        following = "paused" if record.paused else f"next {clock(record.next)}"
        last = (f"; last job {record.last_job} {last_state or 'forgotten'}"
                if record.last_job else "")
        note = f' <small style="color:#777">{html.escape(record.note)}</small>' \
            if record.note else ""
        self._show(record.name, f"<b>{html.escape(record.name)}</b> "
                   f"{html.escape(record.when)}: {following}{last}{note}", not record.paused)

    def _flip(self, key: str, on: bool) -> None:
        schedule = self._panel.queue.schedule_of(key)
        schedule.resume() if on else schedule.pause()
