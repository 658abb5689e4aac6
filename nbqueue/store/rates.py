"""Rate limits of resources: at most ``n`` jobs holding a resource start per ``per``
seconds, counted across every process (reads, and a mixin of ``Tx``).

The times of a resource's last ``n`` starts are a ring in ``nbq_rate``: start number
``k`` (``nbq_rate_limit.seq`` counts them) goes to slot ``k mod n``, over the start ``n``
before it. So the next start may happen once the start in its slot is ``per`` old: one
read and one write per start, however large ``n`` is, and exact over any window of
``per`` seconds (start times are kept in commit order: never earlier than the start
before). A job that must wait parks on the resource like one that finds it busy; the
resource's ``wake`` is then set to when a start frees, and the claim that comes at that
moment (``Store.next_due`` includes it) wakes as many waiters as starts are free.
"""

from __future__ import annotations

import time
from typing import Any

from ..arguments import MAX_COUNT
from ..job import BLOCK_RESOURCE, WAIT_RATE
from ..times import format_rate
from .controls import RATES


def limit_of(sql: Any, name: str) -> tuple[int, float, int] | None:
    """``(n, per, seq)`` of a resource's rate limit, or None."""
    limit: tuple[int, float, int] | None = sql(
        "SELECT n, per, seq FROM nbq_rate_limit WHERE resource = ?", (name,)).fetchone()
    return limit


def next_start(sql: Any, name: str, now: float) -> float | None:
    """When the next job holding ``name`` may start, if not now (None: now, or no limit)."""
    limit = limit_of(sql, name)
    if limit is None:
        return None
    n, per, seq = limit
    if seq < n:
        return None
    row = sql("SELECT at FROM nbq_rate WHERE resource = ? AND slot = ?",
              (name, seq % n)).fetchone()
    if row is None or row[0] + per <= now:
        return None
    return float(row[0] + per)


def rate_facts(sql: Any, name: str, now: float) -> dict[str, Any] | None:
    """What a waiter waits for while the limit holds it (a ``waits.Blocker``'s fields: ``n``
    starts per ``per`` seconds, the next at ``until``); None if a start is free now."""
    at = next_start(sql, name, now)
    if at is None:
        return None
    n, per, _ = limit_of(sql, name)  # type: ignore[misc]
    return {"kind": WAIT_RATE, "resource": name, "n": n, "per": per, "until": at}


def free_starts(sql: Any, name: str, now: float) -> int | None:
    """How many jobs holding ``name`` may start now (None: no limit)."""
    limit = limit_of(sql, name)
    if limit is None:
        return None
    n, per, _ = limit
    used: int = sql("SELECT COUNT(*) FROM nbq_rate WHERE resource = ? AND slot >= 0 AND at > ?",
                    (name, now - per)).fetchone()[0]
    return max(n - used, 0)


class RateRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, controls and ``wake_resource``."""

    sql: Any
    now: float
    controls: Any
    set_control: Any
    wake_resource: Any

    def rate_limited(self, names: Any) -> bool:
        """Whether one of these resources has a rate limit (no read without rates)."""
        return bool(self.controls() & RATES) and any(limit_of(self.sql, name) is not None
                                                     for name in names)

    def start_time(self) -> float:
        """The time a start is counted at: now that this transaction holds the write lock
        (``now`` was taken when its dispatcher's cycle began)."""
        return max(self.now, time.time())

    def note_start(self, name: str) -> None:
        """A job holding ``name`` starts (a claim took it): the ring's next slot."""
        limit = limit_of(self.sql, name) if self.controls() & RATES else None
        if limit is None:
            return
        n, _, seq = limit
        at = self.start_time()
        if seq:
            row = self.sql("SELECT at FROM nbq_rate WHERE resource = ? AND slot = ?",
                           (name, (seq - 1) % n)).fetchone()
            at = max(at, row[0]) if row is not None else at
        self.sql("INSERT OR REPLACE INTO nbq_rate VALUES (?, ?, ?)", (name, seq % n, at))
        self.sql("UPDATE nbq_rate_limit SET seq = seq + 1 WHERE resource = ?", (name,))
        self.arm_rate(name, if_waiting=True)  # the last free start: wake those left then

    def arm_rate(self, name: str, *, if_waiting: bool = False) -> None:
        """Jobs wait for ``name`` (``if_waiting``: if any do): if its limit holds them,
        wake them when a start frees."""
        at = next_start(self.sql, name, self.start_time()) if self.controls() & RATES else None
        if at is None:
            return
        if if_waiting and self.sql(
                "SELECT 1 FROM nbq_job INDEXED BY nbq_job_blocked WHERE state = 'waiting' "
                "AND blocker = ? LIMIT 1", (BLOCK_RESOURCE + name,)).fetchone() is None:
            return
        self.sql("UPDATE nbq_rate_limit SET wake = ? WHERE resource = ?", (at, name))

    def wake_rates(self) -> None:
        """Wake the waiters of the resources whose next start came (in a claim)."""
        if not self.controls() & RATES:
            return
        due = self.sql("SELECT resource FROM nbq_rate_limit INDEXED BY nbq_rate_wake "
                       "WHERE wake IS NOT NULL AND wake <= ?", (self.now,)).fetchall()
        for (name,) in due:
            self.sql("UPDATE nbq_rate_limit SET wake = NULL WHERE resource = ?", (name,))
            self.wake_resource(name)

    def set_rate(self, name: str, rate: tuple[int, float] | None) -> None:
        """Set (or, None, remove) a resource's rate limit. The starts already counted
        stay counted: the newest of them (as many as the new limit keeps) go on the ring."""
        if rate is None:
            self.sql("DELETE FROM nbq_rate_limit WHERE resource = ?", (name,))
            self.sql("DELETE FROM nbq_rate WHERE resource = ?", (name,))
        else:
            n, per = rate
            old = limit_of(self.sql, name)
            if old is None or old[0] != n:  # the ring's size changes: lay it anew
                # the newest n starts make the ring; older ones a smaller limit has no room
                # for are kept apart (negative slots), for a larger limit later
                times = [r[0] for r in self.sql(
                    "SELECT at FROM nbq_rate WHERE resource = ? ORDER BY at DESC LIMIT ?",
                    (name, max(n, old[0] if old else 0)))]
                ring, kept = times[:n][::-1], times[n:]
                self.sql("DELETE FROM nbq_rate WHERE resource = ?", (name,))
                self.sql("INSERT OR REPLACE INTO nbq_rate_limit (resource, n, per, seq) "
                         "VALUES (?, ?, ?, ?)", (name, n, per, len(ring)))
                for slot, at in [*enumerate(ring), *((-1 - i, at) for i, at in enumerate(kept))]:
                    self.sql("INSERT INTO nbq_rate VALUES (?, ?, ?)", (name, slot, at))
            else:
                self.sql("UPDATE nbq_rate_limit SET per = ? WHERE resource = ?", (per, name))
        self.set_control(RATES, bool(self.sql("SELECT EXISTS (SELECT 1 FROM nbq_rate_limit)")
                                     .fetchone()[0]))


def rates(sql: Any, now: float) -> dict[str, dict[str, Any]]:
    """``{resource: {"rate": "10/min", "next_start": time or None}}`` of the limits."""
    out = {}
    for name, n, per in sql("SELECT resource, n, per FROM nbq_rate_limit").fetchall():
        out[name] = {"rate": format_rate(n, per), "next_start": next_start(sql, name, now)}
    return out


UNLIMITED = MAX_COUNT  # the capacity of a resource first declared with a rate alone
