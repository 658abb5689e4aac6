"""A ``%%enqueue`` cell's outputs, kept current in the notebook document.

The cell gets two ordinary outputs, each with a display id: the job's status (state,
progress, its variables or its traceback, the tail of its output) and the display of
the cell's last expression. Both are updated in place (``update_display_data``) as the
job moves, from the thread of a ``Refresher`` or from the main thread when variables
come back. An update carries the display id, so the front end (JupyterLab, nbclient)
changes the output where it is, in whichever cell runs now; the document it saves
therefore holds the job's latest state, and its final one once the job has ended.
No widget: nothing in these outputs needs a live kernel to be shown.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from .. import job as J
from ..cellview import CellState, result_display, status_bundle
from ..errors import NoSuchJob
from ..handle import Job

# publish(bundle, display_id, update): show a new output, or update the one shown
Publish = Callable[[dict[str, str], str, bool], None]

TICK = 1.0  # seconds between re-renders of a running job (its elapsed time moves)


def publish_display(data: dict[str, str], display_id: str, update: bool) -> None:
    """Show ``data`` as an output with ``display_id`` (or update it) through IPython."""
    from IPython.display import display

    display(data, raw=True, display_id=display_id, update=update)


class CellStatus:
    """Follows one cell job (and its review gate) and keeps its cell's outputs current.

    The outputs are shown when it is made. From then on ``refresh()`` (any thread)
    re-reads the store and updates them if anything changed; a ``Refresher`` calls
    ``_refresh`` when the store's change counter moves, also after the job has ended,
    so that a retry or a cancel made anywhere (the panel, the CLI, another process)
    shows here too. ``close()`` stops following (the cell was run again).

    Parameters
    ----------
    job : Job
        The job to follow.
    gate : Job, optional
        Its review gate.
    refresher : Refresher, optional
        The polling thread to join; without one, only ``refresh()`` updates.
    publish : callable, optional
        ``publish(bundle, display_id, update)``; by default IPython's ``display``.
    """

    def __init__(self, job: Job, gate: Job | None = None, *, refresher: Any = None,
                 publish: Publish | None = None) -> None:
        self._job, self._gate = job, gate
        self._publish = publish or publish_display
        self._refresher = refresher
        self._lock = threading.RLock()
        tag = f"nbq-{job.id}-{uuid.uuid4().hex[:8]}"
        self.display_ids = (f"{tag}-status", f"{tag}-result")
        self._sent: list[dict[str, str] | None] = [None, None]
        self._notes: tuple[str, ...] = ()
        self._result: tuple[Any, str] | None = None  # (result, error), for the attempt that ended
        self._ended: float | None = None
        self._state: CellState | None = None
        self._rendered = 0.0
        self._closed = False
        self.refresh()
        if refresher is not None:
            refresher.add(self)

    def __repr__(self) -> str:
        state = self._state
        return f"<nbqueue cell status {state.record.id if state else self._job.id}>"

    @property
    def state(self) -> CellState | None:
        """What the outputs show now."""
        return self._state

    @property
    def final(self) -> bool:
        """Whether the job (and its gate) has ended, as last read."""
        return self._state is not None and self._state.final

    def mark_bound(self, names: Sequence[str], dropped: dict[str, str],
                   kept: Sequence[str] = (), cell: str = "") -> None:
        """Say which variables came back, which were left out, and which names the
        notebook kept because they were assigned after the submit."""
        notes = [("back in the notebook: " + ", ".join(names)) if names
                 else "no variables came back" if not kept else ""]
        if dropped:
            notes.append("left out (cannot be pickled): " + ", ".join(dropped))
        if kept:
            take = "; ".join(f"%nbq result {cell or self._job.id} {name}" for name in kept)
            notes.append(f"kept the notebook's {', '.join(kept)} (assigned after this cell "
                         f"was submitted); the job's value: {take}")
        with self._lock:
            self._notes = tuple(n for n in notes if n)
            self.refresh()

    def follow(self, gate: Job | None) -> None:
        """Follow this review gate from now on (it was re-armed after a retry)."""
        with self._lock:
            self._gate = gate
            self.refresh()

    def stopped(self, cause: str, how: str) -> None:
        """The kernel is going away (``cause``): the outputs keep the job as it is now and
        say so, and ``how`` to follow it again (it may run on elsewhere)."""
        from datetime import datetime

        with self._lock:
            when = datetime.now().strftime("%H:%M")
            self._notes += (f"shown as it was at {when}, when {cause}; run the cell again "
                            f"(it attaches to the job) or {how} to follow it",)
            self.refresh()
            self.close()

    def close(self) -> None:
        """Stop following: the outputs keep what they show now."""
        self._closed = True
        if self._refresher is not None:
            self._refresher.remove(self)

    def refresh(self) -> None:
        """Re-read the job and update the outputs where they changed."""
        with self._lock:
            state = self._read()
            self._state = state
            self._rendered = time.monotonic()
            for i, data in enumerate((status_bundle(state), result_display(state))):
                if data != self._sent[i]:
                    self._publish(data, self.display_ids[i], self._sent[i] is not None)
                    self._sent[i] = data

    def _refresh(self, changed: bool) -> bool:
        """The refresher's call: re-render on a change, or each ``TICK`` while running."""
        if self._closed:
            return False
        state = self._state
        running = state is not None and state.record.state == J.RUNNING
        if changed or (running and time.monotonic() - self._rendered >= TICK):
            self.refresh()
        return not self._closed

    def _read(self) -> CellState:
        try:
            record = self._job.record()
        except NoSuchJob:
            record = J.JobRecord(id=self._job.id, name=self._job.id, state=J.CANCELLED,
                                 reason="forgotten (deleted from the queue)")
            return CellState(record, notes=self._notes)
        gate = None
        if self._gate is not None:
            try:
                gate = self._gate.record()
            except NoSuchJob:
                gate = None
        ended = record.ended if record.state in J.ENDED else None
        if ended != self._ended:
            if self._ended is not None:  # it runs (or ended) again: what it said is past
                self._result, self._notes = None, ()
            self._ended = ended
        result, error = None, ""
        if record.state == J.DONE:
            if self._result is None:
                try:
                    self._result = (self._job.result(), "")
                except Exception as exc:  # e.g. a module this kernel cannot import
                    self._result = (None, f"cannot load the result: {type(exc).__name__}: {exc}")
            result, error = self._result
        logs = self._job.logs if record.state in (J.RUNNING, J.DONE, J.FAILED) else ""
        return CellState(record, gate, result, error, logs, self._notes)
