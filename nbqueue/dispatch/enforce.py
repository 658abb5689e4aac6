"""Timeouts and cancels of the jobs a dispatcher holds: a job past its timeout, or one
someone asked to cancel, is stopped in its slot (a local worker is killed with every job
it holds: those behind it go back), or taken out of the reserve."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import job as J

if TYPE_CHECKING:
    from ..store import Store
    from .reserve import Reserve
    from .slots import Running, Slots


class Enforcer:
    """Stops the jobs of ``slots`` and ``reserve`` that must stop. Cancel requests are
    read from the store only when another process committed since the last read."""

    def __init__(self, store: Store, owner: str, slots: Slots, reserve: Reserve) -> None:
        self.store = store
        self.owner = owner
        self.slots = slots
        self.reserve = reserve
        self.cancel_version = -1  # the store's data_version at the last read of requests

    def enforce(self, now: float, version: int) -> list[J.Outcome]:
        """Kill jobs past their timeout, and running jobs someone cancelled; ``version``:
        the store's ``data_version`` now."""
        outcomes: list[J.Outcome] = []
        cancelled: set[str] = set()
        slots, reserve = self.slots, self.reserve
        if reserve.jobs or any(slots.running):
            if version != self.cancel_version:
                self.cancel_version = version
                cancelled = set(self.store.cancel_requests(self.owner))
        if cancelled and reserve.jobs:
            outcomes += reserve.cancelled(cancelled)
        for index, queue in enumerate(slots.running):
            if not queue:
                continue
            slot = slots.slots[index]
            # a dask task stops alone: a cancel reaches a job handed ahead at once
            hits = [(i, outcome) for i in range(len(queue) if slot.stops_alone else 1)
                    if (outcome := self.stopping_outcome(queue[i], cancelled, now))]
            if not hits:
                continue
            outcomes += [outcome for _, outcome in hits]
            head = queue[0]
            if not slot.stop([i for i, _ in hits]):
                queue.popleft()
                outcomes += slots.release_rest(index)
                continue
            for i, _ in reversed(hits):
                if slots.channel is not None:
                    slots.channel.discard(queue[i].claimed.id)
                del queue[i]
            if queue and queue[0] is not head:  # the job handed ahead is the oldest now
                queue[0].started = now
                slots.started.append(queue[0].claimed.id)
        return outcomes

    def stopping_outcome(self, entry: Running, cancelled: set[str],
                         now: float) -> J.Outcome | None:
        """The outcome of a job to stop now (cancelled, or past its timeout), else None."""
        claimed, options = entry.claimed, entry.claimed.options
        if claimed.id in cancelled:
            return J.Outcome(claimed.id, claimed.claim, J.OutcomeKind.CANCELLED)
        if options.timeout and entry.started is not None and now - entry.started > options.timeout:
            return J.Outcome(claimed.id, claimed.claim, J.OutcomeKind.FAILED, error=J.RemoteError(
                "TimeoutError", f"{_what(claimed)} ran longer than its timeout of "
                f"{options.timeout:g}s; " + ("its dask task was cancelled and interrupted"
                                             if self.slots.dask else
                                             "its worker process was killed")))
        return None


def _what(claimed: J.Claimed) -> str:
    # a chunk that has a timeout holds one item (mapjobs.build_map)
    return "this item of a map" if claimed.kind == J.CHUNK else f"job {claimed.id}"
