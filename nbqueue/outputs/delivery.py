"""Registering outputs in the queue directory and delivering the outbox to them: once
per ending, under a per-output ``flock``, the cursor moved only after a durable write;
``Delivery`` runs it in a dispatcher's background thread."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import job as J
from ..store import outbox
from .base import Ending, Output, _store
from .jsonlines import JsonLines
from .notebook import NotebookReport

log = logging.getLogger(__name__)

BATCH = 500  # endings per write (each write is made durable before the cursor moves)
DELIVER_EVERY = 1.0  # seconds between a dispatcher's looks at the outbox

KINDS: dict[str, type[Output]] = {JsonLines.kind: JsonLines, NotebookReport.kind: NotebookReport}


def check_outputs(outputs: Any) -> tuple[Output, ...]:
    """Validate ``Queue(outputs=...)``: outputs of nbqueue, or a sequence of them."""
    if isinstance(outputs, Output):
        outputs = (outputs,)
    if isinstance(outputs, (str, bytes, os.PathLike)) or not isinstance(outputs, Iterable):
        raise TypeError(f"outputs={outputs!r}: give a list such as "
                        "[nbqueue.JsonLines('results.jsonl'), nbqueue.NotebookReport('report.ipynb')]")
    out = tuple(outputs)
    for item in out:
        if not isinstance(item, Output) or item.kind not in KINDS:
            raise TypeError(f"outputs: {item!r} is not an output; use nbqueue.JsonLines(path) "
                            "or nbqueue.NotebookReport(path)")
    return out


def register(store: Any, outputs: Sequence[Output]) -> None:
    """Record outputs in the queue directory (idempotent). Each gets the jobs that end
    from now on; for those that ended before, use ``export_jsonl``/``export_notebook``."""
    for output in check_outputs(outputs):
        outbox.register(store, output.name, output.kind, output.spec())


def unregister(queue: Any, output: Output) -> bool:
    """Stop delivering to ``output`` (its file stays); returns whether it was registered."""
    return outbox.unregister(_store(queue), output.name)


def registered(queue: Any) -> list[dict[str, Any]]:
    """The outputs recorded in a queue: name, kind, spec, cursor, ``behind`` (endings not
    yet delivered) and the last ``error`` (None when the last delivery worked)."""
    return outbox.registered(_store(queue))


def deliver(store: Any, outputs: Sequence[Output] = (), *, wait: bool = True,
            batch: int = BATCH) -> int:
    """Deliver the pending endings to every output recorded in the queue directory.

    ``outputs`` are registered first, and used instead of the recorded ones of the
    same name. With ``wait=False`` an output that another thread or process is
    delivering right now is skipped (it is being taken care of). Returns how many
    records were written. An output that fails is noted (``registered``) and tried
    again at the next delivery; it never stops the others.
    """
    store = _store(store)
    given = {o.name: o for o in check_outputs(outputs)}
    if given:
        register(store, list(given.values()))
    written = 0
    for entry in outbox.registered(store):
        output = given.get(entry["name"]) or _from_entry(entry)
        if output is None:
            continue
        try:
            written += _deliver_one(store, output, wait=wait, batch=batch)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            # said once per new error: delivery is tried again every second
            log.log(logging.DEBUG if error == entry["error"] else logging.WARNING,
                    "output %s: delivery failed, will try again: %s", output.name, error)
            try:
                outbox.failed(store, output.name, error)
            except Exception:
                log.debug("could not record the failure of output %s", output.name,
                          exc_info=True)
    return written


def _from_entry(entry: dict[str, Any]) -> Output | None:
    cls = KINDS.get(entry["kind"])
    if cls is None:  # recorded by a newer nbqueue: that one delivers it
        return None
    try:
        return cls.from_spec(entry["spec"])
    except Exception:
        log.warning("output %s: cannot rebuild it from %r", entry["name"], entry["spec"])
        return None


def _deliver_one(store: Any, output: Output, *, wait: bool, batch: int) -> int:
    with _output_lock(store, output, wait=wait) as locked:
        if not locked:
            return 0
        queue = str(store.path)
        written = 0
        in_file = output.open(queue)
        try:
            while True:
                cursor, rows = outbox.pending(store, output.name, batch)
                if not rows:
                    return written
                fresh = [row for row in rows if row["seq"] > max(cursor, in_file)]
                if fresh:
                    output.write([load(store, row, queue) for row in fresh])
                    written += len(fresh)
                    in_file = fresh[-1]["seq"]
                outbox.advance(store, output.name, rows[-1]["seq"])
        finally:
            output.close()


@contextmanager
def _output_lock(store: Any, output: Output, *, wait: bool) -> Iterator[bool]:
    """One deliverer per output at a time, across threads and processes (``flock`` on a
    file in the queue directory: the OS releases it when its holder dies)."""
    import fcntl

    folder = Path(store.path) / "outputs"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.blake2b(output.name.encode(), digest_size=8).hexdigest()
    fd = os.open(folder / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def load(store: Any, row: dict[str, Any], queue: str) -> Ending:
    """An outbox row with the job's result (and a gate's payload) loaded."""
    from ..display import payload_bundle

    ending = Ending(row, queue)
    if row["state"] not in (J.DONE, J.REJECTED):
        return ending
    blob, payload = outbox.result_and_payload(store, row["id"])
    if payload:
        ending.payload = payload_bundle(payload)
    if blob is None:  # forgotten since it ended
        return ending
    try:
        ending.value, ending.loaded = pickle.loads(blob), True
    except Exception as exc:  # its class may exist only where the job ran
        ending.load_error = f"<result not loadable here: {type(exc).__name__}: {exc}>"
    return ending


# -- a dispatcher's delivery thread --------------------------------------------------------------


class Delivery:
    """Delivers in a background thread, so that outputs never hold up job completion.

    A dispatcher calls ``poke`` from its housekeeping; about once a second, when an
    output lags behind, the thread runs ``deliver``. ``close`` stops the thread and
    delivers what is pending, so that a stopped queue leaves complete files.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._last = 0.0
        self._event = threading.Event()
        self._closing = False
        self._poked = False  # a dispatcher that never ran delivers nothing at close
        self._thread: threading.Thread | None = None

    def poke(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if abs(now - self._last) < DELIVER_EVERY or self._closing:
            return
        self._last = now
        self._poked = True
        if not outbox.behind(self.store):
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="nbqueue-outputs",
                                            daemon=True)
            self._thread.start()
        self._event.set()

    def _run(self) -> None:
        while True:
            self._event.wait()
            self._event.clear()
            if self._closing:
                return
            try:
                deliver(self.store, wait=False)
            except Exception:
                log.warning("delivering outputs of %s failed", self.store.path, exc_info=True)

    def close(self, timeout: float | None = 10.0) -> None:
        self._closing = True
        self._event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        try:
            if self._poked and outbox.behind(self.store):
                deliver(self.store, wait=False)  # another deliverer, if busy, does it
        except Exception:
            log.warning("delivering outputs of %s at stop failed", self.store.path,
                        exc_info=True)
        self._closing = False
