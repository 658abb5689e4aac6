"""The queue directory: its layout, format, and every transition as one transaction.

The directory is a ``diskcache.Cache`` opened with ``eviction_policy="none"`` and
``sqlite_synchronous=2`` (FULL). The queue's own tables live in the same SQLite
file as diskcache's values and every transition runs inside ``cache.transact()``
(``BEGIN IMMEDIATE``): claiming jobs, completing them together with their
children, results and journal, releasing resources and waking dependents is one
atomic commit. This module is the only one that knows about diskcache or SQL.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache

from .. import job as J
from ..errors import NoSuchJob, QueueLocked
from ..job import LOG_CAP, Claimed, NewJob, Outcome
from ..message import Function
from .directory import Owner, check_directory
from .disk import SyncedDisk
from .resources import why_not
from .schema import ADDED_COLUMNS, FORMAT, SCHEMA, _statements
from .transitions import Tx, load_blob
from .turn import Turnstile

__all__ = ["Store", "OpenTransaction", "Owner", "FORMAT", "LOG_CAP", "Claimed", "NewJob", "Outcome",
           "check_directory"]

log = logging.getLogger(__name__)


_JOB_COLUMNS = (
    "id, name, state, kind, key, reason, blocker, priority, created, started, ended, "
    "not_before, attempt, deaths, parent, options, progress, error, owner, why"
)


class Store:
    """One queue directory. Every public method that changes it is one transaction."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 60.0) -> None:
        self.path = Path(path).absolute()
        self._functions: dict[str, Function] = {}
        self._options: dict[str, J.Options] = {}  # stored options text -> parsed
        check_directory(self.path)
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.mkdir(mode=0o700)
        elif not os.listdir(self.path):
            os.chmod(self.path, 0o700)
        self._turn = Turnstile(self.path)
        try:
            self.cache = diskcache.Cache(
                str(self.path), timeout=timeout, disk=SyncedDisk, eviction_policy="none",
                sqlite_synchronous=2,
            )
        except diskcache.Timeout:
            raise QueueLocked(f"queue {self.path} stayed locked while opening it") from None
        self._self_test()
        with self._txn() as sql:
            for statement in _statements(SCHEMA):
                sql(statement)
            for table, column, declaration in ADDED_COLUMNS:  # a queue an older nbqueue made
                if column not in {r[1] for r in sql(f"PRAGMA table_info({table})")}:
                    sql(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            sql("INSERT OR IGNORE INTO nbq_meta VALUES ('format', ?)", (FORMAT,))
            sql("INSERT OR IGNORE INTO nbq_meta VALUES ('created', ?)", (time.time(),))
            sql("INSERT OR IGNORE INTO nbq_meta VALUES ('seq', 0)")
            sql("INSERT OR IGNORE INTO nbq_count VALUES (':changes', 0)")
            for state in J.STATES:
                sql("INSERT OR IGNORE INTO nbq_count VALUES (?, 0)", (state,))
        self.format = int(self._one("SELECT value FROM nbq_meta WHERE key = 'format'"))

    def _self_test(self) -> None:
        # The store rests on settings diskcache keeps in its Settings table.
        policy = self.cache.eviction_policy
        if policy != "none":
            self.cache.reset("eviction_policy", "none")
        sync = self._one("PRAGMA synchronous")
        if int(sync) != 2:
            self.cache.reset("sqlite_synchronous", 2)

    def close(self) -> None:
        self.cache.close()
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
        # inside an open transaction (``begin``) this one joins it, and that one's
        # durability holds (SQLite refuses to change it within a transaction)
        con = self.cache._con  # this thread's connection (the property checks pid and thread)
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
        try:
            with self.cache.transact():
                if turn is not None:
                    self._turn.leave(turn)
                    turn = None
                before = con.total_changes
                yield sql
                if con.total_changes != before:
                    sql("UPDATE nbq_count SET n = n + 1 WHERE state = ':changes'")
        except diskcache.Timeout:
            raise QueueLocked(
                f"queue {self.path} stayed locked by another writer for {self.cache.timeout:.0f}s; "
                "a process may be stuck holding it. Try again, or stop the other process."
            ) from None
        finally:
            self._turn.leave(turn)
            if not durable:
                sql("PRAGMA synchronous = 2")

    @contextmanager
    def _tx(self, now: float, *, durable: bool = True, gives_way: bool = False) -> Iterator[Tx]:
        """One transaction with its ``Tx``; the counts per state are written at its end."""
        with self._txn(durable=durable, gives_way=gives_way) as sql:
            tx = Tx(self, sql, now)
            yield tx
            tx.write_counts()

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.cache._sql(query, params).fetchall()

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:
        row = self.cache._sql(query, params).fetchone()
        return None if row is None else row[0]

    def changes(self) -> int:
        """A counter bumped by every committed transition (cheap to poll)."""
        return int(self._one("SELECT n FROM nbq_count WHERE state = ':changes'"))

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
        with self._tx(now) as tx:
            return tx.insert(jobs)

    # -- claiming, completing ---------------------------------------------------------------

    def claim(self, owner: str, n: int, *, lease: float, handed: int = 0,
              now: float | None = None, within: OpenTransaction | None = None) -> list[Claimed]:
        """Promote due jobs and claim up to ``n`` ready ones whose resources are free.

        The last ``handed`` of them are marked as handed ahead (prefetched). ``within``:
        in that open transaction instead of one of its own."""
        now = time.time() if now is None else now
        if within is not None:
            within.tx.now = now
            return within.tx.claim(owner, n, lease, handed)
        with self._tx(now, durable=False, gives_way=True) as tx:
            return tx.claim(owner, n, lease, handed)

    def complete(self, owner: str, outcomes: Sequence[Outcome], *, claim: int = 0,
                 lease: float = 30.0, handed: int = 0, started: Sequence[str] = (),
                 now: float | None = None, within: OpenTransaction | None = None,
                 ) -> tuple[list[bool], list[Claimed]]:
        """Commit a batch of outcomes, then claim up to ``claim`` more: one transaction.

        Each outcome is fenced: it changes nothing unless ``owner`` still holds the job
        with that claim. Returns which outcomes took effect, and the new claims.
        ``started`` lists handed-ahead jobs now known to have started. Outcomes are
        durable (fsync'd); a transaction that only claims is not (see ``_txn``).
        ``within``: in that open transaction (the caller commits it)."""
        now = time.time() if now is None else now
        if within is not None:
            within.tx.now = now
            return self._complete(within.tx, owner, outcomes, claim, lease, handed, started)
        with self._tx(now, durable=bool(outcomes), gives_way=True) as tx:
            return self._complete(tx, owner, outcomes, claim, lease, handed, started)

    @staticmethod
    def _complete(tx: Tx, owner: str, outcomes: Sequence[Outcome], claim: int, lease: float,
                  handed: int, started: Sequence[str]) -> tuple[list[bool], list[Claimed]]:
        applied = tx.settle_many(owner, outcomes)
        if started:
            tx.many("UPDATE nbq_job SET handed = 0, started = ? WHERE id = ? AND owner = ? "
                    "AND state = 'running'", [(tx.now, job_id, owner) for job_id in started])
        claimed = tx.claim(owner, claim, lease, handed) if claim > 0 else []
        return applied, claimed

    def begin(self, now: float | None = None) -> OpenTransaction:
        """A durable transaction left open for the caller's next calls (``within=``), in
        this thread, until its ``commit()`` or ``abort()``. The dispatcher claims the next
        jobs in one while workers run, and settles their outcomes in it: one commit."""
        return OpenTransaction(self, time.time() if now is None else now)

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
        owners = self._rows("SELECT DISTINCT owner FROM nbq_job WHERE state = 'running'")
        return any((o := Owner.parse(text or "")) is None or o.is_dead() for text, in owners)

    def release_owner(self, owner: str, now: float | None = None, *,
                      cause: str = "its dispatcher stopped") -> int:
        """A dispatcher stopping cleanly hands its jobs back: ``cause`` is what stopped
        the attempts that had started ("the kernel restarted"); none of them counts
        against its job's retries (a courtesy, not a guarantee: recovery does the same)."""
        now = time.time() if now is None else now
        with self._tx(now) as tx:
            sql = tx.sql
            rows = sql("SELECT id FROM nbq_job WHERE state = 'running' AND owner = ?",
                       (owner,)).fetchall()
            for (job_id,) in rows:
                tx.put_back(job_id, cause=cause)
            sql("UPDATE nbq_dispatcher SET stopped = ? WHERE owner = ?", (now, owner))
            return len(rows)

    def next_due(self) -> float | None:
        """The earliest ``not_before`` of a job waiting for its time (index seek)."""
        return self._one("SELECT MIN(not_before) FROM nbq_job INDEXED BY nbq_job_time "
                         "WHERE state = 'waiting' "
                         "AND blocker = 'time'")

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
        with self._txn(durable=False) as sql:
            for job_id, value in progress.items():
                sql("UPDATE nbq_job SET progress = ? WHERE id = ? AND state = 'running'",
                    (json.dumps(value), job_id))
            for job_id, chunk in logs.items():
                row = sql("SELECT log FROM nbq_job WHERE id = ? AND state = 'running'",
                          (job_id,)).fetchone()
                if row is not None:
                    sql("UPDATE nbq_job SET log = ? WHERE id = ?",
                        (J.cap_log((row[0] or "") + chunk), job_id))

    # -- user actions ---------------------------------------------------------------------

    def cancel(self, job_id: str, now: float | None = None) -> str:
        """Cancel a job: at once unless running (then its dispatcher kills it)."""
        now = time.time() if now is None else now
        with self._tx(now) as tx:
            return tx.cancel(job_id)

    def retry(self, job_id: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._tx(now) as tx:
            tx.rerun(job_id, reason="retried by hand")

    def approve(self, job_id: str, comment: str = "", *, approved: bool = True) -> None:
        with self._tx(time.time()) as tx:
            tx.decide(job_id, approved, comment)

    def set_resource(self, name: str, *, capacity: int | None = None,
                     available: bool | None = None) -> None:
        with self._tx(time.time()) as tx:
            tx.set_resource(name, capacity, available)

    def resources(self) -> dict[str, dict[str, Any]]:
        """Every declared or held resource: capacity, availability, holders since when."""
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
        for entry in out.values():
            entry.setdefault("waiting", 0)
        return dict(sorted(out.items()))

    def payload(self, job_id: str) -> bytes | None:
        return self._one("SELECT payload FROM nbq_job WHERE id = ?", (job_id,))

    def forget(self, states: Sequence[str], older_than: float | None) -> int:
        with self._txn() as sql:
            part = f"SELECT id, result_ref FROM nbq_job WHERE state IN ({','.join('?' * len(states))})"
            params: list[Any] = list(states)
            if older_than is not None:
                part += " AND ended < ?"
                params.append(older_than)
            # top-level jobs and children are indexed by state apart
            query = f"{part} AND parent IS NULL UNION ALL {part} AND parent IS NOT NULL"
            rows = sql(query, params + params).fetchall()
            for job_id, _ in rows:
                sql("DELETE FROM nbq_job WHERE id = ?", (job_id,))
                sql("DELETE FROM nbq_need WHERE job = ?", (job_id,))
                sql("DELETE FROM nbq_journal WHERE job = ?", (job_id,))
        for _, ref in rows:
            if ref:
                self.cache.delete(ref)
        return len(rows)

    # -- reading ----------------------------------------------------------------------------

    def get(self, job_id: str) -> J.JobRecord:
        row = self.cache._sql(f"SELECT {_JOB_COLUMNS} FROM nbq_job WHERE id = ?",
                              (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no job {job_id!r} in queue {self.path}; list them with q.jobs()")
        return self._records([row])[0]

    def find(self, id_or_key: str) -> str | None:
        row = self._one("SELECT id FROM nbq_job WHERE id = ?", (id_or_key,))
        if row is None:
            row = self._one("SELECT id FROM nbq_job WHERE key = ?", (id_or_key,))
        return row

    def newest_named(self, name: str) -> str | None:
        return self._one("SELECT id FROM nbq_job WHERE name = ? ORDER BY seq DESC LIMIT 1",
                         (name,))

    def list_jobs(self, state: str | None = None, name: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[J.JobRecord]:
        where, params = [], []
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
            query = f"SELECT {_JOB_COLUMNS}, seq FROM nbq_job"
            if where:
                query += " WHERE " + " AND ".join(where)
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return self._records([r[:-1] for r in self._rows(query, params)])

    def children(self, job_id: str) -> list[str]:
        return [r[0] for r in self._rows(
            "SELECT id FROM nbq_job WHERE parent = ? ORDER BY step IS NOT NULL, step, position, seq",
            (job_id,))]

    def counts(self) -> dict[str, int]:
        return {state: int(n) for state, n in self._rows(
            "SELECT state, n FROM nbq_count WHERE state != ':changes'")}

    # the job tree, as the panel pages it: top-level jobs, and a parent's direct children

    def top_counts(self) -> dict[str, int]:
        """Jobs without a parent, per state (a scan of a partial index of them only)."""
        counts = dict.fromkeys(J.STATES, 0)
        for state, n in self._rows("SELECT state, COUNT(*) FROM nbq_job INDEXED BY nbq_job_top "
                                   "WHERE parent IS NULL GROUP BY state"):
            counts[state] = int(n)
        return counts

    def child_counts(self, parent_id: str) -> dict[str, int]:
        """A job's direct children per state; states it has none in are left out."""
        return {state: int(n) for state, n in self._rows(
            "SELECT state, COUNT(*) FROM nbq_job INDEXED BY nbq_job_parent WHERE parent = ? "
            "GROUP BY state", (parent_id,))}

    def tree_jobs(self, state: str, *, parent: str | None = None, limit: int,
                  offset: int = 0) -> list[J.JobRecord]:
        """Jobs in ``state``, oldest first: top-level ones (``parent=None``), or the direct
        children of ``parent``."""
        if parent is None:
            return self._records(self._rows(
                f"SELECT {_JOB_COLUMNS} FROM nbq_job INDEXED BY nbq_job_top "
                "WHERE state = ? AND parent IS NULL ORDER BY seq LIMIT ? OFFSET ?",
                (state, limit, offset)))
        return self._records(self._rows(
            f"SELECT {_JOB_COLUMNS} FROM nbq_job INDEXED BY nbq_job_parent "
            "WHERE parent = ? AND state = ? ORDER BY seq LIMIT ? OFFSET ?",
            (parent, state, limit, offset)))

    def _records(self, rows: Sequence[Sequence[Any]]) -> list[J.JobRecord]:
        """Records of rows. The reason of a job waiting for a resource was written when it
        parked; it is read as of now (who holds the resource now, or waits before it)."""
        records = [_record(row) for row in rows]
        reasons: dict[tuple[str, int, int], str | None] = {}
        for i, record in enumerate(records):
            blocker = record.blocker or ""
            if record.state != J.WAITING or not blocker.startswith(J.BLOCK_RESOURCE):
                continue
            name = blocker[len(J.BLOCK_RESOURCE):]
            wants = (name, record.options.resources.get(name, 1), record.priority)
            if wants not in reasons:
                reasons[wants] = why_not(self.cache._sql, *wants)
            reason = reasons[wants]
            if reason is not None and reason != record.reason:
                records[i] = dataclasses.replace(record, reason=reason)
        return records

    def result_blob(self, job_id: str) -> bytes | None:
        row = self.cache._sql("SELECT result, result_ref FROM nbq_job WHERE id = ?",
                              (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no job {job_id!r} in queue {self.path}")
        return load_blob(self, row[0], row[1])

    def log_text(self, job_id: str) -> str:
        return self._one("SELECT log FROM nbq_job WHERE id = ?", (job_id,)) or ""



class OpenTransaction:
    """A store transaction kept open across calls (see ``Store.begin``)."""

    def __init__(self, store: Store, now: float) -> None:
        self._store = store
        self._context = store._tx(now, gives_way=True)
        self.tx = self._context.__enter__()

    def commit(self) -> None:
        try:
            self._context.__exit__(None, None, None)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Roll back everything done in it."""
        try:
            self._context.__exit__(RuntimeError, RuntimeError("transaction aborted"), None)
        except RuntimeError:
            pass
        con = self._store.cache._con
        if con.in_transaction:  # a COMMIT that failed leaves it open
            con.execute("ROLLBACK")


def _record(row: Sequence[Any]) -> J.JobRecord:
    (id_, name, state, kind, key, reason, blocker, priority, created, started, ended, not_before,
     attempt, deaths, parent, options, progress, error, owner, why) = row
    return J.JobRecord(
        id=id_, name=name, state=state, kind=kind, key=key, reason=reason or "", blocker=blocker,
        priority=priority, created=created, started=started, ended=ended, not_before=not_before,
        attempt=attempt, deaths=deaths, parent=parent, options=J.Options.from_dict(json.loads(options)),
        progress=json.loads(progress) if progress else None,
        error=J.RemoteError.from_dict(json.loads(error)) if error else None, owner=owner,
        why=why or "",
    )
