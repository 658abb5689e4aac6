"""The queue directory: its layout, format, and every transition as one transaction.

The directory is a ``diskcache.Cache`` opened with ``eviction_policy="none"`` and
``sqlite_synchronous=2`` (FULL). The queue's own tables live in the same SQLite
file as diskcache's values and every transition runs inside ``cache.transact()``
(``BEGIN IMMEDIATE``): claiming jobs, completing them together with their
children, results and journal, releasing resources and waking dependents is one
atomic commit. ``backend`` is the only module that imports diskcache: it names and
checks the parts of it outside its public API that the store uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from .. import job as J
from ..arguments import KEEP
from ..errors import NoSuchJob, QueueLocked, StoreError, StoreFull
from ..job import LOG_CAP, Claimed, NewJob, Outcome, Task
from ..message import Function
from . import gates
from .backend import QueueCache, Timeout, value_row
from .blobs import load_blob
from .cleanup import delete_jobs, needed_by_active
from .directory import Owner, check_directory, corrupt
from .disk import SyncedDisk
from .faults import ensure_reserve, free_reserve, store_error
from .files import DB
from .holder import locked_message
from .listing import JOB_COLUMNS as _JOB_COLUMNS
from .listing import JobListing
from .mapreads import MapReading
from .opening import open_cache, open_directory
from .pauses import PauseStore
from .rates import rates
from .reader import Reader, is_damage
from .resources import why_not
from .results import ResultReads
from .schedules import ScheduleStore
from .schema import FORMAT, is_current
from .transitions import Tx
from .turn import Turnstile

__all__ = ["Store", "Owner", "FORMAT", "LOG_CAP", "Claimed", "NewJob", "Outcome", "Task",
           "check_directory"]

log = logging.getLogger(__name__)
# pages of write-ahead log after which SQLite checkpoints in a COMMIT of a connection that
# leaves checkpoints to ``checkpoint_log`` (SQLite's default limit is 1,000: about 4 MB)
BACKSTOP_PAGES = 10_000
T = TypeVar("T")




class Store(JobListing, MapReading, ResultReads, ScheduleStore, PauseStore):
    """One queue directory. Every public method that changes it is one transaction."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path).absolute()
        self._functions: dict[str, Function] = {}
        self._options: dict[str, J.Options] = {}  # stored options text -> parsed
        # the longest one transaction of each thread (by name) held the write lock, in
        # seconds, from BEGIN to the end of COMMIT: a figure for benchmarks
        self.longest_holds: dict[str, float] = {}
        # SQLite's data_version as the last ``complete`` read it, inside its transaction:
        # it changed since an earlier read if another connection committed in between
        self.seen_version: int | None = None
        self._holds: dict[int, float] = {}  # the same by thread id (``_note_hold``)
        self.timeout = timeout
        self._turn = Turnstile(self.path)
        # an existing queue is read read-only until the first write (``cache``, reader.py)
        self._cache: QueueCache | None = open_directory(self.path, timeout)
        self._opening = threading.Lock()
        self._reader = Reader(self.path / DB, timeout)
        self._disk: SyncedDisk | None = None  # reads value files while read-only
        try:
            current = self._cache is not None or is_current(self._reader.execute)
        except sqlite3.DatabaseError as exc:
            self._check_damage(exc)
            raise
        if not current:  # a queue an older nbqueue wrote: upgraded before it is read
            self._open_writer()
        self.format = int(self._one("SELECT value FROM nbq_meta WHERE key = 'format'"))

    @property
    def cache(self) -> QueueCache:
        """diskcache's ``Cache`` of the directory. The first use switches a store that
        was reading to writing (``_open_writer``)."""
        cache = self._cache
        return cache if cache is not None else self._open_writer()

    @property
    def writing(self) -> bool:
        """Whether this store has switched to writing (it reads read-only until then)."""
        return self._cache is not None

    def _open_writer(self) -> QueueCache:
        """Switch to writing, at the first write: diskcache's connection, settings and
        schema (``open_cache``), then recovery: the jobs of dead dispatchers go back. A
        store that only reads does neither, so it needs no write lock and no writable
        file system."""
        with self._opening:
            if self._cache is not None:
                return self._cache
            check_directory(self.path)  # the files may have changed since it was opened
            self._cache = open_cache(self.path, self.timeout)
        self.recover()
        return self._cache

    def _check_damage(self, exc: BaseException) -> None:
        """Raise ``CorruptQueue`` for a SQLite error that says the file is damaged (returns
        for any other error, which the caller raises as it is)."""
        if is_damage(exc):
            raise corrupt(self.path, str(exc), opening=False) from exc

    def _execute(self, query: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run a read on this thread's connection: diskcache's once writing (inside an
        open transaction it sees that transaction's changes), else a read-only one."""
        cache = self._cache
        if cache is not None:
            return cache.sql(query, params)  # type: ignore[no-any-return]
        return self._reader.execute(query, params)

    def value(self, key: str) -> bytes | None:
        """A write-once diskcache value (a large result, large arguments), or None if it
        is gone."""
        cache = self._cache
        if cache is not None:
            found = cache.get(key)
            return None if found is None else bytes(found)
        row = value_row(self._rows, key)
        if row is None:
            return None
        if self._disk is None:
            self._disk = SyncedDisk(str(self.path))
        try:
            return bytes(self._disk.fetch(*row, False))
        except OSError:  # as diskcache's get: the file went missing
            return None

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        self._reader.close()
        self._turn.close()

    # -- plumbing ---------------------------------------------------------------------

    @contextmanager
    def _txn(self, *, durable: bool = True, gives_way: bool = False) -> Iterator[Any]:
        """One transaction. ``durable=False`` skips its fsync (``synchronous=NORMAL`` in WAL):
        only for writes whose loss in an OS crash or power cut changes nothing that
        matters afterwards: claims (their jobs died with the machine and run again),
        heartbeats, live progress. A process crash never loses a commit either way, and
        the next durable commit syncs everything before it.

        ``gives_way``: a transaction of a dispatcher's stream, which waits while another
        writer queues at the turnstile; every other transaction queues there (see ``turn``)."""
        # inside an open transaction (a call made within another) this one joins it, and
        # that one's durability holds (SQLite refuses to change it within a transaction)
        cache = self._cache if self._cache is not None else self._open_writer()
        con = cache.connection  # this thread's connection (the property checks pid and thread)
        sql = con.execute
        joined = con.in_transaction
        durable = durable or joined
        turn = None
        if not joined:
            if gives_way:
                self._turn.give_way()
            else:
                turn = self._turn.take()
        if not durable:
            sql("PRAGMA synchronous = 1")
        held = 0.0
        # value files written in a transaction that fails are deleted (see disk.py)
        disk = cache.values
        files = None if joined else disk.track_written()
        try:
            with cache.transact():
                if not joined:
                    held = time.perf_counter()
                if turn is not None:
                    self._turn.leave(turn)
                    turn = None
                before = con.total_changes
                yield sql
                if con.total_changes != before:
                    sql("UPDATE nbq_count SET n = n + 1 WHERE state = ':changes'")
        except BaseException as exc:
            if files:
                disk.remove_written(files)
            if isinstance(exc, Timeout):
                raise QueueLocked(locked_message(self.path, self.path / DB, cache.timeout,
                                                 "writing to it")) from None
            if isinstance(exc, (sqlite3.OperationalError, OSError)):  # a full disk, an I/O error
                error = store_error(exc, self.path, "writing to it")
                if error is not None:
                    raise error from exc
            elif isinstance(exc, sqlite3.DatabaseError):  # a damaged file
                self._check_damage(exc)
            raise
        finally:
            if files is not None:
                disk.track_written(stop=True)
            if held:
                self._note_hold(time.perf_counter() - held)
            self._turn.leave(turn)
            if not durable:
                sql("PRAGMA synchronous = 2")

    def clear_holds(self) -> None:
        """Start ``longest_holds`` afresh: holds from now on are measured alone."""
        self._holds.clear()
        self.longest_holds.clear()

    def _note_hold(self, seconds: float) -> None:
        ident = threading.get_ident()
        if seconds > self._holds.get(ident, 0.0):  # a new longest: rare, so named then
            self._holds[ident] = seconds
            name = threading.current_thread().name
            self.longest_holds[name] = max(seconds, self.longest_holds.get(name, 0.0))

    @contextmanager
    def _tx(self, now: float, *, durable: bool = True, gives_way: bool = False) -> Iterator[Tx]:
        """One transaction with its ``Tx``; the counts per state are written at its end."""
        with self._txn(durable=durable, gives_way=gives_way) as sql:
            tx = Tx(self, sql, now)
            yield tx
            tx.write_counts()

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._execute(query, params).fetchall()
        except sqlite3.OperationalError as exc:
            self._read_failed(exc)
            raise
        except sqlite3.DatabaseError as exc:
            self._check_damage(exc)
            raise

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        try:
            row = self._execute(query, params).fetchone()
        except sqlite3.OperationalError as exc:
            self._read_failed(exc)
            raise
        except sqlite3.DatabaseError as exc:
            self._check_damage(exc)
            raise
        return None if row is None else row[0]

    def _read_failed(self, exc: BaseException) -> None:
        """Raise the nbqueue error of a read that met an I/O error or a lock held too long
        (returns for any other error, which the caller raises as it is)."""
        error = store_error(exc, self.path, "reading it")
        if error is not None:
            raise error from exc

    def changes(self) -> int:
        """A counter bumped by every committed transition (cheap to poll)."""
        return int(self._one("SELECT n FROM nbq_count WHERE state = ':changes'"))

    def own_checkpoints(self) -> None:
        """This thread's connection leaves the checkpoints of the write-ahead log to
        ``checkpoint_log`` (a dispatcher's stream of commits), but for a backstop at
        ``BACKSTOP_PAGES``. SQLite runs its automatic checkpoint inside the COMMIT that grows
        the log past its limit, after that COMMIT let go of the write lock: timed with the
        COMMIT, it would pass for a long hold of the lock (``longest_holds``)."""
        self.cache.connection.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")

    def checkpoint_log(self) -> None:
        """A passive checkpoint of the write-ahead log (it neither waits for nor blocks a
        writer), on this thread's connection, outside any transaction. One that fails (a
        full disk) is left to the next: the log only grows meanwhile."""
        try:
            self.cache.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except (sqlite3.OperationalError, OSError) as exc:
            log.debug("queue %s: checkpoint failed: %s", self.path, exc)

    def data_version(self) -> int:
        """SQLite's data_version for this thread's connection: changes when others commit."""
        return int(self._one("PRAGMA data_version"))

    # -- submitting ---------------------------------------------------------------------

    def submit_many(self, jobs: Sequence[NewJob], now: float | None = None) -> list[tuple[str, bool]]:
        """Insert jobs in one transaction; returns (id, created) per job, in order.

        A job whose key exists attaches to that job (created False); a failed or
        cancelled one is run again under its id as a new attempt.
        """
        now = time.time() if now is None else now
        try:
            with self._tx(now) as tx:
                return tx.insert(jobs)
        except StoreError as exc:
            names = ", ".join(repr(job.name) for job in jobs[:3]) + (
                f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
            raise type(exc)(f"could not submit job{'s' if len(jobs) > 1 else ''} {names}: "
                            f"{exc}") from exc

    def submit_map(self, new: J.NewMap, now: float | None = None) -> tuple[str, bool]:
        """Insert a chunked map in one transaction, or attach to the one stored under its
        key (whose failed and cancelled items then run again): returns (id, created)."""
        now = time.time() if now is None else now
        try:
            with self._tx(now) as tx:
                return tx.insert_map(new)
        except StoreError as exc:
            raise type(exc)(f"could not submit map {new.job.name!r} of {new.total} items: "
                            f"{exc}") from exc

    def cancel_item(self, map_id: str, index: int) -> str:
        """Cancel one item of a map; returns its state before."""
        with self._tx(time.time()) as tx:
            return tx.cancel_item(map_id, index)

    def retry_item(self, map_id: str, index: int) -> None:
        """Run one failed or cancelled item of a map again."""
        with self._tx(time.time()) as tx:
            tx.retry_item(map_id, index)

    # -- claiming, completing ---------------------------------------------------------------

    def claim(self, owner: str, n: int, *, lease: float, ahead: int = 0,
              now: float | None = None) -> list[Task]:
        """Promote due jobs and claim up to ``n`` ready ones whose resources are free, in a
        transaction that skips the fsync (see ``_txn``).

        The last ``ahead`` of them are marked as handed ahead (prefetched: ``Task.handed``)."""
        now = time.time() if now is None else now
        with self._tx(now, durable=False, gives_way=True) as tx:
            return tx.claim(owner, n, _from_lock(tx, lease), ahead)

    def complete(self, owner: str, outcomes: Sequence[Outcome], *, claim_up_to: int = 0,
                 lease: float = 30.0, ahead: int = 0, started: Sequence[str] = (),
                 now: float | None = None) -> tuple[list[bool], list[Task]]:
        """Commit a batch of outcomes, then claim up to ``claim_up_to`` more (the last
        ``ahead`` of them handed ahead): one transaction.

        Each outcome is fenced: it changes nothing unless ``owner`` still holds the job
        with that claim. Returns which outcomes took effect, and the new claims.
        ``started`` lists handed-ahead jobs now known to have started. Outcomes are
        durable (fsync'd); a transaction that only claims is not (see ``_txn``)."""
        now = time.time() if now is None else now
        with self._tx(now, durable=bool(outcomes), gives_way=True) as tx:
            # read here it costs a fraction of a read outside a transaction (which starts
            # one of its own): the dispatcher's next cycle takes it instead (``seen_version``)
            self.seen_version = int(tx.sql("PRAGMA data_version").fetchone()[0])
            return self._complete(tx, owner, outcomes, claim_up_to, lease, ahead, started)

    @staticmethod
    def _complete(tx: Tx, owner: str, outcomes: Sequence[Outcome], claim_up_to: int,
                  lease: float, ahead: int, started: Sequence[str]) -> tuple[list[bool], list[Task]]:
        applied = tx.settle_many(owner, outcomes)
        if started:
            tx.many("UPDATE nbq_job SET handed = 0, started = ? WHERE id = ? AND owner = ? "
                    "AND state = 'running'", [(tx.now, job_id, owner) for job_id in started])
        claimed = (tx.claim(owner, claim_up_to, _from_lock(tx, lease), ahead)
                   if claim_up_to > 0 else [])
        return applied, claimed

    def heartbeat(self, owner: str, *, lease: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._txn(durable=False) as sql:
            sql("UPDATE nbq_job SET lease_until = ? WHERE state = 'running' AND owner = ?",
                (now + lease, owner))
            sql("UPDATE nbq_dispatcher SET heartbeat = ? WHERE owner = ?", (now, owner))

    def recover(self, now: float | None = None) -> int:
        """Put back jobs whose owner is dead or whose lease expired; returns how many."""
        now = time.time() if now is None else now
        if not self._needs_recovery(now):
            return 0
        with self._tx(now) as tx:
            return tx.recover()

    def _needs_recovery(self, now: float) -> bool:
        # a read first, so that a healthy queue never takes the write lock for this
        if self._one("SELECT 1 FROM nbq_job WHERE state = 'running' AND lease_until < ? LIMIT 1",
                     (now,)):
            return True
        # (a running map has no owner: its chunks do)
        owners = self._rows("SELECT DISTINCT owner FROM nbq_job WHERE state = 'running' "
                            "AND owner IS NOT NULL")
        return any((o := Owner.parse(text or "")) is None or o.is_dead() for text, in owners)

    def release_owner(self, owner: str, now: float | None = None, *,
                      cause: str = "its dispatcher stopped", stopped: bool = True) -> int:
        """A dispatcher stopping cleanly hands its jobs back: ``cause`` is what stopped
        the attempts that had started ("the kernel restarted"); none of them counts
        against its job's retries (a courtesy, not a guarantee: recovery does the same).
        ``stopped=False``: it goes on (it stopped its workers when its lease lapsed)."""
        now = time.time() if now is None else now
        with self._tx(now) as tx:
            sql = tx.sql
            rows = sql("SELECT id FROM nbq_job WHERE state = 'running' AND owner = ?",
                       (owner,)).fetchall()
            for (job_id,) in rows:
                tx.put_back(job_id, cause=cause)
            if stopped:
                sql("UPDATE nbq_dispatcher SET stopped = ? WHERE owner = ?", (now, owner))
            return len(rows)

    def next_due(self) -> float | None:
        """The earliest ``not_before`` of a job waiting for its time, or moment jobs waiting
        for a rate-limited resource may start (two index seeks)."""
        due: float | None = self._one(
            "SELECT MIN(due) FROM (SELECT MIN(not_before) AS due FROM nbq_job "
            "INDEXED BY nbq_job_time WHERE state = 'waiting' AND blocker = 'time' "
            "UNION ALL SELECT MIN(wake) FROM nbq_rate_limit INDEXED BY "
            "nbq_rate_wake WHERE wake IS NOT NULL)")
        return due

    def cancel_requests(self, owner: str) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT id FROM nbq_job WHERE state = 'running' AND owner = ? AND cancel_requested = 1",
            (owner,))]

    # -- dispatchers --------------------------------------------------------------------

    def register_dispatcher(self, owner: str, *, workers: int, executor: str) -> None:
        with self._txn() as sql:
            sql("INSERT OR REPLACE INTO nbq_dispatcher VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                (owner, os.getpid(), socket.gethostname(), time.time(), time.time(), workers,
                 executor))

    def dispatcher_failed(self, owner: str, error: str) -> None:
        with self._txn() as sql:
            sql("UPDATE nbq_dispatcher SET error = ?, stopped = ? WHERE owner = ?",
                (error, time.time(), owner))

    def dispatchers(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT owner, pid, host, started, heartbeat, workers, executor, error, "
                          "stopped FROM nbq_dispatcher ORDER BY started")
        out = []
        for owner, pid, host, started, heartbeat, workers, executor, error, stopped in rows:
            parsed = Owner.parse(owner)
            alive = stopped is None and not (parsed and parsed.is_dead())
            out.append({"owner": owner, "pid": pid, "host": host, "started": started,
                        "heartbeat": heartbeat, "workers": workers, "executor": executor,
                        "error": error, "alive": alive})
        return out

    def write_live(self, progress: dict[str, dict[str, Any]], logs: dict[str, str]) -> None:
        """Write progress and log chunks of running jobs (batched, about once a second)."""
        with self._tx(time.time(), durable=False) as tx:
            for job_id, value in progress.items():
                tx.sql("UPDATE nbq_job SET progress = ? WHERE id = ? AND state = 'running'",
                       (json.dumps(value), job_id))
            for job_id, chunk in logs.items():
                if tx.sql("SELECT 1 FROM nbq_job WHERE id = ? AND state = 'running'",
                          (job_id,)).fetchone():
                    tx.append_log(job_id, chunk)

    # -- user actions ---------------------------------------------------------------------

    def cancel(self, job_id: str, now: float | None = None) -> str:
        """Cancel a job: at once unless running (then its dispatcher kills it). Works on a
        full disk while the directory's reserve lasts (see ``faults``)."""
        now = time.time() if now is None else now

        def cancel() -> str:
            with self._tx(now) as tx:
                return tx.cancel(job_id)

        return self._freeing(cancel)

    def _freeing(self, action: Callable[[], T]) -> T:
        """Run an action that frees space (a cancel, a forget); on a full disk, free a
        piece of the directory's reserve and try again, while pieces are left."""
        while True:
            try:
                return action()
            except StoreFull:
                if not free_reserve(self.path):
                    raise

    def ensure_reserve(self) -> bool:
        """Make the directory's reserve of free space if it is missing and there is room
        (a serving process calls this now and then); True if it exists."""
        return ensure_reserve(self.path)

    def retry(self, job_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx(now) as tx:
            tx.rerun(job_id, reason="retried by hand")

    def decide(self, job_id: str, *, approve: bool, comment: str = "",
               values: dict[str, Any] | None = None) -> None:
        """Approve (``approve=True``) or reject a gate in review, with the answers to its
        fields (``InvalidAnswer`` naming the field if one does not validate; then nothing
        changes)."""
        with self._tx(time.time()) as tx:
            tx.decide(job_id, approve, comment, values)

    def gate_timers(self, now: float | None = None) -> int:
        """Apply the review deadlines and reminders due by ``now`` (a dispatcher's
        housekeeping); returns how many gates changed. A read first: nothing due takes
        no write lock."""
        now = time.time() if now is None else now
        due = gates.next_due(self)
        if due is None or due > now:
            return 0
        with self._tx(now) as tx:
            return tx.gate_timers()

    def note_drained(self, now: float | None = None) -> bool:
        """Record the ``drained`` event if nothing is ready, running or due soon and it
        was not recorded since work last came (once per drain, whichever process sees it
        first); returns whether this call recorded it."""
        if gates.drained_noted(self):
            return False
        with self._tx(time.time() if now is None else now) as tx:
            return tx.note_drained()

    def set_resource(self, name: str, *, capacity: int | None = None,
                     available: bool | None = None, rate: Any = KEEP) -> None:
        """Declare or change a resource (``rate``: ``(n, per)``, None to remove its rate
        limit, ``KEEP`` to leave it)."""
        with self._tx(time.time()) as tx:
            tx.set_resource(name, capacity, available, rate)

    def capacities(self) -> dict[str, int]:
        """The capacity of each declared resource (one never declared has capacity 1)."""
        return {name: int(capacity) for name, capacity in
                self._rows("SELECT name, capacity FROM nbq_resource")}

    def resources(self) -> dict[str, dict[str, Any]]:
        """Every declared or held resource: capacity, availability, holders since when, how
        many jobs wait, its rate limit (``"10/min"``, or None) and, while that holds jobs
        back, when the next may start (``next_start``)."""
        out: dict[str, dict[str, Any]] = {}
        for name, capacity, available in self._rows("SELECT name, capacity, available "
                                                    "FROM nbq_resource ORDER BY name"):
            out[name] = {"capacity": capacity, "available": bool(available), "holders": []}
        for name, job_id, units, since in self._rows("SELECT resource, job, units, since "
                                                     "FROM nbq_hold ORDER BY since"):
            entry = out.setdefault(name, {"capacity": 1, "available": True, "holders": []})
            entry["holders"].append({"job": job_id, "units": units, "since": since})
        # INDEXED BY: SQLite would pick a state index and scan every waiting job (1 s
        # for a million jobs waiting for their time); this reads only resource waiters
        for name, n in self._rows("SELECT substr(blocker, 10), COUNT(*) FROM nbq_job "
                                  "INDEXED BY nbq_job_blocked "
                                  "WHERE state = 'waiting' AND blocker >= 'resource:' AND blocker < 'resource;' "
                                  "GROUP BY blocker"):
            out.setdefault(name, {"capacity": 1, "available": True, "holders": []})["waiting"] = n
        for name, limit in rates(self._execute, time.time()).items():
            out.setdefault(name, {"capacity": 1, "available": True, "holders": []}).update(limit)
        for entry in out.values():
            entry.setdefault("waiting", 0)
            entry.setdefault("rate", None)
            entry.setdefault("next_start", None)
        return dict(sorted(out.items()))

    def payload(self, job_id: str) -> bytes | None:
        payload: bytes | None = self._one("SELECT payload FROM nbq_job WHERE id = ?", (job_id,))
        return payload

    def forget(self, states: Sequence[str], older_than: float | None) -> tuple[int, list[str]]:
        """Delete ended jobs in ``states`` (ended before ``older_than``), except those an
        active job still needs: returns how many were deleted, and the ids kept."""
        return self._freeing(lambda: self._forget(states, older_than))

    def _forget(self, states: Sequence[str], older_than: float | None) -> tuple[int, list[str]]:
        with self._txn() as sql:
            part = (f"SELECT id, result_ref, args_ref FROM nbq_job "
                    f"WHERE state IN ({','.join('?' * len(states))})")
            params: list[Any] = list(states)
            if older_than is not None:
                part += " AND ended < ?"
                params.append(older_than)
            # top-level jobs and children are indexed by state apart
            query = f"{part} AND parent IS NULL UNION ALL {part} AND parent IS NOT NULL"
            rows = sql(query, params + params).fetchall()
            needed = needed_by_active(sql) if rows else set()
            kept = [row[0] for row in rows if row[0] in needed]
            rows = [row for row in rows if row[0] not in needed]
            files = delete_jobs(sql, rows)
        for name in files:
            self.cache.disk.remove(name)
        return len(rows), kept

    # -- reading ----------------------------------------------------------------------------

    def get(self, job_id: str) -> J.JobRecord:
        row = self._execute(f"SELECT {_JOB_COLUMNS} FROM nbq_job WHERE id = ?",
                              (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no job {job_id!r} in queue {self.path}; list them with q.jobs()")
        return self._records([row])[0]

    def find(self, id_or_key: str) -> str | None:
        found: str | None = self._one("SELECT id FROM nbq_job WHERE id = ?", (id_or_key,))
        if found is None:
            found = self._one("SELECT id FROM nbq_job WHERE key = ?", (id_or_key,))
        return found

    def newest_named(self, name: str) -> str | None:
        newest: str | None = self._one("SELECT id FROM nbq_job WHERE name = ? "
                                       "ORDER BY seq DESC LIMIT 1", (name,))
        return newest

    def list_jobs(self, state: str | None = None, name: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[J.JobRecord]:
        where: list[str] = ["kind != 'chunk'"]  # a map's chunks are its own business
        params: list[Any] = []
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if state is not None:
            # top-level jobs and children are indexed by state apart: read both, merged
            where.append("state = ?")
            params.append(state)
            part = f"SELECT {_JOB_COLUMNS}, seq FROM nbq_job WHERE " + " AND ".join(where)
            query = f"{part} AND parent IS NULL UNION ALL {part} AND parent IS NOT NULL"
            params += params
        else:
            query = f"SELECT {_JOB_COLUMNS}, seq FROM nbq_job WHERE " + " AND ".join(where)
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return self._records([r[:-1] for r in self._rows(query, params)])

    def running_owners(self) -> list[str]:
        """The owner of each running job (a map's running chunks included; a running map
        has none)."""
        return [r[0] for r in self._rows("SELECT owner FROM nbq_job WHERE state = 'running' "
                                         "AND owner IS NOT NULL")]

    def children(self, job_id: str) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT id FROM nbq_job WHERE parent = ? AND kind != 'chunk' "
            "ORDER BY step IS NOT NULL, step, position, seq",
            (job_id,))]

    def counts(self) -> dict[str, int]:
        return {state: int(n) for state, n in self._rows(
            "SELECT state, n FROM nbq_count WHERE state != ':changes'")}

    # the job tree, as the panel pages it: top-level jobs, and a parent's direct children

    def top_counts(self) -> dict[str, int]:
        """Jobs without a parent, per state (a scan of a partial index of them only)."""
        counts: dict[str, int] = dict.fromkeys(J.STATES, 0)
        for state, n in self._rows("SELECT state, COUNT(*) FROM nbq_job INDEXED BY nbq_job_listed "
                                   "WHERE parent IS NULL GROUP BY state"):
            counts[state] = int(n)
        return counts

    def child_counts(self, parent_id: str) -> dict[str, int]:
        """A job's direct children per state; states it has none in are left out."""
        return {state: int(n) for state, n in self._rows(
            "SELECT state, COUNT(*) FROM nbq_job INDEXED BY nbq_job_parent WHERE parent = ? "
            "AND kind != 'chunk' GROUP BY state", (parent_id,))}

    def tree_jobs(self, state: str, *, parent: str | None = None, limit: int,
                  offset: int = 0) -> list[J.JobRecord]:
        """Jobs in ``state``, oldest first: top-level ones (``parent=None``; ended ones in
        the order they ended), or the direct children of ``parent``."""
        if parent is None:
            order = ("ended IS NOT NULL ORDER BY ended, seq" if state in J.ENDED
                     else "ended IS NULL ORDER BY seq")
            return self._records(self._rows(
                f"SELECT {_JOB_COLUMNS} FROM nbq_job INDEXED BY nbq_job_listed "
                f"WHERE state = ? AND parent IS NULL AND {order} LIMIT ? OFFSET ?",
                (state, limit, offset)))
        return self._records(self._rows(
            f"SELECT {_JOB_COLUMNS} FROM nbq_job INDEXED BY nbq_job_parent "
            "WHERE parent = ? AND state = ? AND kind != 'chunk' ORDER BY seq LIMIT ? OFFSET ?",
            (parent, state, limit, offset)))

    def _records(self, rows: Sequence[Sequence[Any]]) -> list[J.JobRecord]:
        """Records of rows. What blocks a job waiting for a resource was recorded when it
        parked; it is read as of now (who holds the resource now, or waits before it)."""
        facts: dict[tuple[Any, ...], J.Blocker | None] = {}  # waiters often wait alike
        records = [_record(row, facts) for row in rows]
        blockers: dict[tuple[str, int, int], J.Blocker | None] = {}  # as of now
        for i, (record, row) in enumerate(zip(records, rows, strict=True)):
            key = row[6] or ""
            if record.state != J.WAITING or not key.startswith(J.BLOCK_RESOURCE):
                continue
            name = key[len(J.BLOCK_RESOURCE):]
            wants = (name, record.options.resources.get(name, 1), record.priority)
            if wants not in blockers:
                why = why_not(self._execute, *wants)
                blockers[wants] = J.Blocker(**why) if why is not None else None
            blocker = blockers[wants]
            if blocker is not None and blocker != record.blocker:
                records[i] = dataclasses.replace(record, blocker=blocker)
        return records

    def result_blob(self, job_id: str) -> bytes | None:
        row = self._execute("SELECT result, result_ref FROM nbq_job WHERE id = ?",
                              (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no job {job_id!r} in queue {self.path}")
        return load_blob(self, row[0], row[1])

    def log_text(self, job_id: str) -> str:
        rows = self._rows("SELECT log FROM nbq_log WHERE job = ?", (job_id,))
        if not rows:  # a job of a queue an older nbqueue wrote
            rows = self._rows("SELECT log FROM nbq_job WHERE id = ?", (job_id,))
        return (rows[0][0] if rows else None) or ""



def _from_lock(tx: Tx, lease: float) -> float:
    """A claim's lease, dated from now that its transaction holds the write lock rather
    than from ``tx.now`` (a dispatcher's cycle began earlier): never shorter than a renewal
    of the dispatcher's lease committed before it, whose deadline its workers may already
    go by (see ``nbqueue.lease``)."""
    return lease + max(time.time() - tx.now, 0.0)


def _record(row: Sequence[Any],
            facts: dict[tuple[Any, ...], J.Blocker | None]) -> J.JobRecord:
    """The record of a row; ``facts`` keeps the blockers read so far (by their columns)."""
    (id_, name, state, kind, key, reason, blocker, priority, created, started, ended, not_before,
     attempt, deaths, parent, options, progress, error, owner, why, wait) = row
    found = None
    if state == J.WAITING:
        columns = (blocker, not_before, wait, reason)
        if columns not in facts:
            facts[columns] = J.Blocker.of_row(blocker, not_before, wait, reason or "")
        found = facts[columns]
    return J.JobRecord(
        id=id_, name=name, state=state, kind=kind, key=key, reason=reason or "", blocker=found,
        priority=priority, created=created, started=started, ended=ended, not_before=not_before,
        attempt=attempt, deaths=deaths, parent=parent, options=J.Options.from_dict(json.loads(options)),
        progress=json.loads(progress) if progress else None,
        error=J.RemoteError.from_dict(json.loads(error)) if error else None, owner=owner,
        why=why or "",
    )
