"""What a dispatcher does first when it finds its lease lapsed (its process was stopped or
stuck, or the store kept it from renewing in time): its local workers stopped their
jobs, or are about to, and another dispatcher may take them over (see ``nbqueue.lease``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import job as J

if TYPE_CHECKING:
    from ..lease import Lease
    from ..store import Store
    from .reserve import Reserve
    from .slots import Slots

log = logging.getLogger("nbqueue.dispatcher")

LAPSED = "its dispatcher stopped renewing its lease"  # why a fenced attempt runs again


class Fence:
    """Stops ``slots`` and hands their jobs back once the lease lapsed. ``fenced``: the
    workers were stopped and the jobs not handed back yet (a store that failed then:
    the next step goes on from there). ``write_live``: writes what the live channel
    gathered (the output of the attempts stopped is kept in their logs)."""

    def __init__(self, store: Store, owner: str, slots: Slots, reserve: Reserve,
                 write_live: Callable[[], None]) -> None:
        self.store = store
        self.owner = owner
        self.slots = slots
        self.reserve = reserve
        self.write_live = write_live
        self.fenced = False

    def fence(self, lease: Lease, now: float) -> list[J.Outcome]:
        """Make sure every worker is dead (and a dask task interrupted), commit only what
        had ended before (each outcome fenced by its claim), hand every other job back
        (no attempt charged, no death), then renew ``lease``. Returns the outcomes
        committed."""
        slots = self.slots
        if not self.fenced:
            log.warning("dispatcher %s: its lease of %gs ran out (its process was stopped or "
                        "stuck); stopping its workers and handing their jobs back",
                        self.owner, lease.seconds)
            slots.gather(now, lapsed=True)
            slots.drop()
            self.reserve.clear()  # back to ready below, as never claimed
            self.reserve.unstarted = []
            self.fenced = True
        outcomes, slots.ended = slots.ended, []
        started, slots.started = slots.started, []
        try:
            if outcomes or started:
                self.store.complete(self.owner, outcomes, started=started, now=now)
            self.write_live()
            self.store.release_owner(self.owner, cause=LAPSED, stopped=False)
            lease.restore()
        except BaseException:
            slots.ended[:0] = outcomes  # settled again: those stored already are fenced out
            slots.started[:0] = started
            raise
        self.fenced = False
        return outcomes
