"""ipywidgets front end: the queue panel, its review cards, and a cell job's status line.

Every widget reads the store and nothing else (the directory is the truth). A
``Refresher`` daemon thread polls the store's change counter about twice a second
and re-renders only when it moved (or to tick the elapsed time of running jobs);
from that thread widgets are changed by setting traits only, never ``with output:``.
Buttons call the public queue API, then re-read the store. Widgets are made once
(a fixed pool of rows and cards) and then only updated.
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W

from . import job as J
from .cells import RESULT_REF_MIME, outputs_html
from .display import (
    bundle,
    bundle_html,
    elapsed_text,
    payload_bundle,
    progress_text,
    state_badge,
)
from .errors import NoSuchJob
from .queue import Job, Queue

log = logging.getLogger(__name__)

# active jobs first (oldest first), then ended ones (newest first)
_ORDER = ((J.RUNNING, False), (J.REVIEW, False), (J.READY, False), (J.WAITING, False),
          (J.FAILED, True), (J.DONE, True), (J.CANCELLED, True), (J.REJECTED, True))
_HIDDEN = "none"


class Refresher:
    """A daemon thread that polls a change counter and refreshes its views.

    A view has ``_refresh(changed: bool) -> bool`` and returns False once it needs no
    more updates. ``stop()`` ends the thread.

    Parameters
    ----------
    changes : callable
        A cheap counter that moves whenever the store changes (``store.changes``).
    interval : float
        Seconds between polls.
    """

    def __init__(self, changes: Callable[[], int], interval: float = 0.5) -> None:
        self._changes = changes
        self.interval = interval
        self._views: list[Any] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: int | None = None

    def add(self, view: Any) -> None:
        with self._lock:
            if view not in self._views:
                self._views.append(view)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="nbqueue-refresher",
                                                daemon=True)
                self._thread.start()

    def remove(self, view: Any) -> None:
        with self._lock:
            if view in self._views:
                self._views.remove(view)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                current = self._changes()
            except Exception:
                log.debug("nbqueue refresher: cannot read the store", exc_info=True)
                continue
            changed, self._last = current != self._last, current
            with self._lock:
                views = list(self._views)
            for view in views:
                try:
                    keep = view._refresh(changed)
                except Exception:
                    log.warning("nbqueue refresher: a view failed to update", exc_info=True)
                    keep = True
                if not keep:
                    self.remove(view)


def _show(widget: W.Widget, visible: bool) -> None:
    widget.layout.display = None if visible else _HIDDEN


def _set(widget: W.Widget, **traits: Any) -> None:
    # only send what changed: each trait set is a message to the front end
    for name, value in traits.items():
        if getattr(widget, name) != value:
            setattr(widget, name, value)


def _bar_value(record: J.JobRecord) -> tuple[float, str]:
    if record.state == J.DONE:
        return 1.0, "success"
    if record.state in (J.FAILED, J.REJECTED):
        return 1.0, "danger"
    progress = record.progress or {}
    done, total = progress.get("done"), progress.get("total")
    if total:
        return max(0.0, min(float(done or 0) / float(total), 1.0)), "info"
    return 0.0, "info"


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _result_html(job: Job) -> str:
    value = job.result()
    if isinstance(value, dict) and hasattr(value, "dropped"):
        return outputs_html(value)
    return bundle_html(bundle(value))


def _failure_html(record: J.JobRecord) -> str:
    error = record.error
    text = (error.traceback or f"{error.exc_type}: {error.exc_value}") if error else record.reason
    return f'<pre class="nbq-traceback">{html.escape(text)}</pre>'


# -- a cell job's status line -----------------------------------------------------------------


class CellStatus(W.VBox):
    """The live status of one job (and its review gate): state, reason, progress,
    elapsed; then its result's display, or the remote traceback.

    Parameters
    ----------
    job : Job
        The job to follow.
    gate : Job, optional
        A review gate after it.
    refresher : Refresher, optional
        Shared with other status lines; by default the line has its own.
    """

    def __init__(self, job: Job, gate: Job | None = None, *,
                 refresher: Refresher | None = None) -> None:
        self._job, self._gate = job, gate
        self._line = W.HTML()
        self._bar = W.FloatProgress(min=0.0, max=1.0, layout=W.Layout(width="160px"))
        self._detail = W.HTML()
        self._note = W.HTML()
        super().__init__([W.HBox([self._line, self._bar]), self._detail, self._note])
        self.add_class("nbq-cell")
        self._lock = threading.RLock()
        self._final = False
        self._running = False
        self._rendered = 0.0
        self._result_html: str | None = None
        self._text = job.id
        self._refresher = refresher or Refresher(job.queue.store.changes)
        self._refresh(True)
        if not self._final:
            self._refresher.add(self)

    def __repr__(self) -> str:
        return f"<nbqueue job {self._text}>"

    @property
    def final(self) -> bool:
        """Whether the job (and its gate) has ended: nothing more will change."""
        return self._final

    def mark_bound(self, names: Sequence[str], dropped: dict[str, str]) -> None:
        """Say which variables came back into the notebook."""
        text = ("back in the notebook: " + ", ".join(names)) if names else "no variables"
        if dropped:
            text += "; left out (cannot be pickled): " + ", ".join(dropped)
        self._note.value = f'<span class="nbq-bound">{html.escape(text)}</span>'

    def follow(self, gate: Job | None) -> None:
        """Follow the job again (after a retry), with this gate."""
        with self._lock:
            self._gate, self._final, self._result_html = gate, False, None
            self._note.value = ""
        self._refresh(True)
        if not self._final:
            self._refresher.add(self)

    def _refresh(self, changed: bool) -> bool:
        with self._lock:
            if changed or (self._running and time.monotonic() - self._rendered >= 1.0):
                self._render()
            return not self._final

    def _render(self) -> None:
        self._rendered = time.monotonic()
        try:
            record = self._job.record()
        except NoSuchJob:
            self._line.value = f"job {html.escape(self._job.id)} was forgotten"
            self._final = True
            return
        gate = self._gate.record() if self._gate is not None else None
        self._running = record.state == J.RUNNING
        parts = [f"<b>{html.escape(record.name)}</b>", state_badge(record.state)]
        if record.reason and record.reason != record.state:
            parts.append(html.escape(record.reason))
        if record.progress:
            parts.append(html.escape(progress_text(record.progress)))
        if record.started:
            parts.append(html.escape(elapsed_text(record)))
        if gate is not None and record.state == J.DONE:
            parts.append("&middot; review " + state_badge(gate.state))
            if gate.reason and gate.reason != gate.state:
                parts.append(html.escape(gate.reason))
        _set(self._line, value=f'<span class="nbq-line">{" ".join(parts)}</span>')
        self._text = f"{record.name} {record.id}: {record.state}" + (
            f", review {gate.state}" if gate is not None and record.state == J.DONE else "")
        value, style = _bar_value(record)
        _set(self._bar, value=value, bar_style=style)
        if record.state == J.DONE:
            if self._result_html is None:
                try:
                    self._result_html = _result_html(self._job)
                except Exception as exc:  # e.g. a module this kernel cannot import
                    self._result_html = (f'<pre class="nbq-error">cannot load the result: '
                                         f"{html.escape(f'{type(exc).__name__}: {exc}')}</pre>")
            detail = self._result_html
        elif record.state == J.FAILED:
            detail = _failure_html(record)
        else:
            detail = ""
        logs = self._job.logs if record.state in (J.RUNNING, J.DONE, J.FAILED) else ""
        if logs:
            detail += f'<pre class="nbq-logs">{html.escape(_tail(logs))}</pre>'
        _set(self._detail, value=detail)
        self._final = record.state in (J.FAILED, J.CANCELLED, J.REJECTED) or (
            record.state == J.DONE and (gate is None or gate.state in J.ENDED))


# -- the panel ----------------------------------------------------------------------------------


class _JobRow(W.HBox):
    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.job_id: str | None = None
        self._name = W.HTML(layout=W.Layout(width="230px"))
        self._state = W.HTML(layout=W.Layout(width="80px"))
        self._reason = W.HTML(layout=W.Layout(width="240px"))
        self._bar = W.FloatProgress(min=0.0, max=1.0, layout=W.Layout(width="120px"))
        self._elapsed = W.HTML(layout=W.Layout(width="70px"))
        self._resources = W.HTML(layout=W.Layout(width="100px"))
        self._cancel = W.Button(description="cancel", layout=W.Layout(width="70px"))
        self._retry = W.Button(description="retry", layout=W.Layout(width="60px"))
        self._cancel.add_class("nbq-cancel")
        self._retry.add_class("nbq-retry")
        self._cancel.on_click(self._on_cancel)
        self._retry.on_click(self._on_retry)
        super().__init__([self._name, self._state, self._reason, self._bar, self._elapsed,
                          self._resources, self._cancel, self._retry])
        self.add_class("nbq-job")

    def show(self, record: J.JobRecord) -> None:
        self.job_id = record.id
        _set(self._name, value=f"<b>{html.escape(record.name)}</b> "
                               f"<small><code>{html.escape(record.id)}</code></small>")
        _set(self._state, value=state_badge(record.state))
        _set(self._reason, value=html.escape(record.reason if record.reason != record.state
                                             else ""))
        value, style = _bar_value(record)
        _set(self._bar, value=value, bar_style=style)
        _set(self._elapsed, value=html.escape(elapsed_text(record)))
        resources = record.options.resources
        _set(self._resources, value=html.escape(", ".join(
            k if n == 1 else f"{k}={n}" for k, n in resources.items())))
        _set(self._cancel, disabled=record.state in J.ENDED)
        _set(self._retry, disabled=record.state not in (J.FAILED, J.CANCELLED)
             or record.kind == J.GATE)
        _show(self, True)

    def hide(self) -> None:
        self.job_id = None
        _show(self, False)

    def _on_cancel(self, _button: W.Button) -> None:
        if self.job_id is not None:
            job_id = self.job_id
            self._panel._act(lambda: Job(self._panel.queue, job_id).cancel())

    def _on_retry(self, _button: W.Button) -> None:
        if self.job_id is not None:
            job_id = self.job_id
            self._panel._act(lambda: Job(self._panel.queue, job_id).retry())


class _ResourceRow(W.HBox):
    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.resource: str | None = None
        self._available: bool | None = None
        self._info = W.HTML(layout=W.Layout(width="520px"))
        self._toggle = W.ToggleButton(description="available", layout=W.Layout(width="110px"))
        self._toggle.add_class("nbq-available")
        self._toggle.observe(self._on_toggle, names="value")
        super().__init__([self._info, self._toggle])
        self.add_class("nbq-resource")

    def show(self, name: str, info: dict[str, Any], names: dict[str, str]) -> None:
        self.resource = name
        holders = ", ".join(
            f"{names.get(h['job'], h['job'])}" + (f" ({h['units']})" if h["units"] != 1 else "")
            for h in info.get("holders", []))
        text = (f"<b>{html.escape(name)}</b> capacity {info['capacity']}; "
                f"held by {html.escape(holders) if holders else 'nobody'}"
                + (f"; {info['waiting']} waiting" if info.get("waiting") else ""))
        _set(self._info, value=text)
        self._available = bool(info["available"])
        _set(self._toggle, value=self._available,
             description="available" if self._available else "unavailable",
             button_style="success" if self._available else "warning")
        _show(self, True)

    def hide(self) -> None:
        self.resource = None
        _show(self, False)

    def _on_toggle(self, change: dict[str, Any]) -> None:
        # a change made by show() repeats what the store says: nothing to do
        if self.resource is None or change["new"] == self._available:
            return
        name, available = self.resource, bool(change["new"])
        self._panel._act(lambda: self._panel.queue.set_resource(name, available=available))


class _ReviewCard(W.VBox):
    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.gate_id: str | None = None
        self._title = W.HTML()
        self._payload = W.HTML()
        self._comment = W.Textarea(placeholder="comment (optional)",
                                   layout=W.Layout(width="420px", height="48px"))
        self._comment.add_class("nbq-comment")
        self._approve = W.Button(description="Approve", button_style="success")
        self._reject = W.Button(description="Reject", button_style="danger")
        self._approve.add_class("nbq-approve")
        self._reject.add_class("nbq-reject")
        self._approve.on_click(self._on_approve)
        self._reject.on_click(self._on_reject)
        super().__init__([self._title, self._payload, self._comment,
                          W.HBox([self._approve, self._reject])],
                         layout=W.Layout(border="1px solid #ccc", padding="4px", margin="4px 0"))
        self.add_class("nbq-review-card")

    def show(self, record: J.JobRecord, payload_html: str) -> None:
        if record.id != self.gate_id:
            self.gate_id = record.id
            _set(self._comment, value="")
        _set(self._title, value=f"<b>{html.escape(record.name)}</b> "
                                f"<small><code>{html.escape(record.id)}</code></small>")
        _set(self._payload, value=f'<div class="nbq-payload">{payload_html}</div>')
        _show(self, True)

    def hide(self) -> None:
        self.gate_id = None
        _show(self, False)

    def _on_approve(self, _button: W.Button) -> None:
        self._decide(True)

    def _on_reject(self, _button: W.Button) -> None:
        self._decide(False)

    def _decide(self, approved: bool) -> None:
        if self.gate_id is None:
            return
        gate_id, comment, queue = self.gate_id, self._comment.value, self._panel.queue
        if approved:
            self._panel._act(lambda: queue.approve(gate_id, comment=comment))
        else:
            self._panel._act(lambda: queue.reject(gate_id, comment=comment))


class QueuePanel(W.VBox):
    """The live panel of a queue: counts per state, jobs (active first, paged) with
    cancel and retry, resources with an availability switch, and each pending review
    with its payload and ``Approve`` / ``Reject`` buttons.

    Parameters
    ----------
    queue : Queue
        The queue to show.
    page_size : int
        Job rows per page.
    sections : sequence of str
        Which parts to show: ``"jobs"``, ``"resources"``, ``"reviews"``.
    interval : float
        Seconds between polls of the store for changes (by any process).
    """

    MAX_RESOURCES = 12
    MAX_REVIEWS = 5

    def __init__(self, queue: Queue, *, page_size: int = 10,
                 sections: Sequence[str] = ("jobs", "resources", "reviews"),
                 interval: float = 0.5) -> None:
        self.queue = queue
        self.sections = tuple(sections)
        self.page_size = page_size
        self.page = 0
        self._lock = threading.RLock()
        self._payloads: dict[str, str] = {}
        self._has_running = False
        self._rendered = 0.0
        self._header = W.HTML()
        self._message = W.HTML()
        self._rows = [_JobRow(self) for _ in range(page_size)]
        self._prev = W.Button(description="newer", layout=W.Layout(width="70px"))
        self._next = W.Button(description="older", layout=W.Layout(width="70px"))
        self._page_label = W.HTML()
        self._prev.on_click(lambda _b: self._turn(-1))
        self._next.on_click(lambda _b: self._turn(1))
        self._jobs = W.VBox([W.HTML("<b>jobs</b>"), *self._rows,
                             W.HBox([self._prev, self._page_label, self._next])])
        self._resource_rows = [_ResourceRow(self) for _ in range(self.MAX_RESOURCES)]
        self._resources_more = W.HTML()
        self._resources = W.VBox([W.HTML("<b>resources</b>"), *self._resource_rows,
                                  self._resources_more])
        self._cards = [_ReviewCard(self) for _ in range(self.MAX_REVIEWS)]
        self._reviews_title = W.HTML("<b>reviews</b>")
        self._reviews_more = W.HTML()
        self._reviews = W.VBox([self._reviews_title, *self._cards, self._reviews_more])
        parts = {"jobs": self._jobs, "resources": self._resources, "reviews": self._reviews}
        super().__init__([self._header, self._message] + [parts[s] for s in self.sections])
        self.add_class("nbq-panel")
        self._refresher = Refresher(queue.store.changes, interval)
        self.refresh()
        self._refresher.add(self)

    def __repr__(self) -> str:
        counts = self.queue.store.counts()
        text = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs"
        return f"<nbqueue panel {self.queue.path}: {text}>"

    # -- rendering ----------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the store and update every part."""
        with self._lock:
            self._rendered = time.monotonic()
            counts = self.queue.store.counts()
            self._render_header(counts)
            if "jobs" in self.sections:
                self._render_jobs(counts)
            if "resources" in self.sections:
                self._render_resources()
            if "reviews" in self.sections:
                self._render_reviews(counts)

    def _refresh(self, changed: bool) -> bool:
        if changed or (self._has_running and time.monotonic() - self._rendered >= 1.0):
            self.refresh()
        return True

    def _render_header(self, counts: dict[str, int]) -> None:
        badges = " ".join(f"{state_badge(s)}&nbsp;{counts.get(s, 0)}" for s in J.STATES
                          if counts.get(s, 0))
        alive = [d for d in self.queue.store.dispatchers() if d["alive"]]
        local = self.queue.dispatcher
        problems = ""
        if local is not None and local.error and not local.alive:
            problems = (f'<pre class="nbq-error" style="color:#c62828">the dispatcher thread of '
                        f"this kernel died: {html.escape(local.error)}</pre>")
        elif not alive:
            problems = ('<div class="nbq-warning" style="color:#e65100">no dispatcher serves '
                        "this queue: jobs wait until one starts (q.start() or "
                        "<code>nbqueue worker</code>)</div>")
        workers = sum(int(d.get("workers") or 0) for d in alive)
        _set(self._header, value=(
            f'<div class="nbq-header"><b>nbqueue</b> <code>{html.escape(str(self.queue.path))}'
            f"</code> &middot; {len(alive)} dispatcher(s), {workers} worker(s)"
            f'<div class="nbq-counts">{badges or "no jobs"}</div>{problems}</div>'))

    def _render_jobs(self, counts: dict[str, int]) -> None:
        total = sum(counts.values())
        pages = max((total + self.page_size - 1) // self.page_size, 1)
        self.page = min(self.page, pages - 1)
        records = page_records(self.queue.store, counts, self.page * self.page_size,
                               self.page_size)
        self._has_running = any(r.state == J.RUNNING for r in records)
        for row, record in zip(self._rows, records + [None] * self.page_size, strict=False):
            if record is None:
                row.hide()
            else:
                row.show(record)
        _set(self._page_label, value=f"page {self.page + 1} of {pages}")
        _set(self._prev, disabled=self.page == 0)
        _set(self._next, disabled=self.page >= pages - 1)
        _show(self._jobs, total > 0)

    def _render_resources(self) -> None:
        resources = self.queue.store.resources()
        holder_ids = {h["job"] for info in resources.values() for h in info["holders"]}
        names = {}
        for job_id in holder_ids:
            try:
                names[job_id] = f"{self.queue.store.get(job_id).name} {job_id}"
            except NoSuchJob:
                names[job_id] = job_id
        items = list(resources.items())
        for i, row in enumerate(self._resource_rows):
            if i < len(items):
                row.show(items[i][0], items[i][1], names)
            else:
                row.hide()
        extra = len(items) - len(self._resource_rows)
        _set(self._resources_more, value=f"and {extra} more" if extra > 0 else "")
        _show(self._resources, bool(items))

    def _render_reviews(self, counts: dict[str, int]) -> None:
        reviews = self.queue.store.list_jobs(state=J.REVIEW, limit=len(self._cards))
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
        _set(self._reviews_more, value=f"and {extra} more waiting" if extra > 0 else "")
        _set(self._reviews_title, value=f"<b>reviews</b> ({counts.get(J.REVIEW, 0)} pending)"
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
            _set(self._message, value="")
        except (ValueError, NoSuchJob) as exc:
            _set(self._message, value=f'<div class="nbq-error" style="color:#c62828">'
                                      f"{html.escape(str(exc))}</div>")
        self.refresh()

    def _turn(self, step: int) -> None:
        with self._lock:
            self.page = max(self.page + step, 0)
        self.refresh()

    def close(self) -> None:
        """Stop the refresher thread and close the widgets."""
        self._refresher.stop()
        for widget in [*self._rows, *self._resource_rows, *self._cards]:
            widget.close()
        super().close()


def page_records(store: Any, counts: dict[str, int], offset: int, limit: int) -> list[J.JobRecord]:
    """One page of jobs: active ones first (oldest first), then ended ones (newest first)."""
    out: list[J.JobRecord] = []
    for state, newest_first in _ORDER:
        n = counts.get(state, 0)
        if offset >= n:
            offset -= n
            continue
        take = min(limit - len(out), n - offset)
        if newest_first:
            out += store.list_jobs(state=state, limit=take, offset=n - offset - take)[::-1]
        else:
            out += store.list_jobs(state=state, limit=take, offset=offset)
        offset = 0
        if len(out) >= limit:
            break
    return out[:limit]


def payload_html(queue: Queue, gate_id: str) -> str:
    """A gate's payload as HTML. A payload that stands for a job's outputs shows that
    job's result once it has finished."""
    data = payload_bundle(queue.store.payload(gate_id))
    if not data:
        return "<i>no payload</i>"
    ref = data.get(RESULT_REF_MIME)
    if ref:
        job = Job(queue, json.loads(ref)["job"])
        try:
            if job.state == J.DONE:
                return _result_html(job)
        except Exception:  # forgotten, or a result this kernel cannot load: the text says what
            pass
        return f"<pre>{html.escape(data.get('text/plain', ''))}</pre>"
    return bundle_html(data)
