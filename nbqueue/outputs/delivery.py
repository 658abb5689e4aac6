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
from ..display import payload_bundle
from ..errors import InvalidArgumentType, NoSuchJob
from ..reviewing import Review, review_from
from ..store import gates, outbox
from ..store.files import check_entry, open_private
from .base import Ending, Output, _store
from .jsonlines import JsonLines
from .notebook import NotebookReport
from .notify import Email, Webhook

log = logging.getLogger(__name__)

BATCH = 500  # endings per write (each write is made durable before the cursor moves)
DELIVER_EVERY = 1.0  # seconds between a dispatcher's looks at the outbox

KINDS: dict[str, type[Output]] = {cls.kind: cls for cls in (JsonLines, NotebookReport, Webhook,
                                                             Email)}


def check_outputs(outputs: Any) -> tuple[Output, ...]:
    """Validate ``Queue(outputs=...)``: outputs of nbqueue, or a sequence of them."""
    if isinstance(outputs, Output):
        outputs = (outputs,)
    if isinstance(outputs, (str, bytes, os.PathLike)) or not isinstance(outputs, Iterable):
        raise InvalidArgumentType(
            f"outputs={outputs!r}: give a list such as "
            "[nbqueue.JsonLines('results.jsonl'), nbqueue.NotebookReport('report.ipynb')]")
    out = tuple(outputs)
    for item in out:
        if not isinstance(item, Output) or item.kind not in KINDS:
            raise InvalidArgumentType(f"outputs: {item!r} is not an output; use "
                                      "nbqueue.JsonLines(path), nbqueue.NotebookReport(path), "
                                      "nbqueue.Webhook(url) or nbqueue.Email(host, to=[...])")
    return out


def register(store: Any, outputs: Sequence[Output]) -> None:
    """Record outputs in the queue directory (idempotent). Each gets the jobs that end
    from now on; for those that ended before, use ``export_jsonl``/``export_notebook``."""
    for output in check_outputs(outputs):
        outbox.register(store, output.name, output.kind, output.spec(), output.store_events())


def unregister(queue: Any, output: Output) -> bool:
    """Stop delivering to ``output`` (its file stays); returns whether it was registered."""
    return outbox.unregister(_store(queue), output.name)


def registered(queue: Any) -> list[dict[str, Any]]:
    """The outputs recorded in a queue: name, kind, spec, cursor, ``behind`` (outbox rows
    not yet delivered), the last ``error`` (None when the last delivery worked), and for
    one that failed, ``failures`` in a row and ``retry_at`` (when it is tried again)."""
    return outbox.registered(_store(queue))


def deliver(store: Any, outputs: Sequence[Output] = (), *, wait: bool = True,
            batch: int = BATCH, remote: bool | None = None, backoff: bool = False) -> int:
    """Deliver the pending endings (and events) to every output recorded in the queue
    directory.

    ``outputs`` are registered first, and used instead of the recorded ones of the
    same name. With ``wait=False`` an output that another thread or process is
    delivering right now is skipped (it is being taken care of). ``remote``: only the
    notifiers (True) or only the files (False). ``backoff``: skip a notifier whose
    last failure asks to wait (``retry_at``). Returns how many records were written.
    An output that fails is noted (``registered``) and tried again later (a notifier
    after a pause that doubles, up to ``Notifier.MAX_BACKOFF``); it never stops the
    others.
    """
    store = _store(store)
    given = {o.name: o for o in check_outputs(outputs)}
    if given:
        register(store, list(given.values()))
    written = 0
    now = time.time()
    for entry in outbox.registered(store):
        output = given.get(entry["name"]) or _from_entry(entry)
        if output is None or (remote is not None and output.remote != remote):
            continue
        if backoff and entry.get("retry_at") is not None and entry["retry_at"] > now \
                and entry["behind"]:
            continue
        try:
            written += _deliver_one(store, output, wait=wait, batch=batch)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            # said once per new error: delivery is tried again every second
            log.log(logging.DEBUG if error == entry["error"] else logging.WARNING,
                    "output %s: delivery failed, will try again: %s", output.name, error)
            try:
                outbox.failed(store, output.name, error,
                              backoff=output.backoff(int(entry.get("failures") or 0) + 1))
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
        queue_id = outbox.queue_id(store)
        written = 0
        in_file = output.open(queue)
        try:
            while True:
                cursor, rows = outbox.pending(store, output.name, batch)
                if not rows:
                    return written
                fresh = [row for row in rows
                         if row["seq"] > max(cursor, in_file) and output.receives(row)]
                # a notifier sends one at a time, the cursor moved after each: a crash
                # sends again at most the one it was sending
                size = output.batch or len(fresh) or 1
                for start in range(0, len(fresh), size):
                    part = fresh[start:start + size]
                    output.write([load(store, row, queue, queue_id) for row in part])
                    written += len(part)
                    in_file = part[-1]["seq"]
                    if start + size < len(fresh):
                        outbox.advance(store, output.name, in_file)
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
    check_entry(folder)  # a directory of ours, not a link (nor its lock files: open_private)
    digest = hashlib.blake2b(output.name.encode(), digest_size=8).hexdigest()
    fd = open_private(folder / f"{digest}.lock", os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def load(store: Any, row: dict[str, Any], queue: str, queue_id: str = "") -> Ending:
    """An outbox row with the job's result (and a gate's payload and review) loaded."""
    ending = Ending(row, queue, queue_id=queue_id)
    if row["kind"] == J.GATE:
        ending.review = _review(store, row["id"])
    if row.get("event", "ended") != "ended":  # an event: a gate's payload, no result
        if row["kind"] == J.GATE:
            ending.payload = payload_bundle(store.payload(row["id"])) or None
        return ending
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


def _review(store: Any, gate_id: str) -> Review | None:
    """The gate as its reviewers see it, or None if it was forgotten since (as
    ``nbqueue.reviews.review_of`` reads it; that module is the api's, above this one)."""
    try:
        record = store.get(gate_id)
    except NoSuchJob:
        return None
    row = gates.read(store, [gate_id]).get(gate_id)
    return review_from(record, row, payload_bundle(store.payload(gate_id)))


# -- a dispatcher's delivery thread --------------------------------------------------------------


class Delivery:
    """Delivers in background threads, so that outputs never hold up job completion.

    A dispatcher calls ``poke`` from its housekeeping; about once a second, when an
    output lags behind, the threads run ``deliver``: one for the files, one for the
    notifiers (a receiver that hangs or fails holds up no file). ``close`` stops them
    and delivers what is pending, so that a stopped queue leaves complete files.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._last = 0.0
        self._events = {False: threading.Event(), True: threading.Event()}  # by remote
        self._closing = False
        self._poked = False  # a dispatcher that never ran delivers nothing at close
        self._threads: dict[bool, threading.Thread] = {}

    def poke(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if abs(now - self._last) < DELIVER_EVERY or self._closing:
            return
        self._last = now
        self._poked = True
        if not outbox.behind(self.store):
            return
        for remote, event in self._events.items():
            thread = self._threads.get(remote)
            if thread is None or not thread.is_alive():
                thread = self._threads[remote] = threading.Thread(
                    target=self._run, args=(remote,), daemon=True,
                    name="nbqueue-notifiers" if remote else "nbqueue-outputs")
                thread.start()
            event.set()

    def _run(self, remote: bool) -> None:
        event = self._events[remote]
        while True:
            event.wait()
            event.clear()
            if self._closing:
                return
            try:
                deliver(self.store, wait=False, remote=remote, backoff=True)
            except Exception:
                log.warning("delivering outputs of %s failed", self.store.path, exc_info=True)

    def close(self, timeout: float | None = 10.0) -> None:
        self._closing = True
        for event in self._events.values():
            event.set()
        for thread in self._threads.values():
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._threads = {}
        try:
            if self._poked and outbox.behind(self.store):
                # another deliverer, if busy, does it; a failing notifier waits its turn
                deliver(self.store, wait=False, backoff=True)
        except Exception:
            log.warning("delivering outputs of %s at stop failed", self.store.path,
                        exc_info=True)
        self._closing = False
