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
workers and hands their jobs back before anything else (``dispatch.fence``).

The state of a cycle lives in parts that own it (``nbqueue.dispatch``): the slots and
what runs in each, the reserve of jobs claimed ahead, the enforcement of timeouts and
cancels, the lease's fence and the outcomes held while the store fails. The dispatcher
keeps the cycle, when to claim, the schedules' firings, housekeeping and the lifecycle.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from . import job as J
from .channel import ChannelServer
from .dispatch.enforce import Enforcer
from .dispatch.failures import StoreFailures
from .dispatch.fence import Fence
from .dispatch.firings import Firings
from .dispatch.reserve import Reserve
from .dispatch.slots import Slots
from .executors import (
    LokySlot,
    Slot,
    WorkerHub,
    before_exit,
    channel_address,
    no_scheduler_retries,
    not_before_exit,
)
from .housekeeping import Keeper
from .lease import Lease, LeaseView, lease_seconds
from .outputs import Delivery
from .store import Owner, Store
from .store.faults import transient_cause
from .waiters import Waiters

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between cheap checks for changes made by other processes
LIVE_EVERY = 1.0  # progress and output are written about once a second
RECOVER_EVERY = 1.0
LINGER = 0.001  # while only short jobs run, a commit waits this long for companions
MARK_STARTED = 0.005  # a job started from the reserve is marked started within this
CHECKPOINT_EVERY = 100  # stream commits between checkpoints of the log (~1,000 pages)
REFILL_TURNS = 4  # the reserve's refill claims this many turns of the slots at once


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
    of one that stopped renewing its lease.

    For tests that step it on a fake clock: ``slots`` makes its ``workers`` slots instead
    of worker processes (``dispatch.inprocess.InProcessSlot.make``), and ``clock`` is
    what it reads the time with (default ``time.time``: ``step()`` without ``now``, its
    lease, its pauses while the store fails)."""

    def __init__(self, store: Store, *, workers: int, executor: Any = None,
                 lease: float | None = None, prefetch: bool = True,
                 slots: Callable[[int], list[Slot]] | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.workers = workers
        self.executor = executor
        self.lease = lease_seconds(lease)
        self.prefetch = prefetch
        self.owner = str(Owner.current())
        self.clock = clock or time.time
        self.error: str | None = None  # why the thread died (its traceback)
        self.waiters = Waiters()  # threads of this process waiting for jobs: told at commit
        self.idle = threading.Condition()  # notified when the slots have emptied
        dask = executor is not None
        # the parts of a cycle (nbqueue/dispatch/), each with its own state
        self.slots = Slots(prefetch=prefetch, dask=dask)
        self.reserve = Reserve(self.slots, self.owner, prefetch=prefetch, dask=dask)
        self.enforcer = Enforcer(store, self.owner, self.slots, self.reserve)
        self.fence = Fence(store, self.owner, self.slots, self.reserve, self._write_live_now)
        self.failures = StoreFailures(store, self.owner, self.slots, clock=clock)
        self.firings = Firings(store, self._may_be_ready)
        self._make_slots = slots
        self._wake = Waker()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lease: Lease | None = None  # created with the slots, whose workers watch it
        self._poller = select.poll()  # the wake-up pipe and the slots' connections
        self._polled: set[int] = set()
        self._hub: WorkerHub | None = None
        self._channel: ChannelServer | None = None
        self._maybe_ready = True
        self._data_version = self._version = -1
        self._commit_version: int | None = None  # data_version read by the last cycle's commit
        self._last_live = self._last_recover = 0.0
        self._unchecked = 0  # commits since the last checkpoint of the write-ahead log
        self._delivery = Delivery(store)  # outputs, in a thread of their own
        # retention and space, in a thread of its own
        self.keeper = Keeper(store, forgot=self.waiters.drop_ahead)

    @property
    def store_error(self) -> str | None:
        """An error of the store it keeps retrying (None: the store works)."""
        return self.failures.error

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the slots and the channel, register, and recover the queue."""
        if self.slots.slots:
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
            self._lease = Lease(self.store, self.owner, self.lease, clock=self.clock)
        if self.executor is not None:
            self._channel.on_ended = self._wake.set
        if self._make_slots is not None:
            made = self._make_slots(self.workers)
        else:
            made = make_slots(self.workers, self.executor, self._hub, self._wake.set,
                              self._lease.view, self._channel)
        self.slots.open(made, self._channel)

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
        if not self.slots.slots:
            return
        # the workers first: a job handed back while its worker still ran could start
        # in another dispatcher meanwhile, and run twice at once
        for slot in self.slots.slots:
            slot.shutdown()
        self._write_live_now()  # the output of the attempts stopped: kept in their logs
        try:
            self.store.release_owner(self.owner, cause=cause)
        except Exception:
            log.warning("dispatcher %s: could not release its jobs (they go back to ready when "
                        "their lease runs out)", self.owner, exc_info=True)
        self.slots.close()
        self.reserve.clear()

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

    def busy(self) -> int:
        """How many jobs this dispatcher has in its slots."""
        return self.slots.busy()

    def _run(self) -> None:
        try:
            # checkpoints of the log between cycles, not inside a commit (see _housekeeping)
            self.store.own_checkpoints()
            while not self._stopping.is_set():
                pause = self.cycle()
                if pause is not None:  # the store failed: try again after a pause
                    self._stopping.wait(pause)
                    continue
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

    def cycle(self, now: float | None = None) -> float | None:
        """One ``step`` as the dispatcher's thread runs it: an error of the store that may
        pass is noted (``failures``: nothing of the cycle was stored, its outcomes are
        held) rather than raised. Returns how long to pause before the next try, else
        None."""
        try:
            self.step(now)
        except Exception as exc:
            if transient_cause(exc) is None:
                raise
            return self.failures.failed(exc)
        self.failures.works()
        return None

    # -- waiting between cycles -------------------------------------------------------------

    def _wait(self, timeout: float) -> None:
        """Until something ends in a slot, something wakes us, or ``timeout`` passes."""
        fds = {self._wake.fileno()}
        for slot in self.slots.slots:
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
        if not self.reserve.streams:
            return
        slots = self.slots
        deadline = time.monotonic() + LINGER
        while not self._stopping.is_set():
            self._gather(self.clock())
            heads = [queue[0] for queue in slots.running if queue]
            if not heads or not all(slots.short(head) for head in heads):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wait(left)

    def _timeout(self) -> float:
        # a job that started from the reserve is marked so within MARK_STARTED, unless
        # its outcome comes first (then no mark is needed)
        timeout = MARK_STARTED if self.slots.started else POLL
        if self._lease is not None and self._lease.expired():
            return 0.0  # fence at once
        if self.reserve.jobs:  # short jobs stream: look for outcomes to settle every LINGER
            timeout = min(timeout, LINGER)
        now = self.clock()
        for queue in self.slots.running:
            if queue and queue[0].started is not None and queue[0].claimed.options.timeout:
                deadline = queue[0].started + queue[0].claimed.options.timeout
                timeout = min(timeout, max(deadline - now, 0.0))
        return timeout

    # -- one cycle ----------------------------------------------------------------------------

    def step(self, now: float | None = None) -> int:
        """One dispatch cycle; returns how many outcomes and claims it committed."""
        slots, reserve = self.slots, self.reserve
        if not slots.slots:
            self.open()
        now = self.clock() if now is None else now
        lease = self._lease
        assert lease is not None
        if self.fence.fenced or lease.expired():
            self._fence(lease, now)
        # changes by other processes (SQLite's data_version): once per cycle, as the last
        # cycle's commit read it (at most a cycle old: a commit by another process is seen
        # a cycle later), else read now
        version, self._commit_version = self._commit_version, None
        self._version = version if version is not None else self.store.data_version()
        if self.failures.since is None:
            self.firings.fire(now, self._version)
        self._gather(now)
        enforced = self.enforcer.enforce(now, self._version)  # first: a failed read loses nothing
        outcomes, slots.ended = slots.ended, []
        outcomes += enforced
        reserve.trim()
        outcomes += reserve.unstarted
        reserve.unstarted = []
        if self.failures.since is not None:  # the store failed lately: see dispatch/failures.py
            return self._step_failing(outcomes, now)
        claim, ahead, refill = self._claims(outcomes, now)
        applied: list[bool]
        count, applied = 0, []  # applied: which outcomes took effect
        if outcomes or claim or slots.started:
            count, applied = self._commit(outcomes, claim, ahead, now)
        self._hand_out(now)
        if refill and not (self._lease is not None and self._lease.expired()):
            count += self._refill(refill, now)
        if outcomes:
            self.waiters.committed(outcomes, applied)
            self._log_outcomes(outcomes)
        self._housekeeping(now)
        reserve.pack_all()
        if count and not slots.busy():
            self._notify(self.idle)
        return count

    def _claims(self, outcomes: list[J.Outcome], now: float) -> tuple[int, int, int]:
        """How many jobs this cycle's commit claims, how many of them are handed ahead,
        and how many the reserve's refill claims after the hand-out: the commit claims
        what the slots take now and the reserve cannot give (the first go to idle slots
        and start now, marked started in the commit; the others wait behind a running
        job); the refill, once the reserve keeps less than the slots' next turn after the
        hand-out, ``REFILL_TURNS`` turns (packed while the workers run): one claim
        transaction in several cycles instead of one in each, which writes the pages it
        shares with its neighbours (index pages, counts) once instead of in every cycle."""
        slots, reserved = self.slots, len(self.reserve.jobs)
        capacity = slots.capacity()
        want = max(capacity - reserved, 0)
        target = self.reserve.target()
        left = max(reserved - capacity, 0)  # what the reserve keeps after the hand-out
        running_low = bool(target) and left < target
        # asked once: it may read the store (next_due) and takes the "may be ready" flag
        due = bool(outcomes) or bool((want or running_low) and self._should_claim(now))
        claim = want if due else 0
        refill = REFILL_TURNS * target - left if running_low and due else 0
        ahead = claim - min(claim, max(slots.idle() - reserved, 0))
        return claim, ahead, refill

    def _refill(self, n: int, now: float) -> int:
        """Claim the reserve's jobs for the slots' next turn, after the hand-out, in a
        short transaction of their own (no fsync): the hand-out never waits for them."""
        claimed = self.store.claim(self.owner, n, lease=self.lease, ahead=n, now=now)
        self._maybe_ready = len(claimed) == n
        self.reserve.jobs.extend((c, None) for c in claimed)
        self._unchecked += 1
        return len(claimed)

    def _commit(self, outcomes: list[J.Outcome], claim: int, ahead: int,
                now: float) -> tuple[int, list[bool]]:
        """Commit ``outcomes`` and the marks of jobs started, and claim up to ``claim`` jobs
        for the slots (the last ``ahead`` of them handed ahead), in one transaction.
        Returns how many outcomes and claims it committed, and which outcomes took
        effect."""
        slots = self.slots
        started, slots.started = slots.started, []
        if started and outcomes:  # a job that ended needs no mark that it started
            ended = {o.id for o in outcomes}
            started = [job_id for job_id in started if job_id not in ended]
        try:
            applied, claimed = self.store.complete(self.owner, outcomes, claim_up_to=claim,
                                                   lease=self.lease, ahead=ahead,
                                                   started=started, now=now)
        except BaseException:
            # nothing of it was stored: its outcomes and marks wait for the next try
            slots.ended[:0] = outcomes
            slots.started[:0] = started
            self._maybe_ready = True
            raise
        self._commit_version = self.store.seen_version
        self._unchecked += 1
        if claim:
            self._maybe_ready = len(claimed) == claim
        self.reserve.jobs.extend((c, None) for c in claimed)
        return len(outcomes) + len(claimed), applied

    def _gather(self, now: float) -> None:
        """Take what ended in the slots (once the lease lapsed, only the fence does)."""
        if self._lease is not None and self._lease.expired():
            return
        self.slots.gather(now)

    def _hand_out(self, now: float) -> None:
        """Give reserved jobs to slots with room (none once the lease lapsed: the next
        step fences)."""
        if self._lease is not None and self._lease.expired():
            return
        self.slots.hand_out(self.reserve, now)

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

    def _may_be_ready(self) -> None:
        self._maybe_ready = True

    def _fence(self, lease: Lease, now: float) -> None:
        """The lease lapsed: stop the slots and hand their jobs back (``dispatch.fence``)."""
        outcomes = self.fence.fence(lease, now)
        self._maybe_ready = True
        if outcomes:
            self.waiters.committed(outcomes, None)
            self._log_outcomes(outcomes)

    def _step_failing(self, outcomes: list[J.Outcome], now: float) -> int:
        """A cycle while the store fails: each outcome is settled in a transaction of its
        own (``StoreFailures.settle_apart``), nothing is claimed, leases are still renewed.
        Raises the store's error while an outcome is still held, else the next cycle is a
        normal one."""
        stored, error = self.failures.settle_apart(outcomes, self.lease, now)
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
        if stored and not self.slots.busy():
            self._notify(self.idle)
        return len(stored)

    def _log_outcomes(self, outcomes: list[J.Outcome]) -> None:
        # at INFO: a headless worker shows job ends (the library configures no logging)
        labels = self.slots.labels
        if not log.isEnabledFor(logging.INFO):
            for outcome in outcomes:
                labels.pop(outcome.id, None)
            return
        for outcome in outcomes:
            name, attempt = labels.pop(outcome.id, ("?", 0))
            if outcome.kind == "failed" and outcome.error is not None:
                log.info("job %s (%s) attempt %d failed: %s: %s", outcome.id, name, attempt,
                         outcome.error.exc_type, outcome.error.exc_value)
            elif outcome.kind == "yielded":
                log.info("job %s (%s) waits for its children", outcome.id, name)
            elif outcome.kind != "released":
                log.info("job %s (%s) %s", outcome.id, name, outcome.kind)

    @staticmethod
    def _notify(condition: threading.Condition) -> None:
        with condition:
            condition.notify_all()

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
            if self.failures.since is None:  # room goes to held outcomes first
                self.store.ensure_reserve()
            # review deadlines and reminders that came due, in this process or while
            # nothing served the queue (store/gates.py); then, idle, the drained event
            if self.store.gate_timers(now):
                self._maybe_ready = True
            if not self.slots.busy() and not self.reserve.jobs:
                self.store.note_drained(now)
        if self._unchecked >= CHECKPOINT_EVERY:
            # what SQLite's automatic checkpoint does every ~1,000 pages, done here, apart
            # from the commits (Store.own_checkpoints)
            self._unchecked = 0
            self.store.checkpoint_log()
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


def make_slots(n: int, executor: Any, hub: WorkerHub | None, wake: Callable[[], None],
               lease: LeaseView | None = None,
               channel: ChannelServer | None = None) -> list[Slot]:
    """``n`` local slots served through ``hub``, their workers watching ``lease``
    (``executors.LokySlot``); or ``n`` slots on a dask client, each served by a loop of
    its own that arrives at ``hub`` through ``channel`` and is told of ``lease``
    (``daskloop.DaskLoopSlot``)."""
    if executor is None:
        assert hub is not None
        return [LokySlot(hub, lease) for _ in range(n)]
    from .daskloop import DaskLoops, DaskLoopSlot  # loaded for a dask cluster only

    assert hub is not None and channel is not None
    no_scheduler_retries(executor)
    loops = DaskLoops(executor, hub, channel, wake, lease)
    return [DaskLoopSlot(loops) for _ in range(n)]
