"""The dispatcher: a daemon thread that claims jobs, runs them in slots, commits outcomes.

One cycle (``step``) settles finished futures, kills timed-out or cancelled jobs,
commits every outcome and claims new jobs in one transaction (a group commit),
hands the claims to slots, renews leases and writes live progress. In-process
submits wake it at once; changes by other processes are noticed by polling
SQLite's ``data_version``, which costs one tiny read.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from . import job as J
from .channel import ChannelServer
from .errors import QueueLocked
from .executors import Slot, channel_address, make_slots
from .outputs import Delivery
from .runtime import Task, execute
from .store import Owner, Store

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between cheap checks for changes made by other processes
LIVE_EVERY = 1.0  # progress and output are written about once a second
RECOVER_EVERY = 1.0
SHORT_JOB = 0.05  # a slot whose jobs take less than this gets one handed ahead
LINGER = 0.001  # while only short jobs run, a commit waits this long for companions


@dataclass
class _Running:
    claimed: J.Claimed
    future: Future[Any]
    started: float | None  # None while handed ahead, behind another job


class Dispatcher:
    """Feeds a queue's jobs to worker slots. ``start()`` runs it in a daemon thread;
    tests may instead call ``step()`` themselves."""

    def __init__(self, store: Store, *, workers: int, executor: Any = None,
                 lease: float = 30.0, prefetch: bool = True) -> None:
        self.store = store
        self.workers = workers
        self.executor = executor
        self.lease = lease
        self.prefetch = prefetch
        self.owner = str(Owner.current())
        self.error: str | None = None
        self.committed = threading.Condition()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots: list[Slot] = []
        self._running: list[deque[_Running]] = []
        self._channel: ChannelServer | None = None
        self._durations: dict[str, float] = {}
        self._maybe_ready = True
        self._data_version = self._cancel_version = -1
        self._last_heartbeat = self._last_live = self._last_recover = 0.0
        self._started_ids: list[str] = []
        self._unstarted: list[J.Outcome] = []  # claimed, never handed to a slot: give back
        self._last_short = False  # the last job to finish was short: idle slots take two
        self._labels: dict[str, tuple[str, int]] = {}  # job id -> (name, attempt), for logs
        self._delivery = Delivery(store)  # outputs, in a thread of their own

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Create the slots and the channel, register, and recover the queue."""
        if self._slots:
            return
        self.store.register_dispatcher(self.owner, workers=self.workers,
                                       executor="dask" if self.executor is not None else "loky")
        self.store.recover()
        bind, advertise = channel_address(self.executor)
        self._channel = ChannelServer(bind, advertise=advertise)
        self._slots = make_slots(self.workers, self.executor)
        self._running = [deque() for _ in self._slots]

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self.open()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="nbqueue-dispatcher", daemon=True)
        self._thread.start()
        # A courtesy at interpreter exit: hand running jobs back instead of leaving them to
        # recovery (which would count a death against each). Correctness never rests on it.
        atexit.register(self.stop)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the thread, hand running jobs back, stop the workers."""
        atexit.unregister(self.stop)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        if self._slots:
            try:
                self.store.release_owner(self.owner)
            except Exception:
                log.warning("dispatcher %s: could not release its jobs", self.owner, exc_info=True)
            for slot in self._slots:
                slot.shutdown()
            self._slots, self._running = [], []
            self._labels.clear()
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        self._delivery.close()
        with self.committed:
            self.committed.notify_all()

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
                except QueueLocked as exc:  # another process holds the store: try again
                    log.warning("dispatcher %s: %s", self.owner, exc)
                self._wake.wait(self._timeout())
                self._wake.clear()
                self._linger()
        except BaseException as exc:  # noqa: B036 - recorded for status(), panels and the CLI
            self.error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("dispatcher %s died: %s", self.owner, exc)
            try:
                self.store.dispatcher_failed(self.owner, self.error)
            except Exception:
                pass
            with self.committed:
                self.committed.notify_all()

    def _linger(self) -> None:
        """Group commit: while every busy slot runs a job known to be short, wait up to
        ``LINGER`` for the other jobs in the slots, so that one commit settles them all."""
        if not (self.prefetch and self.executor is None):
            return
        deadline = time.monotonic() + LINGER
        while not self._stopping.is_set():
            heads = [queue[0] for queue in self._running if queue]
            if not heads or not all(self._short(head) for head in heads):
                return
            if all(entry.future.done() for queue in self._running for entry in queue):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)
            self._wake.clear()

    def _short(self, entry: _Running) -> bool:
        return self._durations.get(entry.claimed.function.id, 1.0) < SHORT_JOB

    def _timeout(self) -> float:
        timeout = POLL
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
        outcomes = self._collect(now)
        outcomes += self._enforce(now)
        outcomes += self._unstarted
        self._unstarted = []
        free = self._free_capacity()
        claim = 0
        if free[0] + free[1] and (outcomes or self._should_claim(now)):
            claim = free[0] + free[1]
        if outcomes or claim or self._started_ids:
            started, self._started_ids = self._started_ids, []
            _, claimed = self.store.complete(self.owner, outcomes, claim=claim, lease=self.lease,
                                             handed=min(free[1], claim), started=started, now=now)
            self._maybe_ready = bool(claimed) and len(claimed) == claim
            self._hand_out(claimed, now)
            if outcomes:
                with self.committed:
                    self.committed.notify_all()
            self._log_outcomes(outcomes)
            count = len(outcomes) + len(claimed)
        else:
            count = 0
        self._housekeeping(now)
        return count

    def _log_outcomes(self, outcomes: list[J.Outcome]) -> None:
        # at INFO: a headless worker shows job ends (the library configures no logging)
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
        version = self.store.data_version()
        if version != self._data_version:
            self._data_version = version
            self._maybe_ready = True
        if self._maybe_ready:
            self._maybe_ready = False
            return True
        due = self.store.next_due()
        return due is not None and due <= now

    def _free_capacity(self) -> tuple[int, int]:
        """(idle slots, jobs that can be handed ahead). While the last job to finish was
        short, an idle slot takes two: one that starts and one handed ahead behind it (given
        back unstarted if the first turns out not to be known as short, see _hand_out)."""
        idle = ahead = 0
        local = self.prefetch and self.executor is None
        for queue in self._running:
            if not queue:
                idle += 1
                ahead += local and self._last_short
            elif local and len(queue) == 1 and self._short(queue[0]):
                ahead += 1
        return idle, ahead

    def _hand_out(self, claimed: list[J.Claimed], now: float) -> None:
        assert self._channel is not None
        for entry in claimed:
            index = self._pick_slot()
            ahead_of = self._running[index]
            if entry.handed and ahead_of and not self._short(ahead_of[0]):
                # it would wait behind a job not known to be short (one just started, of a
                # function not seen yet): it goes back unstarted with the next commit
                self._unstarted.append(J.Outcome(entry.id, entry.claim, "released"))
                continue
            task = Task(entry.id, entry.claim, entry.name, entry.function, entry.args,
                        entry.ref_results, entry.journal, self._channel.endpoint)
            future = self._slots[index].submit(execute, task)
            queue = self._running[index]
            queue.append(_Running(entry, future, None if queue else now))
            self._labels[entry.id] = (entry.name, entry.attempt)
            future.add_done_callback(lambda _f: self._wake.set())

    def _pick_slot(self) -> int:
        for i, queue in enumerate(self._running):
            if not queue:
                return i
        # handed ahead: behind the shortest job running
        candidates = [i for i, queue in enumerate(self._running) if len(queue) == 1]
        if not candidates:
            raise RuntimeError("no free slot for a claimed job")
        return min(candidates, key=lambda i: self._durations.get(
            self._running[i][0].claimed.function.id, 1.0))

    def _collect(self, now: float) -> list[J.Outcome]:
        """Outcomes of finished futures, in order per slot."""
        outcomes: list[J.Outcome] = []
        for index, queue in enumerate(self._running):
            while queue and queue[0].future.done():
                head = queue.popleft()
                outcome = self._outcome_of(head)
                if outcome.kind == "failed" and outcome.error and outcome.error.exc_type in (
                        "TerminatedWorkerError", "BrokenProcessPool", "ShutdownExecutorError"):
                    outcomes.append(outcome)
                    outcomes += self._release_rest(index)
                    self._slots[index].kill()
                    break
                self._note_duration(head, now)
                outcomes.append(outcome)
                if queue:
                    queue[0].started = now
                    self._started_ids.append(queue[0].claimed.id)
        return outcomes

    def _outcome_of(self, entry: _Running) -> J.Outcome:
        claimed = entry.claimed
        try:
            outcome = entry.future.result()
        except BaseException as exc:  # noqa: B036 - the worker died, or dask lost the task
            name = type(exc).__name__
            text = str(exc) or "the worker process died while running this job"
            return J.Outcome(claimed.id, claimed.claim, "failed", error=J.RemoteError(
                name, f"worker process died while running job {claimed.id} ({text})"))
        if self._channel is not None:
            self._channel.discard(claimed.id)
        return outcome

    def _release_rest(self, index: int) -> list[J.Outcome]:
        """Jobs handed ahead behind a killed one never started: they go back."""
        queue = self._running[index]
        out = [J.Outcome(r.claimed.id, r.claimed.claim, "released") for r in queue]
        queue.clear()
        return out

    def _note_duration(self, entry: _Running, now: float) -> None:
        if entry.started is None:
            return
        key = entry.claimed.function.id
        took = now - entry.started
        old = self._durations.get(key)
        self._durations[key] = took if old is None else 0.8 * old + 0.2 * took
        self._last_short = took < SHORT_JOB
        if len(self._durations) > 1024:
            self._durations.clear()

    def _enforce(self, now: float) -> list[J.Outcome]:
        """Kill jobs past their timeout, and running jobs someone cancelled."""
        outcomes: list[J.Outcome] = []
        cancelled: set[str] = set()
        if any(self._running):
            version = self.store.data_version()
            if version != self._cancel_version:
                self._cancel_version = version
                cancelled = set(self.store.cancel_requests(self.owner))
        for index, queue in enumerate(self._running):
            if not queue:
                continue
            head = queue[0]
            options = head.claimed.options
            if head.claimed.id in cancelled:
                outcome = J.Outcome(head.claimed.id, head.claimed.claim, "cancelled")
            elif (options.timeout and head.started is not None
                  and now - head.started > options.timeout and not head.future.done()):
                outcome = J.Outcome(head.claimed.id, head.claimed.claim, "failed",
                                    error=J.RemoteError(
                                        "TimeoutError",
                                        f"job {head.claimed.id} ran longer than its timeout of "
                                        f"{options.timeout:g}s; " + (
                                            "its worker process was killed"
                                            if self.executor is None else
                                            "its dask task was cancelled and interrupted")))
            else:
                continue
            queue.popleft()
            outcomes.append(outcome)
            outcomes += self._release_rest(index)
            self._slots[index].kill()
        return outcomes

    def _housekeeping(self, now: float) -> None:
        if now - self._last_heartbeat > self.lease / 3:
            self._last_heartbeat = now
            self.store.heartbeat(self.owner, lease=self.lease, now=now)
        if now - self._last_live > LIVE_EVERY and self._channel is not None:
            self._last_live = now
            progress, logs = self._channel.drain()
            if progress or logs:
                self.store.write_live(progress, logs)
        if now - self._last_recover > RECOVER_EVERY:
            self._last_recover = now
            if self.store.recover(now):
                self._maybe_ready = True
        self._delivery.poke(now)

    def busy(self) -> int:
        """How many jobs this dispatcher has in its slots."""
        return sum(len(q) for q in self._running)
