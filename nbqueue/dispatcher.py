"""The dispatcher: a daemon thread that claims jobs, runs them in slots, commits outcomes.

One cycle (``step``) takes what ended in the slots, kills timed-out or cancelled jobs,
commits every outcome and claims new jobs in one transaction (a group commit), hands
claimed jobs to slots and writes live progress. While short jobs stream, the same
commit also claims a reserve for the slots' next turn: see docs/concepts.md, "Short
jobs". No transaction stays open while it waits, in one ``poll`` on its wake-up pipe
and the local workers' sockets. In-process submits wake it at once; changes by other
processes are noticed by polling SQLite's ``data_version``, which costs one tiny read.

A thread of its own renews its lease (``lease.Lease``), which its local workers watch:
a dispatcher that finds its lease lapsed (its process was stopped, or stuck) stops its
workers and hands their jobs back before anything else (``_fence``).
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
import time
import traceback
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import job as J
from .channel import ChannelServer
from .executors import (
    Slot,
    WorkerHub,
    WorkerLost,
    before_exit,
    channel_address,
    make_slots,
    not_before_exit,
)
from .housekeeping import Keeper
from .lease import Lease, lease_seconds
from .memory import supported as memory_supported
from .outputs import Delivery
from .runtime import Task
from .store import Owner, Store
from .store.faults import transient_cause
from .waiters import Waiters

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between cheap checks for changes made by other processes
LIVE_EVERY = 1.0  # progress and output are written about once a second
RECOVER_EVERY = 1.0
SHORT_JOB = 0.05  # a slot whose jobs take less than this gets one handed ahead
LINGER = 0.001  # while only short jobs run, a commit waits this long for companions
MARK_STARTED = 0.005  # a job started from the reserve is marked started within this
RETRY_FIRST, RETRY_MAX = 0.05, 5.0  # pauses between tries while the store fails
# what a slot reports when the process running a job died under it (loky; dask)
WORKER_DEATHS = frozenset({"WorkerLost", "KilledWorker"})
LAPSED = "its dispatcher stopped renewing its lease"  # why a fenced attempt runs again


@dataclass
class _Running:
    claimed: J.Claimed
    started: float | None  # None while handed ahead, behind another job


class Waker:
    """A wake-up flag that ``poll`` can watch beside the workers' connections: a pipe
    with at most one byte in it."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._pending = False
        weakref.finalize(self, _close_fds, self._read, self._write)

    def fileno(self) -> int:
        return self._read

    def set(self) -> None:
        if not self._pending:
            self._pending = True
            try:
                os.write(self._write, b"!")
            except (BlockingIOError, OSError):
                pass

    def clear(self) -> None:
        # read first, then reset: a set() in between is seen by the step that follows
        try:
            os.read(self._read, 64)
        except (BlockingIOError, OSError):
            pass
        self._pending = False


def _close_fds(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class Dispatcher:
    """Feeds a queue's jobs to worker slots. ``start()`` runs it in a daemon thread;
    tests may instead call ``step()`` themselves. ``lease``: seconds (default
    ``$NBQUEUE_LEASE``, else 30) another dispatcher waits before it takes over the jobs
    of one that stopped renewing its lease."""

    def __init__(self, store: Store, *, workers: int, executor: Any = None,
                 lease: float | None = None, prefetch: bool = True) -> None:
        self.store = store
        self.workers = workers
        self.executor = executor
        self.lease = lease_seconds(lease)
        self.prefetch = prefetch
        self.owner = str(Owner.current())
        self.error: str | None = None  # why the thread died (its traceback)
        self.store_error: str | None = None  # an error of the store it keeps retrying
        self._failing_since: float | None = None  # monotonic time of the first failure
        self._failures = 0
        self._failure_logged = 0.0
        self.waiters = Waiters()  # threads of this process waiting for jobs: told at commit
        self.idle = threading.Condition()  # notified when the slots have emptied
        self._wake = Waker()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots: list[Slot] = []
        self._running: list[deque[_Running]] = []
        self._ended: list[J.Outcome] = []  # collected from the slots, not yet committed
        # claimed here, not handed to a slot yet, each with its task packed for a slot
        self._reserve: deque[tuple[J.Claimed, Any]] = deque()
        self._lease: Lease | None = None  # created with the slots, whose workers watch it
        self._fenced = False  # the lease lapsed and the workers were stopped: see _fence
        self._poller = select.poll()  # the wake-up pipe and the slots' connections
        self._polled: set[int] = set()
        self._hub: WorkerHub | None = None
        self._channel: ChannelServer | None = None
        self._durations: dict[str, float] = {}
        self._maybe_ready = True
        self._data_version = self._cancel_version = self._version = -1
        # schedules (_fire): the earliest next firing as last read, at which data_version,
        # and when to look again at one that waits for the job of the firing before
        self._next_firing: float | None = None
        self._firing_version = -1
        self._firing_again = 0.0
        self._last_live = self._last_recover = 0.0
        self._started_ids: list[str] = []
        self._unstarted: list[J.Outcome] = []  # claimed, never handed to a slot: give back
        self._last_short = False  # the last job to finish was short: idle slots take two
        self._labels: dict[str, tuple[str, int]] = {}  # job id -> (name, attempt), for logs
        self._delivery = Delivery(store)  # outputs, in a thread of their own
        # retention and space, in a thread of its own
        self.keeper = Keeper(store, forgot=self.waiters.drop_ahead)
        self._memory_said = False  # see _say_memory

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the slots and the channel, register, and recover the queue."""
        if self._slots:
            return
        self.store.register_dispatcher(self.owner, workers=self.workers,
                                       executor="dask" if self.executor is not None else "loky")
        self.store.ensure_reserve()
        self.store.recover()
        bind, advertise = channel_address(self.executor)
        self._channel = ChannelServer(bind, advertise=advertise)
        if self.executor is None:
            self._hub = WorkerHub(self._wake.set)
        else:  # dask slots' loops arrive through the channel; one arriving may take jobs
            self._hub = WorkerHub(self.wake, listen=False)
            self._channel.on_worker = self._hub.arrive
        if self._lease is None:
            self._lease = Lease(self.store, self.owner, self.lease)
        if self.executor is not None:
            self._channel.on_ended = self._wake.set
        self._slots = make_slots(self.workers, self.executor, self._hub, self._wake.set,
                                 self._lease.view, self._channel)
        self._running = [deque() for _ in self._slots]

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.error = None
        self.open()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="nbqueue-dispatcher", daemon=True)
        self._thread.start()
        assert self._lease is not None
        # renewals never wait behind long work in the dispatcher's thread; they stop
        # once it died, and the workers then stop before its lease runs out
        self._lease.start(lambda: self.alive and not self._stopping.is_set(), self._wake.set)
        self.keeper.start()
        # At interpreter exit: hand running jobs back instead of leaving them to recovery
        # (which would count a death against each), and let loky's exit hook return.
        before_exit(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        self.stop(cause="its dispatcher's process exited")

    def stop(self, timeout: float | None = 10.0, *, cause: str = "its dispatcher stopped") -> None:
        """Stop the thread, hand running jobs back, stop the workers. ``cause`` is what
        the jobs' records say stopped their attempts ("the kernel restarted"); those
        attempts do not count against their retries."""
        not_before_exit(self._stop_at_exit)
        self._stopping.set()
        self._wake.set()
        self.keeper.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        self._hand_back(cause)
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        if self._hub is not None:
            self._hub.close()
            self._hub = None
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._delivery.close()
        self.waiters.wake_all()
        self._notify(self.idle)

    def _hand_back(self, cause: str) -> None:
        """Stop the workers and hand their jobs back to the queue (no attempt charged)."""
        if not self._slots:
            return
        # the workers first: a job handed back while its worker still ran could start
        # in another dispatcher meanwhile, and run twice at once
        for slot in self._slots:
            slot.shutdown()
        self._write_live_now()  # the output of the attempts stopped: kept in their logs
        try:
            self.store.release_owner(self.owner, cause=cause)
        except Exception:
            log.warning("dispatcher %s: could not release its jobs (they go back to ready when "
                        "their lease runs out)", self.owner, exc_info=True)
        self._slots, self._running, self._ended = [], [], []
        self._reserve.clear()
        self._labels.clear()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Something changed in this process (a submit, an approval): look now."""
        self._maybe_ready = True
        self._wake.set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.step()
                except Exception as exc:
                    if transient_cause(exc) is None:
                        raise
                    self._store_failed(exc)  # nothing of the cycle was stored: try again
                    continue
                self._store_works()
                self._wait(self._timeout())
                self._wake.clear()
                self._linger()
        except BaseException as exc:  # noqa: B036 - recorded for status(), panels and the CLI
            self.error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("dispatcher %s died: %s", self.owner, exc)
            # its jobs must not stay running in a process that lives on
            self._hand_back(f"its dispatcher failed ({type(exc).__name__})")
            try:
                self.store.dispatcher_failed(self.owner, self.error)
            except Exception:
                pass
            self.waiters.wake_all()
            self._notify(self.idle)

    def _store_failed(self, exc: BaseException) -> None:
        """A cycle met an error of the store that may pass (a full disk, an I/O error, a
        lock held too long): its outcomes stay here, and the next cycles settle them one
        per transaction (``_settle_apart``) after a pause that grows to ``RETRY_MAX``."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._failures = 0
        self._failures += 1
        self.store_error = str(exc)
        if self._failures == 1 or now - self._failure_logged > 30.0:
            self._failure_logged = now
            log.warning("dispatcher %s: the store failed (%s); %d outcome(s) held, trying again "
                        "for %.0fs so far", self.owner, exc, len(self._ended),
                        now - self._failing_since)
        self._stopping.wait(min(RETRY_FIRST * 2 ** (self._failures - 1), RETRY_MAX))

    def _store_works(self) -> None:
        if self._failing_since is not None:
            log.warning("dispatcher %s: the store works again after %.1fs", self.owner,
                        time.monotonic() - self._failing_since)
            self._failing_since = None
            self.store_error = None

    def _wait(self, timeout: float) -> None:
        """Until something ends in a slot, something wakes us, or ``timeout`` passes."""
        fds = {self._wake.fileno()}
        for slot in self._slots:
            waitable = slot.waitable()
            if waitable is not None:
                fds.add(waitable.fileno())
        if fds != self._polled:  # a slot (re)connected or was killed
            self._poller = select.poll()
            for fd in fds:
                self._poller.register(fd, select.POLLIN)
            self._polled = fds
        self._poller.poll(max(timeout, 0.0) * 1000.0)

    def _linger(self) -> None:
        """Group commit: while every busy slot runs a job known to be short, wait up to
        ``LINGER`` for the other jobs in the slots, so that one commit settles them all."""
        if not (self.prefetch and self.executor is None):
            return
        deadline = time.monotonic() + LINGER
        while not self._stopping.is_set():
            self._gather(time.time())
            heads = [queue[0] for queue in self._running if queue]
            if not heads or not all(self._short(head) for head in heads):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wait(left)

    def _short(self, entry: _Running) -> bool:
        # a map's chunk is never short: none waits behind it, so that a crash redoes at
        # most one chunk per worker
        return (entry.claimed.kind != J.CHUNK
                and self._durations.get(entry.claimed.function.id, 1.0) < SHORT_JOB)

    def _timeout(self) -> float:
        # a job that started from the reserve is marked so within MARK_STARTED, unless
        # its outcome comes first (then no mark is needed)
        timeout = MARK_STARTED if self._started_ids else POLL
        if self._lease is not None and self._lease.expired():
            return 0.0  # fence at once
        if self._reserve:  # short jobs stream: look for outcomes to settle every LINGER
            timeout = min(timeout, LINGER)
        now = time.time()
        for queue in self._running:
            if queue and queue[0].started is not None and queue[0].claimed.options.timeout:
                deadline = queue[0].started + queue[0].claimed.options.timeout
                timeout = min(timeout, max(deadline - now, 0.0))
        return timeout

    # -- one cycle ----------------------------------------------------------------------------

    def step(self, now: float | None = None) -> int:
        """One dispatch cycle; returns how many outcomes and claims it committed."""
        if not self._slots:
            self.open()
        now = time.time() if now is None else now
        assert self._lease is not None
        if self._fenced or self._lease.expired():
            self._fence(now)
        # changes by other processes (SQLite's data_version): read once per cycle
        self._version = self.store.data_version()
        if self._failing_since is None:
            self._fire(now)
        self._gather(now)
        enforced = self._enforce(now)  # first: a read that fails here loses no outcome
        outcomes, self._ended = self._ended, []
        outcomes += enforced
        self._trim_reserve()
        outcomes += self._unstarted
        self._unstarted = []
        if self._failing_since is not None:  # the store failed lately: see _store_failed
            return self._step_failing(outcomes, now)
        # what the slots take now and the reserve cannot give, then what keeps the reserve
        # full for their next turn (left behind by the hand-out, packed meanwhile)
        capacity = self._capacity()
        want = max(capacity - len(self._reserve), 0)
        claim = want if want and (outcomes or self._should_claim(now)) else 0
        target = self._reserve_target()
        if target and (claim or outcomes or self._should_claim(now)):
            claim += max(target - max(len(self._reserve) - capacity, 0), 0)
        # the first go to idle slots and start now (marked started in this commit); the
        # others wait in the reserve or behind a running job
        idle = sum(1 for queue, slot in zip(self._running, self._slots, strict=True)
                   if not queue and slot.available())
        handed = claim - min(claim, max(idle - len(self._reserve), 0))
        count = 0
        applied: list[bool] = []
        if outcomes or claim or self._started_ids:
            started, self._started_ids = self._started_ids, []
            if started and outcomes:  # a job that ended needs no mark that it started
                ended = {o.id for o in outcomes}
                started = [job_id for job_id in started if job_id not in ended]
            try:
                applied, claimed = self.store.complete(self.owner, outcomes, claim=claim,
                                                       lease=self.lease, handed=handed,
                                                       started=started, now=now)
            except BaseException:
                # nothing of it was stored: its outcomes and marks wait for the next try
                self._ended[:0] = outcomes
                self._started_ids[:0] = started
                self._maybe_ready = True
                raise
            if claim:
                self._maybe_ready = len(claimed) == claim
            self._reserve.extend((c, None) for c in claimed)
            count = len(outcomes) + len(claimed)
        self._hand_out(now)
        if outcomes:
            self.waiters.committed(outcomes, applied)
            self._log_outcomes(outcomes)
        self._housekeeping(now)
        self._pack_reserve()
        if count and not self.busy():
            self._notify(self.idle)
        return count

    def _fire(self, now: float) -> None:
        """Make the jobs of the schedules' firings that came due (store/schedules.py). The
        earliest next firing is read again only when another process committed (or after
        a firing here): a queue without schedules pays one read per change, no lock."""
        if self._version != self._firing_version:
            self._firing_version = self._version
            self._next_firing = self.store.next_firing()
            self._firing_again = 0.0
        due = self._next_firing
        if due is None or due > now or now < self._firing_again:
            return
        made = self.store.fire_schedules(now)
        if made:
            self._maybe_ready = True
        self._next_firing = self.store.next_firing()
        if not made and self._next_firing is not None and self._next_firing <= now:
            # a firing waits for the job of the one before (overlap=False, catch_up="all"):
            # look again in a second, or at the next change
            self._firing_again = now + 1.0

    def _step_failing(self, outcomes: list[J.Outcome], now: float) -> int:
        """A cycle while the store fails: each outcome is settled in a transaction of its
        own (``_settle_apart``), nothing is claimed, leases are still renewed. Raises the
        store's error while an outcome is still held, else the next cycle is a normal one."""
        stored, error = self._settle_apart(outcomes, now)
        self._hand_out(now)
        if stored:
            self.waiters.committed(stored, None)
            self._log_outcomes(stored)
        try:
            self._housekeeping(now)
        except Exception as exc:
            if transient_cause(exc) is None:
                raise
            error = error or exc
        if error is not None:
            raise error
        self._maybe_ready = True  # nothing was claimed meanwhile: look at once
        if stored and not self.busy():
            self._notify(self.idle)
        return len(stored)

    def _settle_apart(self, outcomes: list[J.Outcome],
                      now: float) -> tuple[list[J.Outcome], BaseException | None]:
        """Settle each outcome in a transaction of its own, so that one that cannot be
        stored (a large result on a full disk) holds back no other. Those that fail stay
        in ``_ended``; returns those stored and the last error of the store."""
        stored, held, error = [], [], None
        ended = {o.id for o in outcomes}
        started = [job_id for job_id in self._started_ids if job_id not in ended]
        self._started_ids = []
        for outcome in outcomes:
            try:
                self.store.complete(self.owner, [outcome], lease=self.lease, now=now)
            except Exception as exc:
                if transient_cause(exc) is None:
                    raise
                held.append(outcome)
                error = exc
            else:
                stored.append(outcome)
        if started:
            try:
                self.store.complete(self.owner, [], started=started, now=now)
            except Exception as exc:
                if transient_cause(exc) is None:
                    raise
                self._started_ids[:0] = started
                error = error or exc
        self._ended[:0] = held
        return stored, error

    def _fence(self, now: float) -> None:
        """The lease lapsed (this process was stopped or stuck, or the store kept it from
        renewing in time): the local workers stopped their jobs, or are about to, and
        another dispatcher may take them over. Before anything else: make sure every
        worker is dead (and a dask task interrupted), commit only what had ended before
        (each outcome fenced by its claim), hand every other job back (no attempt
        charged, no death), then renew the lease."""
        assert self._lease is not None
        if not self._fenced:
            log.warning("dispatcher %s: its lease of %gs ran out (its process was stopped or "
                        "stuck); stopping its workers and handing their jobs back",
                        self.owner, self.lease)
            self._gather(now, lapsed=True)
            for slot in self._slots:
                slot.kill()
            for queue in self._running:
                for entry in queue:
                    self._labels.pop(entry.claimed.id, None)
                queue.clear()
            self._reserve.clear()  # back to ready below, as never claimed
            self._unstarted = []
            self._fenced = True
        outcomes, self._ended = self._ended, []
        started, self._started_ids = self._started_ids, []
        try:
            if outcomes or started:
                self.store.complete(self.owner, outcomes, started=started, now=now)
            self._write_live_now()  # the output of the attempts stopped: kept in their logs
            self.store.release_owner(self.owner, cause=LAPSED, stopped=False)
            self._lease.restore()
        except BaseException:
            self._ended[:0] = outcomes  # settled again: those stored already are fenced out
            self._started_ids[:0] = started
            raise
        self._fenced = False
        self._maybe_ready = True
        if outcomes:
            self.waiters.committed(outcomes, None)
            self._log_outcomes(outcomes)

    @staticmethod
    def _notify(condition: threading.Condition) -> None:
        with condition:
            condition.notify_all()

    def _reserve_target(self) -> int:
        """How many claimed jobs to keep here for the slots' next turn: two per slot while
        jobs are short, else none. The reserve is claimed and marked handed ahead (a crash
        gives it back without using an attempt), and a job in it goes to a worker only
        after the outcomes it follows there are committed."""
        if not (self._last_short and self._reserve_useful()):
            return 0
        return 2 * len(self._slots)

    def _trim_reserve(self) -> None:
        """Give the reserve back (with the next commit) once it would wait: a slot took a
        job not known to be short."""
        if self._reserve and not self._reserve_useful():
            self._unstarted += [J.Outcome(c.id, c.claim, "released") for c, _ in self._reserve]
            self._reserve.clear()

    def _pack(self, claimed: J.Claimed) -> Any:
        assert self._channel is not None
        c = claimed
        if c.options.memory is not None and not self._memory_said:
            self._say_memory()
        return self._slots[0].pack(Task(c.id, c.claim, c.name, c.function, c.args,
                                        c.ref_results, c.journal, self._channel.endpoint,
                                        c.options.memory, c.kind))

    def _say_memory(self) -> None:
        """Once: where ``memory=`` cannot be enforced (docs/constraints.md, "Memory")."""
        self._memory_said = True
        if self.executor is not None:
            log.warning("dispatcher %s: jobs with memory= run on dask without their limit: a "
                        "dask worker's process runs many jobs in threads, so nbqueue cannot "
                        "tell one job's memory; set the dask workers' memory_limit instead",
                        self.owner)
        elif not memory_supported():
            log.warning("dispatcher %s: jobs with memory= run without their limit: this "
                        "system has no /proc to read their memory from", self.owner)

    def _pack_reserve(self) -> None:
        """Pack the reserve's tasks while the workers run: off the path of the next commit."""
        for i, (claimed, packed) in enumerate(self._reserve):
            if packed is None:
                self._reserve[i] = (claimed, self._pack(claimed))

    def _reserve_useful(self) -> bool:
        """Whether claimed jobs waiting here will go out soon: every busy slot runs a job
        known to be short."""
        if not (self.prefetch and self.executor is None):
            return False
        return all(self._short(queue[0]) for queue in self._running if queue)

    def _log_outcomes(self, outcomes: list[J.Outcome]) -> None:
        # at INFO: a headless worker shows job ends (the library configures no logging)
        if not log.isEnabledFor(logging.INFO):
            for outcome in outcomes:
                self._labels.pop(outcome.id, None)
            return
        for outcome in outcomes:
            name, attempt = self._labels.pop(outcome.id, ("?", 0))
            if outcome.kind == "failed" and outcome.error is not None:
                log.info("job %s (%s) attempt %d failed: %s: %s", outcome.id, name, attempt,
                         outcome.error.exc_type, outcome.error.exc_value)
            elif outcome.kind == "yielded":
                log.info("job %s (%s) waits for its children", outcome.id, name)
            elif outcome.kind != "released":
                log.info("job %s (%s) %s", outcome.id, name, outcome.kind)

    def _should_claim(self, now: float) -> bool:
        version = self._version
        if version != self._data_version:
            self._data_version = version
            self._maybe_ready = True
        if self._maybe_ready:
            self._maybe_ready = False
            return True
        due = self.store.next_due()
        return due is not None and due <= now

    def _capacity(self) -> int:
        """How many jobs the slots can take now. A slot takes one to start; while jobs are
        short (see ``SHORT_JOB``), it also takes one handed ahead, behind it (a worker,
        or a dask slot's loop, starts it as the first ends). A slot that is not
        ``available`` (a dask slot whose loop waits for a thread) takes none."""
        ahead = self.prefetch
        capacity = 0
        for queue, slot in zip(self._running, self._slots, strict=True):
            if not slot.available():
                continue
            if not queue:
                capacity += 1 + (ahead and self._last_short)
            elif ahead and len(queue) == 1 and self._short(queue[0]):
                capacity += 1
        return capacity

    def _hand_out(self, now: float) -> None:
        """Give reserved jobs to slots with room, oldest first (none once the lease lapsed:
        the next step fences)."""
        if self._lease is not None and self._lease.expired():
            return
        while self._reserve:
            index = self._pick_slot()
            if index is None:
                break
            entry, packed = self._reserve.popleft()
            self._slots[index].submit(packed if packed is not None else self._pack(entry))
            queue = self._running[index]
            if queue:
                queue.append(_Running(entry, None))
            else:
                queue.append(_Running(entry, now))
                if entry.handed:  # not marked started by its claim
                    self._started_ids.append(entry.id)
            self._labels[entry.id] = (entry.name, entry.attempt)
        for slot in self._slots:  # also when none was handed: dask releases what it read
            slot.flush()

    def _pick_slot(self) -> int | None:
        """An idle slot; else, for a job handed ahead, the slot whose short job ends
        soonest; else None. Only slots that are ``available``."""
        for i, queue in enumerate(self._running):
            if not queue and self._slots[i].available():
                return i
        if not self.prefetch:
            return None
        candidates = [i for i, queue in enumerate(self._running)
                      if len(queue) == 1 and self._short(queue[0]) and self._slots[i].available()]
        if not candidates:
            return None
        return min(candidates, key=lambda i: self._durations.get(
            self._running[i][0].claimed.function.id, 1.0))

    def _gather(self, now: float, *, lapsed: bool = False) -> None:
        """Take what ended in the slots, in order per slot, into ``_ended``. Once the lease
        lapsed, only ``_fence`` does (``lapsed``): a worker that died then stopped itself
        for the lease, which is no death of its job."""
        if not lapsed and self._lease is not None and self._lease.expired():
            return
        for index, slot in enumerate(self._slots):
            queue = self._running[index]
            for ended in slot.collect():
                if not queue:  # a slot killed meanwhile reports nothing more of its own
                    break
                if lapsed and isinstance(ended, BaseException):
                    break  # its job, and those behind it, go back in _fence
                head = queue.popleft()
                if isinstance(ended, BaseException):
                    # the worker died (a death: the job runs again, up to POISON_DEATHS),
                    # or dask lost the task (a failure)
                    claimed = head.claimed
                    kind = type(ended).__name__
                    if kind in WORKER_DEATHS and not self._ran(head, ended):
                        self._ended.append(J.Outcome(claimed.id, claimed.claim, "released"))
                    elif kind in WORKER_DEATHS:
                        self._ended.append(J.Outcome(claimed.id, claimed.claim, "died",
                                                     error=J.RemoteError(kind, _how(ended))))
                    else:
                        self._ended.append(J.Outcome(
                            claimed.id, claimed.claim, "failed", error=J.RemoteError(
                                kind, f"worker process died while running job {claimed.id} "
                                      f"({ended or 'no details'})")))
                    if self._channel is not None:
                        self._channel.discard(claimed.id)
                    if isinstance(ended, WorkerLost):
                        self._ended += self._release_rest(index)
                        slot.kill()
                        break
                    if queue:
                        queue[0].started = now
                        self._started_ids.append(queue[0].claimed.id)
                    continue
                if self._channel is not None:
                    self._channel.discard(head.claimed.id)
                if ended.kind != "released":  # (a dask slot gives back what did not start)
                    self._note_duration(head, now, ended)
                self._ended.append(ended)
                if ended.worker_ended:  # it stopped its job (over its memory limit) and died
                    self._ended += self._release_rest(index)
                    slot.kill()
                    break
                if queue:
                    queue[0].started = now
                    self._started_ids.append(queue[0].claimed.id)

    def _ran(self, entry: _Running, death: BaseException) -> bool:
        """Whether a job whose worker died had started there. A local worker runs the job
        it reports for. A dask worker that dies fails every task it held, also one that
        waited behind the running one: each dask task says over the live channel when its
        job starts. Until any has (a cluster that cannot reach the channel), the oldest
        job of a slot counts as started, so that one that keeps killing its worker is
        still stopped as poisoned."""
        if isinstance(death, WorkerLost) or self._channel is None:
            return True
        if self._channel.starts_seen:
            return self._channel.started(entry.claimed.id, entry.claimed.claim)
        return entry.started is not None

    def _release_rest(self, index: int) -> list[J.Outcome]:
        """Jobs handed ahead behind a killed one never started: they go back."""
        queue = self._running[index]
        out = [J.Outcome(r.claimed.id, r.claimed.claim, "released") for r in queue]
        queue.clear()
        return out

    def _note_duration(self, entry: _Running, now: float, outcome: J.Outcome) -> None:
        if entry.claimed.kind == J.CHUNK:
            self._last_short = False
            return
        if entry.started is None:
            return
        started = entry.started
        if (self.executor is not None and outcome.started is not None
                and started < outcome.started <= now):
            # when its worker started it (a clock that agrees with ours): the time a dask
            # task waited in the client's and the scheduler's queues is not the job's. A
            # local slot keeps counting from the hand-out, its worker's start-up included:
            # a function that returned at once after a worker died (a rerun that finds its
            # work done) is not taken for short, so no job is handed ahead behind its next
            # call, which may block (tests/test_orphans.py)
            started = outcome.started
        key = entry.claimed.function.id
        took = now - started
        old = self._durations.get(key)
        self._durations[key] = took if old is None else 0.8 * old + 0.2 * took
        self._last_short = took < SHORT_JOB
        if len(self._durations) > 1024:
            self._durations.clear()

    def _enforce(self, now: float) -> list[J.Outcome]:
        """Kill jobs past their timeout, and running jobs someone cancelled."""
        outcomes: list[J.Outcome] = []
        cancelled: set[str] = set()
        if self._reserve or any(self._running):
            version = self._version
            if version != self._cancel_version:
                self._cancel_version = version
                cancelled = set(self.store.cancel_requests(self.owner))
        if cancelled and self._reserve:
            for kept in [r for r in self._reserve if r[0].id in cancelled]:
                self._reserve.remove(kept)
                outcomes.append(J.Outcome(kept[0].id, kept[0].claim, "cancelled"))
        for index, queue in enumerate(self._running):
            if not queue:
                continue
            slot = self._slots[index]
            # a dask task stops alone: a cancel reaches a job handed ahead at once
            hits = [(i, outcome) for i in range(len(queue) if slot.stops_alone else 1)
                    if (outcome := self._stopping_outcome(queue[i], cancelled, now))]
            if not hits:
                continue
            outcomes += [outcome for _, outcome in hits]
            head = queue[0]
            if not slot.stop([i for i, _ in hits]):
                queue.popleft()
                outcomes += self._release_rest(index)
                continue
            for i, _ in reversed(hits):
                if self._channel is not None:
                    self._channel.discard(queue[i].claimed.id)
                del queue[i]
            if queue and queue[0] is not head:  # the job handed ahead is the oldest now
                queue[0].started = now
                self._started_ids.append(queue[0].claimed.id)
        return outcomes

    def _stopping_outcome(self, entry: _Running, cancelled: set[str],
                          now: float) -> J.Outcome | None:
        """The outcome of a job to stop now (cancelled, or past its timeout), else None."""
        claimed, options = entry.claimed, entry.claimed.options
        if claimed.id in cancelled:
            return J.Outcome(claimed.id, claimed.claim, "cancelled")
        if options.timeout and entry.started is not None and now - entry.started > options.timeout:
            return J.Outcome(claimed.id, claimed.claim, "failed", error=J.RemoteError(
                "TimeoutError", f"{_what(claimed)} ran longer than its timeout of "
                f"{options.timeout:g}s; " + ("its worker process was killed"
                                             if self.executor is None else
                                             "its dask task was cancelled and interrupted")))
        return None

    def _housekeeping(self, now: float) -> None:
        lease = self._lease
        if lease is not None and lease.due() and not lease.kept:  # driven by step() alone
            lease.renew()  # a lapse is fenced at the next step
        if now - self._last_live > LIVE_EVERY and self._channel is not None:
            self._last_live = now
            progress, logs = self._channel.drain()
            if progress or logs:
                self.store.write_live(progress, logs)
        if now - self._last_recover > RECOVER_EVERY:
            self._last_recover = now
            if self.store.recover(now):
                self._maybe_ready = True
            if self._failing_since is None:  # room goes to held outcomes first
                self.store.ensure_reserve()
            # review deadlines and reminders that came due, in this process or while
            # nothing served the queue (store/gates.py); then, idle, the drained event
            if self.store.gate_timers(now):
                self._maybe_ready = True
            if not self.busy() and not self._reserve:
                self.store.note_drained(now)
        self._delivery.poke(now)

    def _write_live_now(self) -> None:
        """Write what the channel gathered since the last write (a stop must not lose it)."""
        if self._channel is None:
            return
        try:
            progress, logs = self._channel.drain()
            if progress or logs:
                self.store.write_live(progress, logs)
        except Exception:
            log.warning("dispatcher %s: could not write the last output of its jobs", self.owner,
                        exc_info=True)

    def busy(self) -> int:
        """How many jobs this dispatcher has in its slots."""
        return sum(len(q) for q in self._running)


def _what(claimed: J.Claimed) -> str:
    # a chunk that has a timeout holds one item (mapjobs.build_map)
    return "this item of a map" if claimed.kind == J.CHUNK else f"job {claimed.id}"


_EXIT_CODES = re.compile(r"exit codes? of the workers? (?:is|are) \{([^}]*)\}")


def _how(death: BaseException) -> str:
    """How a worker died, in a few words: "SIGKILL(-9)", "EXIT(3)", "on a dask worker"."""
    text = str(death)
    found = _EXIT_CODES.search(text)
    if found:
        return found.group(1)
    if type(death).__name__ == "KilledWorker":
        return "on a dask worker"
    return text.splitlines()[0][:120] if text else ""
