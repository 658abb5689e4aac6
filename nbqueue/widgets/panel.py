"""The queue panel: counts, the job tree (paged, filtered, with a detail view per job),
resources, schedules, and pending reviews."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from .. import job as J
from ..details import needs_in
from ..display import count_badges
from ..errors import NbqueueError
from .base import ActionButton, set_traits, show
from .detail import JobDetail
from .refresher import Refresher
from .reviews import DEADLINE_TICK, ReviewCard, payload_html
from .rows import ChildrenRow, JobRow, ResourceRow, ScheduleRow
from .style import stylesheet
from .tree import STATE_CHOICES, JobFilter, JobLine, TreeLimits, plan_tree, top_page

if TYPE_CHECKING:
    from ..queue import Queue


class QueuePanel(W.VBox):
    """The live panel of a queue: counts per state, a switch that pauses the queue, the
    job tree with cancel and retry, resources with an availability switch, schedules with
    their next firing and a switch that pauses each, and each pending review with its
    payload and ``Approve`` / ``Reject`` buttons.

    Top-level jobs are paged: active ones first (in the order they run), then ended ones,
    newest end first; a filter keeps one state and names starting with some text. The
    earlier runs of a cell job or a gate are folded under the newest. Under a job that
    has children comes a summary of them by state and its first few active children
    (running, in review, ready); ``expand`` on the summary pages through all of them
    instead. ``details`` opens everything about a job under its row.

    Parameters
    ----------
    queue : Queue
        The queue to show.
    page_size : int
        Top-level job rows per page.
    sections : sequence of str
        Which parts to show: ``"jobs"``, ``"resources"``, ``"schedules"``, ``"reviews"``.
    interval : float
        Seconds between polls of the store for changes (by any process).
    """

    MAX_RESOURCES = 12
    MAX_SCHEDULES = 12
    MAX_REVIEWS = 5

    def __init__(self, queue: Queue, *, page_size: int = 10,
                 sections: Sequence[str] = ("jobs", "resources", "schedules", "reviews"),
                 interval: float = 0.5) -> None:
        self.queue = queue
        self.sections = tuple(sections)
        self.page_size = page_size
        self.page = 0
        self.tree = TreeLimits()
        self._expanded: dict[str, int] = {}
        self.filter = JobFilter()
        self._detail_id: str | None = None
        self._lock = threading.RLock()
        self._payloads: dict[str, str] = {}
        self._has_running = False
        self._rendered = 0.0
        self._header = W.HTML()
        self._message = W.HTML()
        # the queue's pause switch (pressed: the queue runs), and which names are paused
        self._running_switch = W.ToggleButton(value=True, description="queue running")
        self._running_switch.add_class("nbq-pause")
        self._running_switch.add_class("nbq-switch")
        self._running_switch.observe(self._on_pause_switch, names="value")
        self._paused_note = W.HTML()
        self._paused_note.add_class("nbq-cell")
        self._queue_paused: bool | None = None
        self._controls = W.HBox([self._running_switch, self._paused_note])
        self._controls.add_class("nbq-controls")
        # pools: rows are made when first needed (at most page_size + tree.lines of
        # each kind), then reused
        self._rows = [JobRow(self) for _ in range(page_size)]
        self._summaries: list[ChildrenRow] = []
        self._detail = JobDetail(self)
        self._detail.hide()
        self._prev = ActionButton("newer", "nbq-newer")
        self._next = ActionButton("older", "nbq-older")
        self._page_label = W.HTML()
        self._prev.on_press(lambda _b: self._turn(-1))
        self._next.on_press(lambda _b: self._turn(1))
        self._jobs_title = W.HTML("<b>jobs</b>")
        self._jobs_title.add_class("nbq-cell")
        self._state_filter = W.Dropdown(options=STATE_CHOICES, value="")
        self._state_filter.add_class("nbq-filter-state")
        self._name_filter = W.Text(placeholder="name starts with…")
        self._name_filter.add_class("nbq-filter-name")
        self._state_filter.observe(self._on_filter, names="value")
        self._name_filter.observe(self._on_filter, names="value")
        self._toolbar = W.HBox([self._jobs_title, self._state_filter, self._name_filter])
        self._toolbar.add_class("nbq-toolbar")
        self._pager = W.HBox([self._prev, self._page_label, self._next])
        self._pager.add_class("nbq-pager")
        self._jobs = W.VBox([self._toolbar, *self._rows, self._pager])
        self._resource_rows = [ResourceRow(self) for _ in range(self.MAX_RESOURCES)]
        self._resources_more = W.HTML()
        self._resources = W.VBox([W.HTML("<b>resources</b>"), *self._resource_rows,
                                  self._resources_more])
        self._schedule_rows = [ScheduleRow(self) for _ in range(self.MAX_SCHEDULES)]
        self._schedules_more = W.HTML()
        self._schedules = W.VBox([W.HTML("<b>schedules</b>"), *self._schedule_rows,
                                  self._schedules_more])
        self._cards = [ReviewCard(self) for _ in range(self.MAX_REVIEWS)]
        self._reviews_title = W.HTML("<b>reviews</b>")
        self._reviews_more = W.HTML()
        self._reviews = W.VBox([self._reviews_title, *self._cards, self._reviews_more])
        parts = {"jobs": self._jobs, "resources": self._resources,
                 "schedules": self._schedules, "reviews": self._reviews}
        super().__init__([self._header, self._controls, self._message]
                         + [parts[s] for s in self.sections])
        self.add_class("nbq-panel")
        self._refresher = Refresher(queue.changes, interval)
        self.refresh()
        self._refresher.add(self)

    def __repr__(self) -> str:
        counts = self.queue.counts()
        text = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs"
        return f"<nbqueue panel {self.queue.path}: {text}>"

    # -- rendering ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the store and update every part."""
        with self._lock:
            self._rendered = time.monotonic()
            counts = self.queue.counts()
            self._render_header(counts)
            if "jobs" in self.sections:
                self._render_jobs(counts)
            if "resources" in self.sections:
                self._render_resources()
            if "schedules" in self.sections:
                self._render_schedules()
            if "reviews" in self.sections:
                self._render_reviews(counts)

    def _refresh(self, changed: bool) -> bool:
        since = time.monotonic() - self._rendered
        if changed or (self._has_running and since >= 1.0) or (
                since >= DEADLINE_TICK and any(card.counts_down for card in self._cards)):
            self.refresh()
        return True

    def _render_header(self, counts: dict[str, int]) -> None:
        badges = count_badges(counts)
        alive = [d for d in self.queue.dispatchers() if d["alive"]]
        local = self.queue.dispatcher
        problems = ""
        if local is not None and local.error and not local.alive:
            problems = (f'<pre class="nbq-error" style="color:#c62828">the dispatcher thread of '
                        f"this kernel died: {html.escape(local.error)}</pre>")
        elif not alive:
            problems = ('<div class="nbq-warning" style="color:#e65100">no dispatcher serves '
                        "this queue: jobs wait until one starts (q.start() or "
                        "<code>nbqueue worker</code>)</div>")
        paused = self.queue.paused()
        self._queue_paused = paused["queue"]
        set_traits(self._running_switch, value=not paused["queue"],
                   description="queue paused" if paused["queue"] else "queue running",
                   button_style="warning" if paused["queue"] else "success",
                   tooltip="resume: let jobs start again" if paused["queue"] else
                   "pause: nothing new starts, running jobs finish")
        names = ", ".join(html.escape(n) for n in paused["names"])
        set_traits(self._paused_note, value=(
            "the queue is paused: nothing new starts, running jobs finish"
            if paused["queue"] else "") + (f"{'; ' if paused['queue'] else ''}"
                                           f"paused: jobs named {names}" if names else ""))
        workers = sum(int(d.get("workers") or 0) for d in alive)
        set_traits(self._header, value=(
            f'{stylesheet()}<div class="nbq-header"><b>nbqueue</b> '
            f'<code>{html.escape(str(self.queue.path))}'
            f"</code> &middot; {len(alive)} dispatcher(s), {workers} worker(s)"
            f'<div class="nbq-counts">{badges or "no jobs"}</div>{problems}</div>'))

    def _render_jobs(self, counts: dict[str, int]) -> None:
        tree = self.queue.tree()
        listed = top_page(tree, self.filter, self.page * self.page_size, self.page_size)
        pages = max((listed.total + self.page_size - 1) // self.page_size, 1)
        if self.page > pages - 1:  # the list got shorter: show its last page
            self.page = pages - 1
            listed = top_page(tree, self.filter, self.page * self.page_size, self.page_size)
        lines = plan_tree(tree, listed.records, self._expanded, self.tree)
        shown = [line.record for line in lines if isinstance(line, JobLine)]
        names = {r.id: r.name for r in shown}
        needed = {i for r in shown for i in needs_in(r.reason) if i not in names}
        names.update(tree.names_of(needed))
        widgets: list[W.Widget] = []
        jobs = summaries = 0
        self._has_running = False
        detail_shown = False
        for line in lines:
            if isinstance(line, JobLine):
                if jobs == len(self._rows):
                    self._rows.append(JobRow(self))
                row = self._rows[jobs]
                opened = line.record.id == self._detail_id and not detail_shown
                row.show(line.record, line.depth, names, open_details=opened)
                self._has_running |= line.record.state == J.RUNNING
                jobs += 1
                widgets.append(row)
                if opened and self._detail.show(line.record.id):
                    widgets.append(self._detail)
                    detail_shown = True
            else:
                if summaries == len(self._summaries):
                    self._summaries.append(ChildrenRow(self))
                summary = self._summaries[summaries]
                summary.show(line)
                summaries += 1
                widgets.append(summary)
        for row in self._rows[jobs:]:
            row.hide()
        for summary in self._summaries[summaries:]:
            summary.hide()
        if not detail_shown:
            self._detail.hide()
        children = (self._toolbar, *widgets, self._pager)
        if self._jobs.children != children:
            self._jobs.children = children
        filtered = self.filter != JobFilter()
        count = f"{listed.total:,}{'+' if listed.more else ''}"
        set_traits(self._jobs_title, value=f"<b>jobs</b> ({count} {'match' if filtered else 'listed'})"
                   if listed.total or filtered else "<b>jobs</b>")
        set_traits(self._page_label, value=f"page {self.page + 1} of {pages:,}"
                   + ("+" if listed.more else ""))
        set_traits(self._prev, disabled=self.page == 0)
        set_traits(self._next, disabled=self.page >= pages - 1 and not listed.more)
        show(self._jobs, sum(counts.values()) > 0)

    def _render_resources(self) -> None:
        resources = self.queue.resources()
        holder_ids = {h["job"] for info in resources.values() for h in info["holders"]}
        found = self.queue.tree().names_of(holder_ids)
        names = {i: f"{found[i]} {i}" if i in found else i for i in holder_ids}
        items = list(resources.items())
        for i, row in enumerate(self._resource_rows):
            if i < len(items):
                row.show(items[i][0], items[i][1], names)
            else:
                row.hide()
        extra = len(items) - len(self._resource_rows)
        set_traits(self._resources_more, value=f"and {extra} more" if extra > 0 else "")
        show(self._resources, bool(items))

    def _render_schedules(self) -> None:
        records = self.queue.schedules()
        shown = records[:len(self._schedule_rows)]
        states = self.queue.tree().states_of(r.last_job for r in shown if r.last_job)
        for i, row in enumerate(self._schedule_rows):
            if i < len(shown):
                row.show(shown[i], states.get(shown[i].last_job or ""))
            else:
                row.hide()
        extra = len(records) - len(shown)
        set_traits(self._schedules_more, value=f"and {extra} more" if extra > 0 else "")
        show(self._schedules, bool(records))

    def _render_reviews(self, counts: dict[str, int]) -> None:
        reviews = self.queue.records(state=J.REVIEW, limit=len(self._cards))
        pending = {r.id for r in reviews}
        kept = {c.gate_id: c for c in self._cards if c.gate_id in pending}
        free = [c for c in self._cards if c.gate_id not in pending]
        ordered = []
        for record in reviews:
            card = kept.get(record.id) or free.pop(0)
            card.show(record, self._payload_html(record.id))
            ordered.append(card)
        for card in free:
            card.hide()
        self._payloads = {k: v for k, v in self._payloads.items() if k in pending}
        extra = counts.get(J.REVIEW, 0) - len(reviews)
        set_traits(self._reviews_more, value=f"and {extra} more waiting" if extra > 0 else "")
        set_traits(self._reviews_title,
                   value=f"<b>reviews</b> ({counts.get(J.REVIEW, 0)} pending)"
                   if reviews else "<b>reviews</b>: none pending")
        children = (self._reviews_title, *ordered, *free, self._reviews_more)
        if self._reviews.children != children:
            self._reviews.children = children

    def _payload_html(self, gate_id: str) -> str:
        cached = self._payloads.get(gate_id)
        if cached is None:
            cached = self._payloads[gate_id] = payload_html(self.queue, gate_id)
        return cached

    # -- actions --------------------------------------------------------------------------------

    def _act(self, action: Callable[[], Any]) -> None:
        """Run one queue call for a button, show its error if any, re-read the store."""
        try:
            action()
            set_traits(self._message, value="")
        except (ValueError, NbqueueError) as exc:
            set_traits(self._message, value=f'<div class="nbq-error" style="color:#c62828">'
                                            f"{html.escape(str(exc))}</div>")
        self.refresh()

    def _on_pause_switch(self, change: dict[str, Any]) -> None:
        # a change made by _render_header repeats what the store says: nothing to do
        running = bool(change["new"])
        if self._queue_paused is None or running != self._queue_paused:
            return
        self._act(self.queue.resume if running else self.queue.pause)

    def _turn(self, step: int) -> None:
        with self._lock:
            self.page = max(self.page + step, 0)
        self.refresh()

    def _expand(self, key: str, page: int | None) -> None:
        """Show a page of a parent's children, or of a job's earlier runs (``key``:
        ``tree.runs_key(id)``); ``page=None``: collapse it again."""
        with self._lock:
            if page is None:
                self._expanded.pop(key, None)
            else:
                self._expanded[key] = page
        self.refresh()

    def _toggle_details(self, job_id: str) -> None:
        """Open the detail view under this job's row (closing any other), or close it."""
        with self._lock:
            self._detail_id = None if self._detail_id == job_id else job_id
        self.refresh()

    def set_filter(self, state: str = "", name: str = "") -> None:
        """List only jobs in ``state`` (``""``: all, ``"active"``, ``"ended"`` or one
        state) whose name starts with ``name``; back to the first page."""
        with self._lock:
            self.filter = JobFilter(state=state, name=name)
            self.page = 0
            set_traits(self._state_filter, value=state)
            set_traits(self._name_filter, value=name)
        self.refresh()

    def _on_filter(self, _change: dict[str, Any]) -> None:
        wanted = JobFilter(state=self._state_filter.value or "",
                           name=self._name_filter.value.strip())
        if wanted != self.filter:
            self.set_filter(wanted.state, wanted.name)

    def close(self) -> None:
        """Stop the refresher thread and close the widgets."""
        self._refresher.stop()
        for widget in [*self._rows, *self._summaries, *self._resource_rows,
                       *self._schedule_rows, *self._cards,
                       self._detail, self._state_filter, self._name_filter, self._prev,
                       self._running_switch,
                       self._next]:
            widget.close()
        super().close()
