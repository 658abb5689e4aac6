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

*Ahead.* A commit that hands a job to a thread waiting for each job (``h.result()``,
``as_completed``) usually settles a few more (the other jobs of the same map, in the
workers at the same time), and a thread reading results one by one (``[h.result() for h
in hs]``) asks for them next. So the jobs settled ``done`` by that commit, and by the
commits that follow while such a thread keeps taking them (``AHEAD_FOR``), are kept
aside (``ahead``, bounded by ``AHEAD_MAX`` jobs and ``AHEAD_BYTES``), and ``h.result()``
takes its job from there without reading the store: a reader that keeps up with the
dispatcher reads nothing. One that has caught up waits for the next commits there
(``wait_ahead``), not with a ticket of its own; a job of those commits that did not end
``done`` (a failure, a retry, a fenced-out outcome) is named to it at once
(``_read_next``), so that it reads that job without waiting. Only outcomes the store
settled as ``done`` are kept: a done job never changes again (only ``forget`` and ``gc``
delete it, and they empty ``ahead``), so what is taken from there is what is committed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .chunking import map_of
from .job import OutcomeKind
from .store.transitions import INLINE_LIMIT

if TYPE_CHECKING:
    from .job import Outcome

_DONE = OutcomeKind.DONE  # a module name: compared for every outcome of a commit


AHEAD_FOR = 1.0  # seconds later commits are kept ahead after a reader took a job from there
AHEAD_MAX = 50_000  # jobs kept ahead at most (the oldest go first)
AHEAD_BYTES = 16 * 2**20  # ... and bytes of their results


class Ticket:
    """What one waiting thread is told: results handed at commit (``handed``: job id ->
    pickled result or None), ids whose outcome it must read (``touched``), and ``event``,
    set when there is something to take. ``waiting``: the watched jobs it has not seen
    end. ``each``: set at every outcome; else only once every job in ``waiting`` was
    handed, or one must be read (a gather needs them all: it is not woken at every
    commit)."""

    def __init__(self, ids: Iterable[str], event: threading.Event, each: bool) -> None:
        self.waiting = set(ids)
        self.event = event
        self.each = each
        self.handed: dict[str, bytes | None] = {}
        self.touched: set[str] = set()


class Waiters:
    """The tickets of one dispatcher's process. A few threads wait at a time, each for
    one job or many: each outcome is looked up in each ticket's set, and a ticket costs
    one set entry per job (a gather of a million jobs: about 40 MB)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # for how long jobs are kept ahead (tests step a fake one)
        self._lock = threading.Lock()
        self._tickets: list[Ticket] = []
        self._ahead: dict[str, bytes | None] = {}  # see the module's docstring
        self._ahead_bytes = 0
        self._keep_until = 0.0  # ahead takes later commits' jobs until then (monotonic)
        self._read_next: dict[str, None] = {}  # jobs of those commits to read (ordered set)
        self._streamed = threading.Condition(self._lock)  # notified at those commits
        self._streaming = 0  # threads waiting on it
        self.commits = 0  # commits of outcomes told so far (see ``open``)

    def open(self, ids: Iterable[str], event: threading.Event, *,
             each: bool) -> tuple[Ticket, int]:
        """Start watching ``ids``: outcomes committed from now on reach the ticket. Also
        returns ``commits`` as of then: if it moved since the waiter read the jobs, an
        outcome may have been committed in between (read them again); else a read made
        before the count was taken saw everything this dispatcher committed before."""
        ticket = Ticket(ids, event, each)
        with self._lock:
            self._tickets = [*self._tickets, ticket]
            return ticket, self.commits

    def close(self, ticket: Ticket) -> None:
        with self._lock:
            self._tickets = [t for t in self._tickets if t is not ticket]

    def take(self, ticket: Ticket) -> tuple[dict[str, bytes | None], set[str]]:
        """What was handed to ``ticket`` and which of its jobs to read, since the last take."""
        with self._lock:
            handed, ticket.handed = ticket.handed, {}
            touched, ticket.touched = ticket.touched, set()
        return handed, touched

    def take_ahead(self, job_id: str) -> tuple[bool, bytes | None]:
        """(True, its pickled result) if ``job_id`` was kept ahead (then no more), else
        (False, None)."""
        if job_id not in self._ahead:
            return False, None
        with self._lock:
            if job_id not in self._ahead:
                return False, None
            return True, self._take_kept(job_id)

    def _take_kept(self, job_id: str) -> bytes | None:  # under the lock
        blob = self._ahead.pop(job_id)
        self._ahead_bytes -= _size(blob)
        self._keep_until = self._clock() + AHEAD_FOR  # a reader takes them: go on
        return blob

    def wait_ahead(self, job_id: str, timeout: float) -> tuple[bool, bytes | None]:
        """While a reader takes jobs kept ahead: wait up to ``timeout`` for a commit that
        keeps ``job_id`` ahead, then take it as ``take_ahead`` does. (False, None) at once
        when nothing is kept, when the job must be read (it ended otherwise than done),
        and once ``timeout`` passed."""
        deadline = self._clock() + timeout
        with self._lock:
            while True:
                if job_id in self._ahead:
                    return True, self._take_kept(job_id)
                now = self._clock()
                if job_id in self._read_next or not now < self._keep_until or now >= deadline:
                    self._read_next.pop(job_id, None)
                    return False, None
                self._streaming += 1
                try:
                    self._streamed.wait(min(deadline, self._keep_until) - now)
                finally:
                    self._streaming -= 1

    def drop_ahead(self) -> None:
        """Forget what was kept ahead (jobs were forgotten)."""
        with self._lock:
            self._ahead = {}
            self._ahead_bytes = 0
            self._read_next = {}

    def _keep_ahead(self, done: dict[str, bytes | None]) -> None:  # under the lock
        ahead = self._ahead
        for job_id, blob in done.items():
            if job_id in ahead:
                self._ahead_bytes -= _size(ahead[job_id])
            ahead[job_id] = blob
            self._ahead_bytes += _size(blob)
        while ahead and (len(ahead) > AHEAD_MAX or self._ahead_bytes > AHEAD_BYTES):
            self._ahead_bytes -= _size(ahead.pop(next(iter(ahead))))

    def _note_read_next(self, ids: Iterable[str]) -> None:  # under the lock
        read_next = self._read_next
        read_next.update(dict.fromkeys(ids))
        while len(read_next) > AHEAD_MAX:
            del read_next[next(iter(read_next))]

    def settled(self, ticket: Ticket, ids: Iterable[str]) -> None:
        """The waiter saw these jobs end by reading them: wait no more for their outcomes."""
        with self._lock:
            ticket.waiting.difference_update(ids)

    def committed(self, outcomes: Sequence[Outcome], applied: Sequence[bool] | None) -> None:
        """The dispatcher committed ``outcomes``; ``applied`` says which took effect (None:
        not known, so every watched one is only woken)."""
        # counted first: a ticket opened after the count moved reads the store again, and
        # one opened before it is in ``_tickets`` now
        self.commits += 1
        keeping = self._keep_until > 0.0 and self._clock() < self._keep_until
        if not self._tickets and not keeping:
            if self._ahead and self._keep_until > 0.0:  # nobody took any for a while
                self.drop_ahead()
                self._keep_until = 0.0
            return
        if applied is not None and len(applied) != len(outcomes):
            applied = None  # not one flag per outcome: known for none of them
        # settled in the store as done and nothing else (Tx.settle_many)
        done = {} if applied is None else {
            o.id: o.result for o, took in zip(outcomes, applied, strict=True)
            if took and o.kind == _DONE and not o.spawned
            and (o.result is None or len(o.result) < INLINE_LIMIT)}
        # a chunk of a chunked map: its outcome touches the map, which item handles watch
        maps = {m for o in outcomes if ".c" in o.id and (m := map_of(o.id)) is not None}
        wake: list[Ticket] = []
        with self._lock:
            keep = False  # a job was handed to a thread that waits for each job
            for ticket in self._tickets:
                woken = False
                for map_id in maps & ticket.waiting if maps else ():
                    ticket.touched.add(map_id)
                    woken = True
                for i, outcome in enumerate(outcomes):
                    if outcome.id not in ticket.waiting or outcome.kind == OutcomeKind.RELEASED:
                        continue  # released: back to ready
                    if applied is not None and not applied[i]:
                        continue  # fenced out: another dispatcher settled it; polling sees it
                    if outcome.id in done:
                        ticket.handed[outcome.id] = done[outcome.id]
                        ticket.waiting.discard(outcome.id)
                        woken = woken or ticket.each or not ticket.waiting
                        keep = keep or ticket.each
                    else:
                        ticket.touched.add(outcome.id)
                        woken = True
                if woken:
                    wake.append(ticket)
            if keep or keeping:
                self._keep_ahead(done)
                self._note_read_next(o.id for o in outcomes
                                     if o.id not in done and o.kind != "released")
                if keep:
                    self._keep_until = self._clock() + AHEAD_FOR
                if self._streaming:
                    self._streamed.notify_all()
        for ticket in wake:
            ticket.event.set()

    def wake_all(self) -> None:
        """Wake every waiting thread (the dispatcher stopped or died: they poll now)."""
        with self._lock:
            self._keep_until = 0.0  # a reader in ``wait_ahead`` reads the store now
            self._streamed.notify_all()
        for ticket in self._tickets:
            ticket.event.set()


def _size(blob: bytes | None) -> int:
    return 64 + (len(blob) if blob is not None else 0)  # with the id and the entry
