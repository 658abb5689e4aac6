"""A dispatcher's lease on its running jobs, kept by a thread and watched by its workers.

A dispatcher holds the jobs it claimed under a lease (``lease_until`` in the store);
another dispatcher recovers a job only once its lease has run out. A thread of the
dispatcher's own renews it every third of its length (``Lease``), so that long work in
the dispatcher's thread never delays a renewal. A dispatcher that stops renewing (its
process stopped by SIGSTOP or a debugger, its interpreter held by a long C call in
another thread, the store locked past the lease) must not leave its workers running
jobs that others will run again. So its local workers watch the lease too: after each
renewal is committed, the dispatcher writes the new deadline into a small file mapped
in memory (``LeaseFile``), and a worker stops, killing its process group with its job
and whatever that started, once ``until - margin`` has passed while it runs a job
(``WorkerLease``, read by ``runtime``). It is dead before anyone may recover its job.

The deadline a worker reads is never later than the store's ``lease_until`` of the jobs
it runs: a renewal is written to the store first, then to the file, and a claim dates
its lease from the moment it holds the write lock, after any renewal committed before.
A dispatcher that finds its lease lapsed (``Lease.lapsed``) stops its workers and hands
its jobs back before anything else (``dispatch.fence``), then renews.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import mmap
import os
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

ENV = "NBQUEUE_LEASE"
DEFAULT = 30.0  # seconds
SHORTEST = 1.0
_FORMAT = struct.Struct("<d")
_PREFIX = "nbqueue-lease-"


def lease_seconds(given: float | None = None) -> float:
    """The length of a dispatcher's lease: ``given``, else ``$NBQUEUE_LEASE``, else 30 s."""
    source = "lease"
    if given is None:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return DEFAULT
        source = f"${ENV}"
        try:
            given = float(text)
        except ValueError:
            raise ValueError(f"{source}={text!r}: give a number of seconds >= {SHORTEST:g} "
                             f"(the default is {DEFAULT:g})") from None
    if not SHORTEST <= given < float("inf"):
        raise ValueError(f"{source}={given!r}: give a number of seconds >= {SHORTEST:g} "
                         f"(the default is {DEFAULT:g})")
    return float(given)


def margin_for(seconds: float) -> float:
    """How long before its lease ends a worker stops its job: a sixth of the lease, at most
    5 s, far more than a worker needs to notice (it looks every ``WorkerLease.every``)."""
    return min(seconds / 6, 5.0)


class LeaseView(NamedTuple):
    """What a local worker needs to watch its dispatcher's lease."""

    path: str
    margin: float


class LeaseFile:
    """The deadline of a dispatcher's lease (seconds since the epoch), in an 8-byte file
    mapped in memory: in ``/dev/shm`` where it exists, else the temporary directory."""

    def __init__(self, until: float) -> None:
        where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        _remove_stale(where)
        fd, self.path = tempfile.mkstemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=where)
        try:
            os.write(fd, _FORMAT.pack(until))
            self._map = mmap.mmap(fd, _FORMAT.size)
        finally:
            os.close(fd)
        self._finalizer = weakref.finalize(self, _unlink, self.path)

    def write(self, until: float) -> None:
        self._map[:_FORMAT.size] = _FORMAT.pack(until)

    def close(self) -> None:
        self._finalizer()
        with contextlib.suppress(ValueError, BufferError):
            self._map.close()


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _remove_stale(where: str) -> None:
    """Remove the lease files that dispatchers killed without a chance to clean up left."""
    for path in glob.glob(os.path.join(where, f"{_PREFIX}*")):
        try:
            pid = int(os.path.basename(path)[len(_PREFIX):].split("-")[0])
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(pid, 0)
        except ProcessLookupError:
            _unlink(path)
        except (ValueError, OSError):
            continue


class Lease:
    """A dispatcher's lease: renewed in the store, then published to its workers.

    ``start()`` keeps it with a thread of its own while ``alive()`` holds; without the
    thread (a dispatcher driven by ``step()``), the dispatcher calls ``renew`` when
    ``due()``. A renewal that finds the lease already past ``until - margin`` (the
    process was stopped, or the store stayed locked) does not renew: the lease is
    ``lapsed`` until the dispatcher has stopped its workers and calls ``restore()``.
    """

    def __init__(self, store: Store, owner: str, seconds: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock  # a fake one in tests that drive a dispatcher with step(now)
        self.owner = owner
        self.seconds = seconds
        self.margin = margin_for(seconds)
        self.until = self.clock() + seconds  # before any claim: never later than a job's
        self.lapsed = False
        self._file = LeaseFile(self.until)
        self._renewing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def view(self) -> LeaseView:
        return LeaseView(self._file.path, self.margin)

    def expired(self) -> bool:
        """Whether the workers may have stopped their jobs: lapsed, or past ``until - margin``."""
        return self.lapsed or self.clock() >= self.until - self.margin

    def due(self) -> bool:
        return self.clock() >= self.until - self.seconds * 2 / 3

    def renew(self) -> bool:
        """Renew in the store, then publish; False (and ``lapsed``) if it came too late."""
        with self._renewing:
            if self.expired():
                self.lapsed = True
                return False
            return self._renew()

    def restore(self) -> None:
        """Renew after a lapse, once the workers are stopped and their jobs handed back."""
        with self._renewing:
            self._renew()
            self.lapsed = False

    def _renew(self) -> bool:
        old = self.until
        now = self.clock()
        self.store.heartbeat(self.owner, lease=self.seconds, now=now)
        self._file.write(now + self.seconds)
        # a worker that read the old deadline may have stopped before this write
        on_time = self.clock() < old - self.margin
        if not on_time:
            self.lapsed = True
        self.until = now + self.seconds  # last: until then, expired() goes by the old one
        return on_time

    def start(self, alive: Callable[[], bool], on_lapse: Callable[[], None]) -> None:
        """Keep the lease from a thread while ``alive()``; ``on_lapse`` when it lapsed."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._keep, args=(alive, on_lapse),
                                        name="nbqueue-lease", daemon=True)
        self._thread.start()

    @property
    def kept(self) -> bool:
        """Whether a thread keeps it (else the dispatcher renews it in its steps)."""
        return self._thread is not None and self._thread.is_alive()

    def _keep(self, alive: Callable[[], bool], on_lapse: Callable[[], None]) -> None:
        wait = self._until_due()
        while not self._stop.wait(wait):
            if not alive():  # the dispatcher's thread died: let the lease run out
                return
            wait = min(self.margin, 1.0)
            if self.lapsed:  # until the dispatcher has stopped its workers and restored it
                continue
            if self.due():
                try:
                    if not self.renew():
                        on_lapse()
                        continue
                except Exception as exc:  # the store locked or failing: try again soon
                    log.warning("dispatcher %s: could not renew its lease: %s", self.owner, exc)
                    continue
            wait = self._until_due()

    def _until_due(self) -> float:
        return max(self.until - self.seconds * 2 / 3 - self.clock(), 0.0)

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(10.0)

    def close(self) -> None:
        self.stop()
        self._file.close()


class WorkerLease:
    """A local worker's view of its dispatcher's lease (``LeaseView``)."""

    def __init__(self, view: LeaseView) -> None:
        self.margin = view.margin
        self.every = min(view.margin / 4, 0.2)  # how often the worker's watchdog looks
        fd = os.open(view.path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, _FORMAT.size, prot=mmap.PROT_READ)
        finally:
            os.close(fd)

    def until(self) -> float:
        # read until two reads agree: a write may land between them, never in both
        value = _FORMAT.unpack_from(self._map)[0]
        while True:
            again = _FORMAT.unpack_from(self._map)[0]
            if again == value:
                return float(value)
            value = again

    def lapsed(self) -> bool:
        """Whether this worker must not run a job any more. The clock is read before the
        deadline: a worker that stops by a deadline since renewed read the clock before
        the renewal's write, and the renewal, which checks the clock after it, lapses too."""
        now = time.time()
        return now >= self.until() - self.margin
