"""Threads of this process waiting for jobs, told of outcomes by the dispatcher at commit.

A thread that waits for jobs (``h.result()``, ``q.gather``, ``as_completed``) opens a
``Ticket`` for their ids with its dispatcher's ``Waiters``. Right after each commit,
the dispatcher passes the outcomes it committed to ``Waiters.committed``: a job that
ended done with a result small enough to live in its row (an outcome the store settles
as nothing but ``done``) is *handed* to the ticket with its pickled result, so the
waiter reads nothing; any other outcome of a watched job (a failure, which may become a
retry; a cancel; a generator's yield) only wakes the ticket, and the waiter reads that
job. Jobs that end otherwise (run by another process, cancelled before they ran, or
because a job they need failed) are seen by the waiter's own polling.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .store.transitions import INLINE_LIMIT

if TYPE_CHECKING:
    from .job import Outcome


class Ticket:
    """What one waiting thread is told: results handed at commit (``handed``: job id ->
    pickled result or None), ids whose outcome it must read (``touched``), and ``event``,
    set when there is something to take. ``each``: set at every outcome; else only once
    every watched job not yet settled (``waiting``) was handed, or one must be read (a
    gather needs them all: it is not woken at every commit)."""

    def __init__(self, ids: Iterable[str], event: threading.Event, each: bool) -> None:
        self.ids = frozenset(ids)
        self.event = event
        self.each = each
        self.handed: dict[str, bytes | None] = {}
        self.touched: set[str] = set()
        self.waiting = set(self.ids)


class Waiters:
    """The tickets of one dispatcher's process, by job id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, list[Ticket]] = {}
        self._tickets: set[Ticket] = set()

    def open(self, ids: Iterable[str], event: threading.Event, *, each: bool) -> Ticket:
        """Start watching ``ids``: outcomes committed from now on reach the ticket. (Read
        the jobs once after opening: an outcome committed before is in the store.)"""
        ticket = Ticket(ids, event, each)
        with self._lock:
            self._tickets.add(ticket)
            for job_id in ticket.ids:
                self._by_id.setdefault(job_id, []).append(ticket)
        return ticket

    def close(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets.discard(ticket)
            for job_id in ticket.ids:
                tickets = self._by_id.get(job_id)
                if tickets is None:
                    continue
                if ticket in tickets:
                    tickets.remove(ticket)
                if not tickets:
                    del self._by_id[job_id]

    def take(self, ticket: Ticket) -> tuple[dict[str, bytes | None], set[str]]:
        """What was handed to ``ticket`` and which of its jobs to read, since the last take."""
        with self._lock:
            handed, ticket.handed = ticket.handed, {}
            touched, ticket.touched = ticket.touched, set()
        return handed, touched

    def settled(self, ticket: Ticket, ids: Iterable[str]) -> None:
        """The waiter saw these jobs end by reading them: wait no more for their outcomes."""
        with self._lock:
            ticket.waiting.difference_update(ids)

    def committed(self, outcomes: Sequence[Outcome], applied: Sequence[bool] | None) -> None:
        """The dispatcher committed ``outcomes``; ``applied`` says which took effect (None:
        not known, so every watched one is only woken)."""
        if not self._by_id:  # a ticket opened after this reads the store, which has them
            return
        wake: set[Ticket] = set()
        with self._lock:
            for i, outcome in enumerate(outcomes):
                tickets = self._by_id.get(outcome.id)
                if not tickets or outcome.kind == "released":  # released: back to ready
                    continue
                took = True if applied is None else applied[i]
                if not took:  # fenced out: another dispatcher settled it; polling sees that
                    continue
                # settled in the store as done and nothing else (Tx.settle_many)
                plain = (applied is not None and outcome.kind == "done" and not outcome.spawned
                         and (outcome.result is None or len(outcome.result) < INLINE_LIMIT))
                for ticket in tickets:
                    if plain:
                        ticket.handed[outcome.id] = outcome.result
                        ticket.waiting.discard(outcome.id)
                        if ticket.each or not ticket.waiting:
                            wake.add(ticket)
                    else:
                        ticket.touched.add(outcome.id)
                        wake.add(ticket)
        for ticket in wake:
            ticket.event.set()

    def wake_all(self) -> None:
        """Wake every waiting thread (the dispatcher stopped or died: they poll now)."""
        with self._lock:
            tickets = list(self._tickets)
        for ticket in tickets:
            ticket.event.set()
