"""The resource rules of a transaction: holding, releasing and waking (a mixin of ``Tx``).

A job that wants resources takes all of them at claim or waits, parked on the
first one it cannot take; a release or a change of capacity wakes the waiters that
fit, which check again at their claim. Priority is precedence at a resource: a job
cannot take units that a waiting job of higher priority is waiting for. Among equal
priorities, a small job may pass a big one that does not fit in the free units.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .. import job as J
from ..arguments import KEEP
from .controls import RATES
from .rates import UNLIMITED, free_starts, rate_facts

WAKE_SCAN = 1000  # waiters looked at per release for ones that fit in the free units
OUTRANK_SCAN = 20  # higher-priority waiters looked at for one the resource could ever fit


def units_of(options_text: str, name: str) -> int:
    return int(json.loads(options_text).get("resources", {}).get(name, 1))


def resource_of(sql: Any, name: str) -> tuple[int, bool]:
    row = sql("SELECT capacity, available FROM nbq_resource WHERE name = ?", (name,)).fetchone()
    return (1, True) if row is None else (int(row[0]), bool(row[1]))


def why_not(sql: Any, name: str, units: int, priority: int,
            now: float | None = None, *, rates: bool = True) -> dict[str, Any] | None:
    """Why a job of ``priority`` cannot take ``units`` of resource ``name`` at ``now``
    (default: the clock): what it waits for as a waiter (the fields of a ``waits.Blocker``),
    or None if it can. ``sql`` runs a query (any connection); ``rates=False``: no resource
    has a rate limit (none is read)."""
    capacity, available = resource_of(sql, name)
    if not available:
        return {"kind": J.WAIT_UNAVAILABLE, "resource": name}
    if units > capacity:
        return {"kind": J.WAIT_CAPACITY, "resource": name, "n": units, "of": capacity}
    for other, options_text in sql(
            "SELECT id, options FROM nbq_job INDEXED BY nbq_job_blocked WHERE state = 'waiting' "
            "AND blocker = ? AND priority > ? ORDER BY priority DESC, seq LIMIT ?",
            (J.BLOCK_RESOURCE + name, priority, OUTRANK_SCAN)).fetchall():
        if units_of(options_text, name) <= capacity:  # it can get in some day: it goes first
            return {"kind": J.WAIT_KEPT, "resource": name, "holder": other}
    held = sql("SELECT COALESCE(SUM(units), 0) FROM nbq_hold WHERE resource = ?",
               (name,)).fetchone()[0]
    if held + units > capacity:
        holder, since = sql("SELECT job, since FROM nbq_hold WHERE resource = ? "
                            "ORDER BY since LIMIT 1", (name,)).fetchone()
        return {"kind": J.WAIT_HELD, "resource": name, "holder": holder, "since": since}
    return rate_facts(sql, name, time.time() if now is None else now) if rates else None


class ResourceRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, ``parked``, ``move`` and the rate rules
    (``note_start``, ``arm_rate``, ``set_rate``)."""

    sql: Any
    now: float
    parked: set[str]
    move: Any
    note_start: Any
    arm_rate: Any
    set_rate: Any
    start_time: Any
    controls: Any

    def resource(self, name: str) -> tuple[int, bool]:
        return resource_of(self.sql, name)

    def hold(self, job_id: str, wanted: dict[str, int], priority: int) -> bool:
        """Take every resource the job wants, or park it on the first it cannot take."""
        for name, units in wanted.items():
            why = why_not(self.sql, name, units, priority, self.start_time(),
                          rates=bool(self.controls() & RATES))
            if why is not None:
                self.move(job_id, J.READY, J.WAITING, blocker=J.BLOCK_RESOURCE + name,
                          reason="", wait=J.facts_json(why))
                self.arm_rate(name)
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
            self.note_start(name)
        return True

    def release(self, job_id: str) -> None:
        names = [r[0] for r in self.sql("SELECT resource FROM nbq_hold WHERE job = ?",
                                        (job_id,)).fetchall()]
        if names:
            self.sql("DELETE FROM nbq_hold WHERE job = ?", (job_id,))
            for name in names:
                self.wake_resource(name)

    def wake_resource(self, name: str) -> None:
        """Move the waiters of a resource that fit in its free units back to ready, in
        order (larger priority first, then submission); they re-check at claim. A waiter
        that wants more units than are free stays parked: it lets smaller waiters of its
        own priority by, and keeps the units from those of lower priority."""
        capacity, available = self.resource(name)
        if not available:
            return
        held = self.sql("SELECT COALESCE(SUM(units), 0) FROM nbq_hold WHERE resource = ?",
                        (name,)).fetchone()[0]
        free = capacity - held
        if free <= 0:
            return
        # a rate limit: how many jobs may start now
        starts = free_starts(self.sql, name, self.start_time()) if self.controls() & RATES \
            else None
        if starts == 0:
            self.arm_rate(name)
            return
        cursor = self.sql("SELECT id, options, priority FROM nbq_job INDEXED BY nbq_job_blocked "
                          "WHERE state = 'waiting' AND blocker = ? ORDER BY priority DESC, seq",
                          (J.BLOCK_RESOURCE + name,))
        woken: list[str] = []
        floor = None  # the priority of the first waiter that does not fit yet
        for looked, (job_id, options_text, priority) in enumerate(cursor, 1):
            if floor is not None and priority < floor:
                break
            units = units_of(options_text, name)
            if units <= free:
                woken.append(job_id)
                free -= units
            elif units <= capacity and floor is None:
                floor = priority
            if not free or looked >= WAKE_SCAN or len(woken) == starts:
                break
        for job_id in woken:
            self.move(job_id, J.WAITING, J.READY, blocker=None, reason="")

    def set_resource(self, name: str, capacity: int | None, available: bool | None,
                     rate: Any = KEEP) -> None:
        """Declare or change a resource; ``rate``: ``(n, per)``, None to remove its limit,
        or ``KEEP``. A resource first declared with a rate alone has no capacity to speak
        of (``UNLIMITED``): the rate is its limit."""
        declared = self.sql("SELECT 1 FROM nbq_resource WHERE name = ?", (name,)).fetchone()
        current_capacity, current_available = self.resource(name)
        if declared is None and capacity is None and rate not in (KEEP, None):
            current_capacity = UNLIMITED
        capacity = current_capacity if capacity is None else capacity
        available = current_available if available is None else available
        self.sql("INSERT OR REPLACE INTO nbq_resource VALUES (?, ?, ?)",
                 (name, capacity, int(available)))
        if rate is not KEEP:
            self.set_rate(name, rate)
        # waiters' facts named a holder or unavailability: keep them true (a user action,
        # so touching every waiter of this one resource is fine)
        blocker = J.BLOCK_RESOURCE + name
        if not available:
            self.sql("UPDATE nbq_job SET reason = '', wait = ? WHERE state = 'waiting' "
                     "AND blocker = ?",
                     (J.facts_json({"kind": J.WAIT_UNAVAILABLE, "resource": name}), blocker))
        self.wake_resource(name)
        if available and not current_available:
            self.sql("UPDATE nbq_job SET reason = '', wait = ? WHERE state = 'waiting' "
                     "AND blocker = ?",
                     (J.facts_json({"kind": J.WAIT_RESOURCE, "resource": name}), blocker))
