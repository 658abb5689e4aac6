"""Giving space back: ended jobs past their retention, and what nothing refers to.

Everything here keeps the write lock short. What to delete is found by reads, outside any
write transaction (readers never block writers in WAL mode); each deletion is then a
transaction of its own over a small batch, which checks its candidates again under the
lock (something may have changed since the read) and applies ``forget``'s rules: an ended
job that a job not ended yet needs is kept (``needed_by_active``). The time a batch holds
the lock is the time to read what the active jobs need (about 35 ms per 100,000 active
jobs on a loaded 2-core machine) plus its own deletes.

What nothing refers to any more:

- *values*: the diskcache rows (and their files) of large results and arguments whose job
  is gone, or names another value (a job run again drops its earlier result's reference);
  only keys nbqueue writes (``result:<job>:<claim>``, ``args:<job>``) are considered;
- *functions*: stored functions (``nbq_fn``) that no job calls, nor any other table of
  the queue naming a function in a column ``fn`` (a schedule's function, say);
- *files*: value files that no diskcache row names (a transaction that never committed;
  recovery deletes them too, when it finds a dead process).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backend import VALUE_FILES, delete_value, delete_value_at, named_files, values_after
from .files import DB
from .maps import MAP_TABLES
from .schedules import needed_by_schedules

if TYPE_CHECKING:
    from . import Store

BATCH = 500  # ended jobs deleted per transaction
VALUE_CHUNK = 2000  # diskcache rows looked at per read
ACTIVE = "state IN ('waiting', 'ready', 'running', 'review')"
EVER = 1e300  # a cutoff that every end time is before


def needed_by_active(sql: Any) -> set[str]:
    """The ended jobs that jobs not ended yet still need: those they waited for and take
    results from (``needs`` holds the handles passed as arguments); for a generator, the
    children of its earlier steps, whose outcomes it replays each time it runs; the
    parent of a spawned child (the panel and ``h.parent`` show the child under it); and
    those a schedule's calls wait for or take results from (every firing takes them again).

    Reads the active jobs only (through the indexes by state), the journal and the
    schedules."""
    needed: set[str] = set()
    for needs, parent in sql(
            f"SELECT needs, parent FROM nbq_job WHERE {ACTIVE} AND parent IS NULL "
            f"AND needs IS NOT NULL UNION ALL SELECT needs, parent FROM nbq_job "
            f"WHERE {ACTIVE} AND parent IS NOT NULL"):
        if needs:
            needed.update(json.loads(needs))
        if parent:
            needed.add(parent)
    for (children,) in sql(f"SELECT children FROM nbq_journal JOIN nbq_job ON id = job "
                           f"WHERE {ACTIVE}"):
        needed.update(json.loads(children))
    needed.update(needed_by_schedules(sql))
    return needed


def delete_jobs(sql: Any, rows: Sequence[tuple[str, str | None, str | None]]) -> list[str]:
    """Delete jobs ``(id, result_ref, args_ref)`` with their rows in the other tables and
    their diskcache values, inside the caller's transaction; returns the value files to
    remove once it has committed."""
    files: list[str] = []
    maps = {job_id for job_id, in sql(  # chunked maps: their tables go with them
        "SELECT id FROM nbq_map WHERE id IN (SELECT value FROM json_each(?))",
        (json.dumps([row[0] for row in rows]),))} if rows else set()
    for job_id, result_ref, args_ref in rows:
        for table in ("nbq_job WHERE id", "nbq_need WHERE job", "nbq_journal WHERE job",
                      "nbq_log WHERE job", "nbq_gate WHERE job"):
            sql(f"DELETE FROM {table} = ?", (job_id,))
        if job_id in maps:
            for table, column in MAP_TABLES:
                sql(f"DELETE FROM {table} WHERE {column} = ?", (job_id,))
        for ref in (result_ref, args_ref):
            if ref:  # its diskcache row in this transaction, its file once committed
                files += delete_value(sql, ref)
    return files


# -- ended jobs past their retention -----------------------------------------------------------


class Expired:
    """Reads, batch by batch, the ended jobs that ended before their state's cutoff (no
    lock taken). ``cutoffs``: state -> a Unix time, or None for every job of that state.
    Top-level jobs are read in order of their end (an index of them), so only those past
    their cutoff are read. Children are read in order of submission (their index has no
    end time), from ``kids`` (state -> the last ``seq`` read before) on, and with
    ``budget``, at most that many of each state: ``kids`` then says where the next read
    goes on (it starts over once all were read). Each read goes on where the last ended,
    so a job kept because another needs it is not read again in the same sweep."""

    def __init__(self, store: Store, cutoffs: dict[str, float | None], *,
                 kids: dict[str, int] | None = None, budget: int | None = None) -> None:
        self.store = store
        self.cutoffs = {state: EVER if cut is None else cut for state, cut in cutoffs.items()}
        self._top = {state: (-EVER, -1) for state in self.cutoffs}  # (ended, seq) read up to
        self.kids = {state: (kids or {}).get(state, -1) for state in self.cutoffs}
        self._budget = budget
        self._read = dict.fromkeys(self.cutoffs, 0)  # children read, by state
        self._done: set[tuple[str, bool]] = set()

    def next(self, limit: int = BATCH) -> list[str]:
        """The ids of up to ``limit`` more candidates; empty once all were read."""
        out: list[str] = []
        for state, cutoff in self.cutoffs.items():
            if (state, False) not in self._done and len(out) < limit:
                want = limit - len(out)
                ended, seq = self._top[state]
                rows = self.store._rows(
                    "SELECT id, ended, seq FROM nbq_job INDEXED BY nbq_job_listed "
                    "WHERE state = ? AND parent IS NULL AND ended IS NOT NULL AND ended < ? "
                    "AND (ended > ? OR (ended = ? AND seq > ?)) ORDER BY ended, seq LIMIT ?",
                    (state, cutoff, ended, ended, seq, want))
                if rows:
                    self._top[state] = (rows[-1][1], rows[-1][2])
                if len(rows) < want:
                    self._done.add((state, False))
                out += [row[0] for row in rows]
            while (state, True) not in self._done and len(out) < limit:
                if self._budget is not None and self._read[state] >= self._budget:
                    self._done.add((state, True))  # the next sweep goes on from here
                    break
                want = limit - len(out)
                rows = self.store._rows(
                    "SELECT id, ended, seq FROM nbq_job INDEXED BY nbq_job_kids "
                    "WHERE state = ? AND parent IS NOT NULL AND seq > ? ORDER BY seq LIMIT ?",
                    (state, self.kids[state], want))
                self._read[state] += len(rows)
                if rows:
                    self.kids[state] = rows[-1][2]
                if len(rows) < want:
                    self._done.add((state, True))
                    self.kids[state] = -1  # all read: the next sweep starts over
                out += [row[0] for row in rows if row[1] is not None and row[1] < cutoff]
        return out


def forget_batch(store: Store, ids: Sequence[str], cutoffs: dict[str, float | None],
                 ) -> tuple[int, list[str]]:
    """Delete, in one transaction, the jobs among ``ids`` that are still ended in one of
    ``cutoffs``' states before its cutoff and that no active job needs; returns how many
    were deleted and the ids kept because active jobs need them. Works on a full disk
    while the directory's reserve lasts (as ``forget``)."""
    if not ids:
        return 0, []

    def batch() -> tuple[int, list[str], list[str]]:
        with store._txn() as sql:
            rows = []
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                rows += sql("SELECT id, state, ended, result_ref, args_ref FROM nbq_job "
                            f"WHERE id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            rows = [r for r in rows if r[1] in cutoffs and r[2] is not None
                    and r[2] < (EVER if cutoffs[r[1]] is None else cutoffs[r[1]])]
            needed = needed_by_active(sql) if rows else set()
            kept = [r[0] for r in rows if r[0] in needed]
            gone = [(r[0], r[3], r[4]) for r in rows if r[0] not in needed]
            return len(gone), kept, delete_jobs(sql, gone)

    deleted, kept, files = store._freeing(batch)
    for name in files:
        store.cache.disk.remove(name)
    return deleted, kept


def would_forget(store: Store, cutoffs: dict[str, float | None]) -> tuple[int, list[str]]:
    """What ``forget_batch`` over every candidate would delete now, read only: how many,
    and the ids kept."""
    needed = needed_by_active(store._execute)
    expired = Expired(store, cutoffs)
    deleted, kept = 0, []
    while ids := expired.next(5000):
        kept += [job_id for job_id in ids if job_id in needed]
        deleted += sum(1 for job_id in ids if job_id not in needed)
    return deleted, kept


# -- values nothing refers to -------------------------------------------------------------------


def _job_of(key: str) -> str | None:
    """The job a value key of nbqueue's names (None for a key nbqueue does not write)."""
    kind, _, rest = key.partition(":")
    if kind == "args" and rest:
        return rest
    if kind == "result" and rest.count(":") >= 1:
        return rest.rpartition(":")[0]
    return None


def _unreferenced(read: Any, rows: Sequence[Any]) -> list[Any]:
    """The rows ``(rowid, key, ...)`` whose key no job's ``result_ref``/``args_ref`` names."""
    jobs = {row[1]: _job_of(row[1]) for row in rows}
    ids = sorted({job for job in jobs.values() if job is not None})
    refs: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for result_ref, args_ref in read(
                "SELECT result_ref, args_ref FROM nbq_job WHERE id IN "
                f"({','.join('?' * len(chunk))})", chunk).fetchall():
            refs.update(ref for ref in (result_ref, args_ref) if ref)
    return [row for row in rows if jobs[row[1]] is not None and row[1] not in refs]


def orphan_values(store: Store, after: int = 0,
                  limit: int = VALUE_CHUNK) -> tuple[list[tuple[int, str, int]], int | None]:
    """Read up to ``limit`` diskcache rows after rowid ``after``: those no job refers to,
    as ``(rowid, key, bytes)``, and the rowid to go on from (None at the end)."""
    rows = values_after(store._rows, after, limit)
    found = [(int(r[0]), str(r[1]), int(r[2] or 0)) for r in _unreferenced(store._execute, rows)]
    return found, (int(rows[-1][0]) if len(rows) == limit else None)


def delete_values(store: Store, found: Sequence[tuple[int, str, int]]) -> int:
    """Delete values ``orphan_values`` found, those still referred to by nothing (checked
    again under the lock), in one transaction; returns how many."""
    if not found:
        return 0

    def batch() -> tuple[int, list[str]]:
        with store._txn() as sql:
            gone = _unreferenced(sql, found)
            files = []
            for rowid, _key, _size in gone:
                files += delete_value_at(sql, rowid)
            return len(gone), files

    deleted, files = store._freeing(batch)
    for name in files:
        store.cache.disk.remove(name)
    return deleted


# -- functions nothing calls ----------------------------------------------------------------------


def _other_function_columns(read: Any) -> list[str]:
    """``SELECT`` statements for the functions named by tables other than ``nbq_job``: every
    table of the queue with a column ``fn`` (a schedule's, say)."""
    tables = [name for name, in read("SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "AND name LIKE 'nbq\\_%' ESCAPE '\\' "
                                     "AND name NOT IN ('nbq_job', 'nbq_fn')")]
    return [f"SELECT fn FROM {table} WHERE fn IS NOT NULL" for table in tables
            if "fn" in {row[1] for row in read(f"PRAGMA table_info({table})")}]


def orphan_functions(store: Store) -> tuple[list[str], int]:
    """The stored functions no job (nor other table) names, read without a lock, and the
    job counter (``seq``) read before: jobs submitted since are checked under the lock."""
    seq = int(store._one("SELECT value FROM nbq_meta WHERE key = 'seq'"))
    stored = {fn for fn, in store._rows("SELECT id FROM nbq_fn")}
    if not stored:
        return [], seq
    used = {fn for fn, in store._rows("SELECT DISTINCT fn FROM nbq_job WHERE fn IS NOT NULL")}
    for query in _other_function_columns(store._execute):
        used.update(fn for fn, in store._rows(query))
    return sorted(stored - used), seq


def delete_functions(store: Store, ids: Sequence[str], seq: int) -> int:
    """Delete the functions ``orphan_functions`` found that no job submitted since ``seq``
    calls (read through the indexes by state and submission order) nor other table names;
    one transaction. Returns how many."""
    if not ids:
        return 0
    with store._txn() as sql:
        used = {fn for fn, in sql(
            "SELECT fn FROM nbq_job INDEXED BY nbq_job_listed WHERE state IN "
            "('waiting','ready','running','review','done','failed','cancelled','rejected') "
            "AND seq > ? AND parent IS NULL UNION SELECT fn FROM nbq_job INDEXED BY "
            "nbq_job_kids WHERE state IN ('waiting','ready','running','review','done',"
            "'failed','cancelled','rejected') AND seq > ? AND parent IS NOT NULL",
            (seq, seq)).fetchall()}
        for query in _other_function_columns(sql):
            used.update(fn for fn, in sql(query).fetchall())
        gone = [fn for fn in ids if fn not in used]
        for fn in gone:
            sql("DELETE FROM nbq_fn WHERE id = ?", (fn,))
    store._functions.clear()
    return len(gone)


# -- value files no row names ---------------------------------------------------------------------


def orphan_files(store: Store) -> list[tuple[str, int]]:
    """Value files no diskcache row names, as ``(name, bytes)``; read without a lock (a
    transaction still open in another process may have written some: ``sweep_files``
    checks under the lock)."""
    root = store.path
    named = named_files(store._rows)
    out = []
    for path in root.glob(VALUE_FILES):
        name = str(path.relative_to(root))
        if name not in named:
            try:
                out.append((name, path.lstat().st_size))
            except FileNotFoundError:
                pass
    return out


def sweep_files(store: Store) -> int:
    """Delete the value files no row names, under the write lock (see ``Tx.sweep_value_files``)."""
    with store._tx(time.time()) as tx:
        return tx.sweep_value_files()


# -- the write-ahead log and the file ---------------------------------------------------------------


def checkpoint(store: Store, *, wait: float = 0.0) -> bool:
    """Copy the write-ahead log into ``cache.db`` and truncate it to nothing: first a
    passive checkpoint (it never blocks a writer), then a truncating one, which needs every
    reader to be on the last commit and waits at most ``wait`` seconds for that (and for a
    writer to finish). Returns whether the log is empty now."""
    cache = store.cache
    con = cache.connection
    con.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
    try:
        con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:  # locked past ``wait``
        return False
    finally:
        con.execute(f"PRAGMA busy_timeout = {int(cache.timeout * 1000)}")
    return not busy


def wal_bytes(path: Path) -> int:
    """The size of the write-ahead log (``cache.db-wal``) now."""
    try:
        return os.stat(path / f"{DB}-wal").st_size
    except FileNotFoundError:
        return 0


def slack(store: Store) -> tuple[int, int]:
    """Bytes of ``cache.db`` a VACUUM would give back (free pages, and unused room in its
    pages, from SQLite's ``dbstat``), and the file's size in pages' bytes. Reads every
    page."""
    page = int(store._one("PRAGMA page_size"))
    pages = int(store._one("PRAGMA page_count"))
    free = int(store._one("PRAGMA freelist_count")) * page
    try:
        unused = int(store._one("SELECT COALESCE(SUM(unused), 0) FROM dbstat") or 0)
    except sqlite3.OperationalError:  # a SQLite built without dbstat: free pages only
        unused = 0
    return free + unused, pages * page


def vacuum(store: Store) -> None:
    """VACUUM ``cache.db``: it holds the write lock until it ends (its turn taken at the
    turnstile like any other writer's), and writes the whole file to the log, which
    ``checkpoint`` then empties."""
    con = store.cache.connection
    turn = store._turn.take()
    try:
        con.execute("VACUUM")
    finally:
        store._turn.leave(turn)


# -- the directory's retention policy -------------------------------------------------------------


def read_keep(store: Store) -> dict[str, float]:
    """The retention recorded in the directory: ended state -> seconds (none: keep all)."""
    text = store._one("SELECT value FROM nbq_meta WHERE key = 'keep'")
    return {str(k): float(v) for k, v in json.loads(text).items()} if text else {}


def write_keep(store: Store, keep: dict[str, float]) -> bool:
    """Record the retention (an empty one: keep everything); True if it changed. A read
    first: opening a queue with the retention it already has writes nothing."""
    if read_keep(store) == keep:
        return False
    with store._txn() as sql:
        if keep:
            sql("INSERT OR REPLACE INTO nbq_meta VALUES ('keep', ?)",
                (json.dumps(keep, sort_keys=True),))
        else:
            sql("DELETE FROM nbq_meta WHERE key = 'keep'")
    return True
