"""A dispatcher while the store fails with an error that may pass (a full disk, an I/O
error, a lock held too long): nothing of the failed cycle was stored, so its outcomes
stay in the slots' ``ended``; the next cycles settle them one per transaction
(``settle_apart``), so that one that cannot be stored (a large result on a full disk)
holds back no other, after a pause that grows to ``RETRY_MAX``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..store.faults import transient_cause

if TYPE_CHECKING:
    from .. import job as J
    from ..store import Store
    from .slots import Slots

log = logging.getLogger("nbqueue.dispatcher")

RETRY_FIRST, RETRY_MAX = 0.05, 5.0  # pauses between tries while the store fails


class StoreFailures:
    """Whether the store fails (``since``: when it began, by ``clock``, default
    ``time.monotonic``; None: it works), how many cycles failed in a row (``count``) and
    the last error (``error``)."""

    def __init__(self, store: Store, owner: str, slots: Slots, *,
                 clock: Callable[[], float] | None = None) -> None:
        self.store = store
        self.owner = owner
        self.slots = slots
        self.clock = clock or time.monotonic
        self.since: float | None = None
        self.count = 0
        self.error: str | None = None
        self._logged = 0.0

    def failed(self, exc: BaseException) -> float:
        """A cycle met ``exc``: note it; returns how long to pause before the next."""
        now = self.clock()
        if self.since is None:
            self.since = now
            self.count = 0
        self.count += 1
        self.error = str(exc)
        if self.count == 1 or now - self._logged > 30.0:
            self._logged = now
            log.warning("dispatcher %s: the store failed (%s); %d outcome(s) held, trying again "
                        "for %.0fs so far", self.owner, exc, len(self.slots.ended),
                        now - self.since)
        return float(min(RETRY_FIRST * 2 ** (self.count - 1), RETRY_MAX))

    def works(self) -> None:
        """A cycle went through."""
        if self.since is not None:
            log.warning("dispatcher %s: the store works again after %.1fs", self.owner,
                        self.clock() - self.since)
            self.since = None
            self.error = None

    def settle_apart(self, outcomes: list[J.Outcome], lease: float,
                     now: float) -> tuple[list[J.Outcome], BaseException | None]:
        """Settle each outcome in a transaction of its own. Those that fail go back to the
        slots' ``ended``; returns those stored and the last error of the store."""
        slots = self.slots
        stored, held, error = [], [], None
        ended = {o.id for o in outcomes}
        started = [job_id for job_id in slots.started if job_id not in ended]
        slots.started = []
        for outcome in outcomes:
            try:
                self.store.complete(self.owner, [outcome], lease=lease, now=now)
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
                slots.started[:0] = started
                error = error or exc
        slots.ended[:0] = held
        return stored, error
