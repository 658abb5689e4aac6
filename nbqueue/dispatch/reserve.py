"""A dispatcher's reserve: jobs claimed ahead for the slots' next turn while short jobs
stream (docs/concepts.md, "Short jobs"), each packed for a slot while the workers run.

The reserve is claimed and marked handed ahead (a crash gives it back without using an
attempt), and a job in it goes to a worker only after the outcomes it follows there are
committed. Once it would wait (a slot took a job not known to be short), it is given
back with the next commit (``unstarted``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from .. import job as J
from ..job import Task
from ..memory import supported as memory_supported
from .slots import Slots

log = logging.getLogger("nbqueue.dispatcher")


class Reserve:
    """The jobs claimed ahead for ``slots`` (``jobs``: each with its task packed for a
    slot, or None until packed), and those to give back (``unstarted``). ``prefetch``
    and local slots (not ``dask``): only then are jobs claimed ahead."""

    def __init__(self, slots: Slots, owner: str, *, prefetch: bool, dask: bool) -> None:
        self.slots = slots
        self.owner = owner
        self.dask = dask
        self.streams = prefetch and not dask  # whether a reserve is ever kept
        self.jobs: deque[tuple[J.Claimed, Any]] = deque()
        self.unstarted: list[J.Outcome] = []  # claimed, never handed to a slot: give back
        self._memory_said = False  # see _say_memory

    def clear(self) -> None:
        self.jobs.clear()

    def useful(self) -> bool:
        """Whether claimed jobs waiting here will go out soon: every busy slot runs a job
        known to be short."""
        if not self.streams:
            return False
        short = self.slots.short
        return all(short(queue[0]) for queue in self.slots.running if queue)

    def target(self) -> int:
        """How many claimed jobs to keep here for the slots' next turn: two per slot while
        jobs are short, else none."""
        if not (self.slots.last_short and self.useful()):
            return 0
        return 2 * len(self.slots.slots)

    def trim(self) -> None:
        """Give the reserve back (with the next commit) once it would wait: a slot took a
        job not known to be short."""
        if self.jobs and not self.useful():
            self.unstarted += [J.Outcome(c.id, c.claim, J.OutcomeKind.RELEASED) for c, _ in self.jobs]
            self.jobs.clear()

    def cancelled(self, ids: set[str]) -> list[J.Outcome]:
        """Take the jobs in ``ids`` out of the reserve: their outcomes, cancelled."""
        outcomes = []
        for kept in [r for r in self.jobs if r[0].id in ids]:
            self.jobs.remove(kept)
            outcomes.append(J.Outcome(kept[0].id, kept[0].claim, J.OutcomeKind.CANCELLED))
        return outcomes

    def pack(self, claimed: J.Claimed) -> Any:
        channel = self.slots.channel
        assert channel is not None
        c = claimed
        if c.options.memory is not None and not self._memory_said:
            self._say_memory()
        return self.slots.slots[0].pack(Task(c.id, c.claim, c.name, c.function, c.args,
                                             c.ref_results, c.journal, channel.endpoint,
                                             c.options.memory, c.kind))

    def pack_all(self) -> None:
        """Pack the reserve's tasks while the workers run: off the path of the next commit."""
        jobs = self.jobs
        for i, (claimed, packed) in enumerate(jobs):
            if packed is None:
                jobs[i] = (claimed, self.pack(claimed))

    def _say_memory(self) -> None:
        """Once: where ``memory=`` cannot be enforced (docs/constraints.md, "Memory")."""
        self._memory_said = True
        if self.dask:
            log.warning("dispatcher %s: jobs with memory= run on dask without their limit: a "
                        "dask worker's process runs many jobs in threads, so nbqueue cannot "
                        "tell one job's memory; set the dask workers' memory_limit instead",
                        self.owner)
        elif not memory_supported():
            log.warning("dispatcher %s: jobs with memory= run without their limit: this "
                        "system has no /proc to read their memory from", self.owner)
