"""The resource rules of a transaction: holding, releasing and waking (a mixin of ``Tx``).

A job that wants resources takes all of them at claim or waits, parked on the
first one that is not free; a release or a change of capacity wakes the next
waiters, which check again at their claim.
"""

from __future__ import annotations

from typing import Any

from .. import job as J
from ..constraints import format_local


class ResourceRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, ``parked`` and ``move``."""

    sql: Any
    now: float
    parked: set[str]

    def resource(self, name: str) -> tuple[int, bool]:
        row = self.sql("SELECT capacity, available FROM nbq_resource WHERE name = ?",
                       (name,)).fetchone()
        return (1, True) if row is None else (int(row[0]), bool(row[1]))

    def hold(self, job_id: str, wanted: dict[str, int]) -> bool:
        """Take every resource the job wants, or park it on the first that is not free."""
        for name, units in wanted.items():
            capacity, available = self.resource(name)
            held = self.sql("SELECT COALESCE(SUM(units), 0) FROM nbq_hold WHERE resource = ?",
                            (name,)).fetchone()[0]
            reason = None
            if not available:
                reason = f"resource {name} is unavailable"
            elif units > capacity:
                reason = f"needs {units} units of {name}, whose capacity is {capacity}"
            elif held + units > capacity:
                holder, since = self.sql(
                    "SELECT job, since FROM nbq_hold WHERE resource = ? ORDER BY since LIMIT 1",
                    (name,)).fetchone()
                reason = f"resource {name} held by job {holder} since {format_local(since)}"
            if reason is not None:
                self.move(job_id, J.READY, J.WAITING, blocker=J.BLOCK_RESOURCE + name,
                          reason=reason)
                # it may have been the waiter woken for another of its resources: pass the
                # turn on, or that resource's next waiter sleeps while it is free. Once per
                # job and transaction: two waiters that each block on what the other needs
                # would otherwise wake each other forever inside claim()
                if job_id not in self.parked:
                    self.parked.add(job_id)
                    for other in wanted:
                        if other != name:
                            self.wake_resource(other)
                return False
        for name, units in wanted.items():
            self.sql("INSERT OR REPLACE INTO nbq_hold VALUES (?, ?, ?, ?)",
                     (name, job_id, units, self.now))
        return True

    def release(self, job_id: str) -> None:
        names = [r[0] for r in self.sql("SELECT resource FROM nbq_hold WHERE job = ?",
                                        (job_id,)).fetchall()]
        if names:
            self.sql("DELETE FROM nbq_hold WHERE job = ?", (job_id,))
            for name in names:
                self.wake_resource(name)

    def wake_resource(self, name: str) -> None:
        """Move the next waiters of a resource back to ready (they re-check at claim)."""
        capacity, available = self.resource(name)
        if not available:
            return
        held = self.sql("SELECT COALESCE(SUM(units), 0) FROM nbq_hold WHERE resource = ?",
                        (name,)).fetchone()[0]
        free = max(capacity - held, 0)
        if not free:
            return
        rows = self.sql("SELECT id FROM nbq_job WHERE state = 'waiting' AND blocker = ? "
                        "ORDER BY priority DESC, seq LIMIT ?",
                        (J.BLOCK_RESOURCE + name, free)).fetchall()
        for (job_id,) in rows:
            self.move(job_id, J.WAITING, J.READY, blocker=None, reason="")

    def set_resource(self, name: str, capacity: int | None, available: bool | None) -> None:
        current_capacity, current_available = self.resource(name)
        capacity = current_capacity if capacity is None else capacity
        available = current_available if available is None else available
        self.sql("INSERT OR REPLACE INTO nbq_resource VALUES (?, ?, ?)",
                 (name, capacity, int(available)))
        # waiters' reasons named a holder or unavailability: keep them true (a user action,
        # so touching every waiter of this one resource is fine)
        blocker = J.BLOCK_RESOURCE + name
        if not available:
            self.sql("UPDATE nbq_job SET reason = ? WHERE state = 'waiting' AND blocker = ?",
                     (f"resource {name} is unavailable", blocker))
        self.wake_resource(name)
        if available and not current_available:
            self.sql("UPDATE nbq_job SET reason = ? WHERE state = 'waiting' AND blocker = ?",
                     (f"waiting for resource {name}", blocker))
