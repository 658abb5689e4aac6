"""Waiting for jobs to end and reading their results: ``h.result()``, ``q.gather`` and
``nbqueue.as_completed`` wait here (``wait_one`` for one job; ``collect`` checks and
groups the handles of many).

A wait reads the jobs it waits for in bulk (``Store.results``: 500 per query, state and
result together), then, for those not ended, opens a ticket with this process's
dispatcher (``waiters.py``), which hands each of them its outcome when it commits it.
Jobs that end otherwise (another process runs them, a cancel, a job they need failed)
are found by polling: SQLite's ``data_version`` (one tiny read) every ``POLL`` seconds,
and the pending jobs read again only when another connection committed since, and no
more often than ``POLL_SHARE`` times what that read last took (a gather of many jobs
does not spend its time re-reading them).

A job that ended already costs ``h.result()`` one read and nothing else. Before that
read the waiter notes the dispatcher's count of commits (``Waiters.commits``); if the
count has not moved when its ticket opens, nothing was committed in between and it need
not read again.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import job as J
from .arguments import check_wait
from .errors import JobCancelled, JobFailed, NoSuchJob, UnreadableResult
from .store.results import BATCH

if TYPE_CHECKING:
    from .handle import Job
    from .queue import Queue
    from .waiters import Ticket, Waiters

POLL = 0.05  # seconds between looks for changes no dispatcher of ours hands over
POLL_SHARE = 20  # pending jobs are read again at most every POLL_SHARE x the last read
POLL_MAX = 5.0
STREAM_WAIT = 0.05  # seconds h.result() waits for its job among those kept ahead (waiters)
GONE = "gone"  # not a state: the job is not in the queue (forgotten)


class Collecting:
    """The jobs of one queue a wait has not yet seen end."""

    def __init__(self, queue: Queue, ids: Iterable[str], event: threading.Event, *,
                 each: bool) -> None:
        self.queue = queue
        self.event = event
        self.each = each
        # id -> its state as last read (None: not read yet)
        self.pending: dict[str, str | None] = dict.fromkeys(ids)
        self.next_poll = 0.0
        self._per_job = 0.0  # seconds one job's read took, at most, in a read of many
        self._version: int | None = None
        self._waiters: Waiters | None = None
        self._ticket: Ticket | None = None

    def start(self, first: Sequence[J.ResultRecord] | None = None,
              seen: int | None = None) -> list[J.ResultRecord]:
        """Read every job (or take ``first``, that read, and ``seen``, the dispatcher's
        ``commits`` taken before it); watch those not ended with this process's
        dispatcher, and read them once more if it committed outcomes meanwhile."""
        d = self.queue.dispatcher
        live = d is not None and d.alive
        if first is None:
            seen = d.waiters.commits if d is not None and live else None
            ended = self._read(list(self.pending))
        else:
            ended = self._known(first)
        self.next_poll = time.monotonic() + self._interval()
        if not self.pending or d is None or not live:
            return ended
        self._waiters = d.waiters
        self._ticket, commits = d.waiters.open(self.pending, self.event, each=self.each)
        if commits != seen:
            ended += self._read(list(self.pending))
        return ended

    def _interval(self) -> float:
        return min(max(POLL, POLL_SHARE * self._per_job * len(self.pending)), POLL_MAX)

    def collect(self, now: float) -> list[J.ResultRecord]:
        """The jobs seen ended since the last call: handed by the dispatcher, read because
        it told of another outcome, or read by polling when it is time."""
        ended: list[J.ResultRecord] = []
        read: set[str] = set()
        if self._ticket is not None and self._waiters is not None:
            handed, touched = self._waiters.take(self._ticket)
            for job_id, blob in handed.items():
                if job_id in self.pending:
                    del self.pending[job_id]
                    ended.append(J.ResultRecord(job_id, J.DONE, result=blob))
            read = touched & self.pending.keys()
        polled = bool(self.pending) and now >= self.next_poll
        if polled:
            version = self.queue._store.data_version()
            if version != self._version:
                self._version = version
                read = set(self.pending)
            self.next_poll = now + self._interval()
        d = self.queue.dispatcher
        if self.pending and (polled or d is None or not d.alive):
            self._check_served()
        if read:
            ended += self._read([job_id for job_id in self.pending if job_id in read])
        return ended

    def _read(self, ids: Sequence[str]) -> list[J.ResultRecord]:
        t0 = time.perf_counter()
        ended = []
        for start in range(0, len(ids), BATCH):  # the records of one query at a time
            chunk = ids[start:start + BATCH]
            rows = self.queue._store.results(chunk)
            ended += self._known([rows.get(job_id) or J.ResultRecord(job_id, GONE)
                                  for job_id in chunk])
        if len(ids) >= 100:  # a read of a few says little of the cost of a read of many
            self._per_job = max(self._per_job, (time.perf_counter() - t0) / len(ids))
        return ended

    def _known(self, rows: Sequence[J.ResultRecord]) -> list[J.ResultRecord]:
        """The ended ones of jobs just read (the others stay pending, as read)."""
        ended = []
        for row in rows:
            if row.state != GONE and not row.has_ended:
                self.pending[row.id] = row.state
                continue
            del self.pending[row.id]
            ended.append(row)
        if ended and self._ticket is not None and self._waiters is not None:
            self._waiters.settled(self._ticket, [r.id for r in ended])
        return ended

    def _check_served(self) -> None:
        """``DispatcherDied`` if nothing would ever run the jobs waited for."""
        needs_run = any(state in (J.READY, J.RUNNING) for state in self.pending.values())
        self.queue._check_served(lambda: _named(self.first()), needs_run=needs_run)

    def first(self) -> J.ResultRecord:
        """The first job still waited for, as committed now."""
        job_id = next(iter(self.pending))
        return self.queue._store.results([job_id]).get(job_id) or J.ResultRecord(job_id, GONE)

    def close(self) -> None:
        if self._ticket is not None and self._waiters is not None:
            self._waiters.close(self._ticket)
            self._ticket = None


class ItemCollecting:
    """The items of chunked maps (``MapItem`` handles) a wait has not yet seen end, read
    through their maps' views (a chunk's results are loaded once for all its items).
    Woken when this process's dispatcher commits a chunk of one of their maps, else read
    every ``POLL`` seconds. A read looks at the items in the order given and stops, per
    map, at the first one not ended: it costs what the chunks ended since hold, not a read
    per pending item (an item that waits for a retry holds back the report of those after
    it in ``as_completed``, not their running)."""

    def __init__(self, queue: Queue, items: Iterable[Job], event: threading.Event, *,
                 each: bool) -> None:
        self.queue = queue
        self.event = event
        self.each = each
        self.items: dict[str, Any] = {}
        for h in items:
            self.items.setdefault(h.id, h)
        self.pending: dict[str, str | None] = dict.fromkeys(self.items)
        self.errors: dict[str, Exception] = {}  # results that cannot be loaded here
        self.next_poll = 0.0
        self._waiters: Waiters | None = None
        self._ticket: Ticket | None = None

    def start(self, first: Sequence[J.ResultRecord] | None = None,
              seen: int | None = None) -> list[J.ResultRecord]:
        d = self.queue.dispatcher
        if d is not None and d.alive and self.pending:
            self._waiters = d.waiters
            maps = {h._view.map_id for h in self.items.values()}
            self._ticket, _ = d.waiters.open(maps, self.event, each=True)
        return self._read()

    def collect(self, now: float) -> list[J.ResultRecord]:
        touched = False
        if self._ticket is not None and self._waiters is not None:
            touched = bool(self._waiters.take(self._ticket)[1])
        polled = now >= self.next_poll
        if not (touched or polled) or not self.pending:
            return []
        ended = self._read()
        if polled and self.pending:
            needs_run = any(state in (J.READY, J.RUNNING) for state in self.pending.values())
            self.queue._check_served(lambda: _named(self.first()), needs_run=needs_run)
        return ended

    def _read(self) -> list[J.ResultRecord]:
        self.next_poll = time.monotonic() + POLL
        ended: list[J.ResultRecord] = []
        blocked: set[str] = set()  # maps whose read stopped at an item not ended
        for job_id in list(self.pending):
            h = self.items[job_id]
            view = h._view
            if view.map_id in blocked:
                continue
            try:
                state, found, _ = view.outcome(h.index)
            except NoSuchJob:
                state, found = GONE, None
            except UnreadableResult as exc:
                self.errors[job_id] = exc
                state, found = J.DONE, None
            if state != GONE and state not in J.ENDED:
                self.pending[job_id] = state
                blocked.add(view.map_id)
                continue
            del self.pending[job_id]
            ended.append(self._record(job_id, state, found))
        return ended

    def _record(self, job_id: str, state: str, found: Any) -> J.ResultRecord:
        if state == J.DONE:
            blob = None if job_id in self.errors or found is None else pickle.dumps(found)
            return J.ResultRecord(job_id, state, result=blob)
        name = self.items[job_id]._view.name if state != GONE else None
        if state == J.FAILED:
            return J.ResultRecord(job_id, state, name, f"{found.exc_type}: {found.exc_value}",
                                  error=found)
        return J.ResultRecord(job_id, state, name, state)

    def first(self) -> J.ResultRecord:
        job_id = next(iter(self.pending))
        return J.ResultRecord(job_id, self.pending[job_id] or J.READY,
                              self.items[job_id]._view.name)

    def close(self) -> None:
        if self._ticket is not None and self._waiters is not None:
            self._waiters.close(self._ticket)
            self._ticket = None


Group = Collecting | ItemCollecting  # the waits of one queue


def ended(groups: Sequence[Group], event: threading.Event, deadline: float | None,
          timeout: float | None, first: Sequence[J.ResultRecord] | None = None,
          seen: int | None = None) -> Iterator[tuple[Group, J.ResultRecord]]:
    """Each job of ``groups`` once it is seen ended, with its group; ``TimeoutError`` at
    ``deadline`` (``time.monotonic()``) if some have not. ``first`` and ``seen``: the jobs
    of a single group read already (see ``Collecting.start``)."""
    try:
        for group in groups:
            for record in group.start(first, seen):
                yield group, record
        while any(group.pending for group in groups):
            event.clear()  # before taking: an outcome handed after the take sets it again
            now = time.monotonic()
            got = False
            for group in groups:
                for record in group.collect(now):
                    got = True
                    yield group, record
            if got:
                continue
            if deadline is not None and now >= deadline:
                raise TimeoutError(_still(groups, timeout))
            wake = min(group.next_poll for group in groups if group.pending)
            if deadline is not None:
                wake = min(wake, deadline)
            event.wait(max(wake - now, 0.0))
    finally:
        for group in groups:
            group.close()


def _named(record: J.ResultRecord) -> str:
    return f"job {record.id}" + (f" ({record.name})" if record.name else "")


def _still(groups: Sequence[Group], timeout: float | None) -> str:
    left = [g for g in groups if g.pending]
    record = left[0].first()
    n = sum(len(g.pending) for g in left)
    why = f": {record.reason}" if record.reason and record.reason != record.state else ""
    if n == 1:
        return f"{_named(record)} is still {record.state} after {timeout}s{why}"
    return (f"{n} jobs have not ended after {timeout}s; the first, {_named(record)}, is "
            f"{record.state}{why}")


def wait_one(queue: Queue, job_id: str, timeout: float | None) -> J.ResultRecord:
    """Until the job ends: its ``ResultRecord`` (``TimeoutError`` after ``timeout``). A job
    that ended already costs one read and nothing else."""
    timeout = check_wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    d = queue.dispatcher
    seen = None
    if d is not None:
        kept, blob = d.waiters.take_ahead(job_id)
        if not kept and d.alive:  # a reader that caught up: the next commits may keep it
            kept, blob = d.waiters.wait_ahead(job_id, STREAM_WAIT if timeout is None
                                              else min(STREAM_WAIT, timeout))
        if kept:
            return J.ResultRecord(job_id, J.DONE, result=blob)
        seen = d.waiters.commits
    record = queue._store.results([job_id]).get(job_id) or J.ResultRecord(job_id, GONE)
    if record.has_ended or record.state == GONE:
        return record
    event = threading.Event()
    for _, last in ended([Collecting(queue, [job_id], event, each=True)], event, deadline,
                         timeout, first=[record], seen=seen):
        return last
    raise AssertionError("unreachable: ended() yields the job or raises")


# -- what a record means for result() ---------------------------------------------------------


def failure(queue: Queue, record: J.ResultRecord) -> JobFailed | NoSuchJob | None:
    """What ``result()`` raises for an ended job: ``JobFailed``, ``JobCancelled``, or
    ``NoSuchJob`` for a forgotten one; None if it is done."""
    if record.state == J.DONE:
        return None
    if record.state == GONE:
        return NoSuchJob(
            f"job {record.id} is not in queue {queue.path}: it was forgotten with its result "
            "(q.forget(), nbqueue gc, or the queue's keep= policy), or it belongs to another "
            "queue directory. A forgotten result cannot be read; submit the job again")
    name = record.name or ""
    if record.state in (J.CANCELLED, J.REJECTED):
        return JobCancelled(record.id, "JobCancelled", f"{record.state}: {record.reason}",
                            name=name)
    error = record.error or J.RemoteError("JobFailed", record.reason)
    return JobFailed(record.id, error.exc_type, error.exc_value, error.traceback, name=name)


def value(queue: Queue, record: J.ResultRecord) -> Any:
    """The result of an ended job, or the exception ``result()`` raises for it."""
    error = failure(queue, record)
    if error is not None:
        raise error
    if record.result is None:
        return None
    try:
        return pickle.loads(record.result)
    except Exception as exc:
        name = record.name
        if name is None:
            try:
                name = queue._store.get(record.id).name
            except NoSuchJob:
                name = "?"
        raise UnreadableResult(
            f"job {record.id} ({name}) succeeded, but its result cannot be loaded in "
            f"this process ({type(exc).__name__}: {exc}). Load it where the modules and "
            "classes it uses are importable (the same environment as its worker), or "
            "have the job return plain data") from exc
