"""A slot that runs jobs in the dispatcher's own process, for tests that drive a
dispatcher with ``step(now)`` on a fake clock and no worker process:

    d = Dispatcher(store, workers=2, slots=InProcessSlot.make, clock=clock)
    d.open()
    first, second = d.slots.slots

Jobs handed to it run one at a time, in the order handed, in the thread that collects
(the dispatcher's, at its next step): a job ends in the step after the one that handed
it out. While ``held``, the jobs here stay running, however far the clock moves, until a
test lets them go on (or a timeout or a cancel stops them); ``lose()`` makes the job
running here end as if its worker process died under it.

A job runs as in a worker (``runtime.execute``: its output is captured, a generator is
replayed from its journal) but without the live channel (no socket is opened; its output
comes back in its outcome). It shares this process, so it cannot be killed: a slot
stopped for a timeout or a cancel forgets its jobs, which a held slot has not started.
Not a user-facing executor.
"""

from __future__ import annotations

from collections import deque

from .. import runtime
from ..executors import Ended, Slot, WorkerLost
from ..job import Task


class InProcessSlot(Slot):
    """Runs the jobs handed to it at ``collect``, unless ``held``. ``ran``: the ids of
    the jobs it ran, in order; ``kills``: how often it was stopped or killed."""

    def __init__(self) -> None:
        self.jobs: deque[Task] = deque()  # handed here, not ended yet, oldest first
        self.held = False
        self.ran: list[str] = []
        self.kills = 0
        self._lost: str | None = None

    @classmethod
    def make(cls, n: int) -> list[Slot]:
        """``n`` slots, for ``Dispatcher(slots=...)``."""
        return [cls() for _ in range(n)]

    def pack(self, task: Task) -> Task:
        task.endpoint = None  # no live channel: nothing happens in the background
        return task

    def submit(self, packed: Task) -> None:
        self.jobs.append(packed)

    def collect(self) -> list[Ended]:
        if self._lost is not None and self.jobs:
            lost, self._lost = self._lost, None
            return [WorkerLost(lost)]
        out: list[Ended] = []
        while self.jobs and not self.held:
            task = self.jobs.popleft()
            self.ran.append(task.id)
            out.append(runtime.execute(task))
        return out

    def lose(self, why: str = "SIGKILL(-9)") -> None:
        """The job running here ends, at the next ``collect``, as if its worker died."""
        self._lost = why

    def kill(self) -> None:
        self.jobs.clear()
        self.kills += 1

    def shutdown(self) -> None:
        self.jobs.clear()
