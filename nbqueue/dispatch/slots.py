"""A dispatcher's slots and what runs in each: the jobs handed to a slot, oldest first
(the first runs, one may wait behind it while jobs are short), what ended there and
waits for the next commit (``ended``), which jobs handed ahead started (``started``,
marked at the next commit), and how long each function's jobs take (``durations``).

A slot takes one job to start; while jobs are *short* (under ``SHORT_JOB``), it also
takes one handed ahead, behind it, which its worker starts as the first ends: see
docs/concepts.md, "Short jobs".
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import job as J
from ..executors import Slot, WorkerLost

if TYPE_CHECKING:
    from ..channel import ChannelServer
    from .reserve import Reserve

SHORT_JOB = 0.05  # a slot whose jobs take less than this gets one handed ahead
# what a slot reports when the process running a job died under it (loky; dask)
WORKER_DEATHS = frozenset({"WorkerLost", "KilledWorker"})


@dataclass
class Running:
    claimed: J.Claimed
    started: float | None  # None while handed ahead, behind another job


class Slots:
    """The slots of one dispatcher and the jobs in each. ``prefetch``: a slot takes a job
    handed ahead while jobs are short; ``dask``: the slots run on a dask cluster."""

    def __init__(self, *, prefetch: bool, dask: bool) -> None:
        self.prefetch = prefetch
        self.dask = dask
        self.slots: list[Slot] = []
        self.running: list[deque[Running]] = []  # per slot, oldest first
        self.ended: list[J.Outcome] = []  # collected from the slots, not yet committed
        self.started: list[str] = []  # jobs handed ahead that started: marked at commit
        self.labels: dict[str, tuple[str, int]] = {}  # job id -> (name, attempt), for logs
        self.durations: dict[str, float] = {}  # function id -> how long its jobs take
        self.last_short = False  # the last job to finish was short: idle slots take two
        self.channel: ChannelServer | None = None

    def open(self, slots: list[Slot], channel: ChannelServer | None) -> None:
        self.slots = slots
        self.running = [deque() for _ in slots]
        self.channel = channel

    def close(self) -> None:
        """Forget the slots (shut down by the caller) and what ran in them."""
        self.slots, self.running, self.ended = [], [], []
        self.labels.clear()

    def drop(self) -> None:
        """Kill every slot and forget the jobs in them (their lease lapsed: they go back)."""
        for slot in self.slots:
            slot.kill()
        for queue in self.running:
            for entry in queue:
                self.labels.pop(entry.claimed.id, None)
            queue.clear()

    def busy(self) -> int:
        """How many jobs are in the slots."""
        return sum(len(q) for q in self.running)

    def idle(self) -> int:
        """How many slots are empty and take a job now."""
        return sum(1 for queue, slot in zip(self.running, self.slots, strict=True)
                   if not queue and slot.available())

    def short(self, entry: Running) -> bool:
        # a map's chunk is never short: none waits behind it, so that a crash redoes at
        # most one chunk per worker
        return (entry.claimed.kind != J.CHUNK
                and self.durations.get(entry.claimed.function.id, 1.0) < SHORT_JOB)

    def capacity(self) -> int:
        """How many jobs the slots can take now. A slot takes one to start; while jobs are
        short (see ``SHORT_JOB``), it also takes one handed ahead, behind it (a worker,
        or a dask slot's loop, starts it as the first ends). A slot that is not
        ``available`` (a dask slot whose loop waits for a thread) takes none."""
        ahead = self.prefetch
        capacity = 0
        for queue, slot in zip(self.running, self.slots, strict=True):
            if not slot.available():
                continue
            if not queue:
                capacity += 1 + (ahead and self.last_short)
            elif ahead and len(queue) == 1 and self.short(queue[0]):
                capacity += 1
        return capacity

    def hand_out(self, reserve: Reserve, now: float) -> None:
        """Give reserved jobs to slots with room, oldest first."""
        jobs = reserve.jobs
        while jobs:
            index = self.pick()
            if index is None:
                break
            entry, packed = jobs.popleft()
            self.slots[index].submit(packed if packed is not None else reserve.pack(entry))
            queue = self.running[index]
            if queue:
                queue.append(Running(entry, None))
            else:
                queue.append(Running(entry, now))
                if entry.handed:  # not marked started by its claim
                    self.started.append(entry.id)
            self.labels[entry.id] = (entry.name, entry.attempt)
        for slot in self.slots:  # also when none was handed: dask releases what it read
            slot.flush()

    def pick(self) -> int | None:
        """An idle slot; else, for a job handed ahead, the slot whose short job ends
        soonest; else None. Only slots that are ``available``."""
        for i, queue in enumerate(self.running):
            if not queue and self.slots[i].available():
                return i
        if not self.prefetch:
            return None
        candidates = [i for i, queue in enumerate(self.running)
                      if len(queue) == 1 and self.short(queue[0]) and self.slots[i].available()]
        if not candidates:
            return None
        return min(candidates, key=lambda i: self.durations.get(
            self.running[i][0].claimed.function.id, 1.0))

    def gather(self, now: float, *, lapsed: bool = False) -> None:
        """Take what ended in the slots, in order per slot, into ``ended``. ``lapsed``:
        the lease lapsed (``Fence``): a worker that died then stopped itself for the
        lease, which is no death of its job."""
        for index, slot in enumerate(self.slots):
            queue = self.running[index]
            for ended in slot.collect():
                if not queue:  # a slot killed meanwhile reports nothing more of its own
                    break
                if lapsed and isinstance(ended, BaseException):
                    break  # its job, and those behind it, go back in the fence
                head = queue.popleft()
                if isinstance(ended, BaseException):
                    outcome = self._death(head, ended)
                    gone = isinstance(ended, WorkerLost)
                else:
                    outcome = ended
                    if ended.kind != "released":  # (a dask slot gives back what did not start)
                        self._note_duration(head, now, ended)
                    gone = ended.worker_ended  # it stopped its job (over its memory limit)
                if self.channel is not None:
                    self.channel.discard(head.claimed.id)
                self.ended.append(outcome)
                if gone:  # the worker is gone: what waited behind its job goes back
                    self.ended += self.release_rest(index)
                    slot.kill()
                    break
                if queue:
                    queue[0].started = now
                    self.started.append(queue[0].claimed.id)

    def _death(self, entry: Running, death: BaseException) -> J.Outcome:
        """The outcome of a job whose worker died under it (a death: the job runs again,
        up to ``POISON_DEATHS``; given back unused if it had not started), or whose task
        dask lost (a failure)."""
        claimed = entry.claimed
        kind = type(death).__name__
        if kind in WORKER_DEATHS and not self._ran(entry, death):
            return J.Outcome(claimed.id, claimed.claim, J.OutcomeKind.RELEASED)
        if kind in WORKER_DEATHS:
            return J.Outcome(claimed.id, claimed.claim, J.OutcomeKind.DIED,
                             error=J.RemoteError(kind, _how(death)))
        return J.Outcome(claimed.id, claimed.claim, J.OutcomeKind.FAILED, error=J.RemoteError(
            kind, f"worker process died while running job {claimed.id} "
                  f"({death or 'no details'})"))

    def _ran(self, entry: Running, death: BaseException) -> bool:
        """Whether a job whose worker died had started there. A local worker runs the job
        it reports for. A dask worker that dies fails every task it held, also one that
        waited behind the running one: each dask task says over the live channel when its
        job starts. Until any has (a cluster that cannot reach the channel), the oldest
        job of a slot counts as started, so that one that keeps killing its worker is
        still stopped as poisoned."""
        if isinstance(death, WorkerLost) or self.channel is None:
            return True
        if self.channel.starts_seen:
            return self.channel.started(entry.claimed.id, entry.claimed.claim)
        return entry.started is not None

    def release_rest(self, index: int) -> list[J.Outcome]:
        """Jobs handed ahead behind a killed one never started: they go back."""
        queue = self.running[index]
        out = [J.Outcome(r.claimed.id, r.claimed.claim, J.OutcomeKind.RELEASED) for r in queue]
        queue.clear()
        return out

    def _note_duration(self, entry: Running, now: float, outcome: J.Outcome) -> None:
        if entry.claimed.kind == J.CHUNK:
            self.last_short = False
            return
        if entry.started is None:
            return
        started = entry.started
        if (self.dask and outcome.started is not None
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
        old = self.durations.get(key)
        self.durations[key] = took if old is None else 0.8 * old + 0.2 * took
        self.last_short = took < SHORT_JOB
        if len(self.durations) > 1024:
            self.durations.clear()


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
