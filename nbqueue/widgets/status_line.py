"""A cell job's live status line: state, reason, progress, elapsed; then the result."""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Sequence

import ipywidgets as W

from .. import job as J
from ..display import elapsed_text, progress_text, state_badge
from ..errors import NoSuchJob
from ..queue import Job
from .base import bar_value, failure_html, result_html, set_traits, tail
from .refresher import Refresher


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
        if record.note:  # why it waits, or why this attempt runs again
            parts.append(html.escape(record.note))
        if record.progress:
            parts.append(html.escape(progress_text(record.progress)))
        if record.started:
            parts.append(html.escape(elapsed_text(record)))
        if gate is not None and record.state == J.DONE:
            parts.append("&middot; review " + state_badge(gate.state))
            if gate.reason and gate.reason != gate.state:
                parts.append(html.escape(gate.reason))
        set_traits(self._line, value=f'<span class="nbq-line">{" ".join(parts)}</span>')
        self._text = f"{record.name} {record.id}: {record.state}" + (
            f", review {gate.state}" if gate is not None and record.state == J.DONE else "")
        value, style = bar_value(record)
        set_traits(self._bar, value=value, bar_style=style)
        if record.state == J.DONE:
            if self._result_html is None:
                try:
                    self._result_html = result_html(self._job)
                except Exception as exc:  # e.g. a module this kernel cannot import
                    self._result_html = (f'<pre class="nbq-error">cannot load the result: '
                                         f"{html.escape(f'{type(exc).__name__}: {exc}')}</pre>")
            detail = self._result_html
        elif record.state == J.FAILED:
            detail = failure_html(record)
        else:
            detail = ""
        logs = self._job.logs if record.state in (J.RUNNING, J.DONE, J.FAILED) else ""
        if logs:
            detail += f'<pre class="nbq-logs">{html.escape(tail(logs))}</pre>'
        set_traits(self._detail, value=detail)
        self._final = record.state in (J.FAILED, J.CANCELLED, J.REJECTED) or (
            record.state == J.DONE and (gate is None or gate.state in J.ENDED))
