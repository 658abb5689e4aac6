"""``nbqueue salvage DIR NEW_DIR``: copy what can still be read of a damaged queue into a
new queue directory.

The damaged file is only read (read-only connections), and every read is small, so
that a damaged page costs the rows on it and no more: job rows are found through
every way there is to them (the table itself, skipping past pages that do not read,
and its full indexes, which are separate trees) and read one by one; a job's function,
needs, journal, log and large values are read per job. What cannot be read is skipped.

The copy goes into the new queue in one transaction, with the rules of the queue
applied to what is missing (the new queue must make sense on its own):

- running jobs go back to ready (their dispatcher was the old directory's), without
  using an attempt ("its queue was salvaged while attempt N ran");
- a job that cannot run as it was is cancelled, with the reason in its record, and so
  are the jobs that need it (as the transition table has it): one whose function or
  arguments were lost, one that needs a lost job or takes its lost result, a generator
  whose child was lost;
- a done job whose large result was lost is marked failed ("retry it"): a repair
  outside the transition table, so that a retry by hand can run it again;
- a child whose parent was lost becomes a top-level job;
- counts per state are counted afresh. Resource declarations are copied; holds,
  dispatcher records and registered outputs are not (register outputs again).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import job as J
from ..errors import CorruptQueue, IncompatibleQueue
from . import Store
from .backend import value_row
from .controls import PAUSES
from .directory import check_directory
from .disk import SyncedDisk
from .files import DB
from .maps import MAP_TABLES
from .reader import connect_readonly
from .transitions import Tx

PER_JOB_TABLES = ("nbq_need", "nbq_journal", "nbq_log")  # rows of a job, by its column "job"
FULL_INDEX_LIMIT = 1 << 40  # rowid probes past a damaged page stop here


@dataclass
class SalvageReport:
    """What ``salvage`` copied and lost."""

    source: Path
    target: Path
    expected: int | None = None  # jobs the damaged queue counted, if that could be read
    copied: int = 0  # job rows copied
    unreadable: int = 0  # job rows found but not readable
    values_copied: int = 0
    values_lost: int = 0
    changed: dict[str, str] = field(default_factory=dict)  # job -> what salvage made of it

    @property
    def lost(self) -> int | None:
        """Jobs not copied: those counted but not found, and those that did not read."""
        if self.expected is None:
            return self.unreadable or None
        return max(self.expected - self.copied, self.unreadable)

    def summary(self) -> str:
        lost = self.lost
        lost_text = ("an unknown number lost (the counts did not read)" if lost is None
                     else f"{lost} lost")
        text = (f"salvaged {self.source} into {self.target}: {self.copied} jobs copied, "
                f"{lost_text}; {self.values_copied} large values copied, "
                f"{self.values_lost} lost")
        if self.changed:
            text += (f"; {len(self.changed)} copied jobs could not go on as they were and "
                     "ended (their records say why)")
        return text


def salvage(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> SalvageReport:
    """Copy every readable job of the queue at ``source`` into a new queue at ``target``
    (a new or empty directory). ``source`` is never written."""
    src, dst = Path(source).absolute(), Path(target).absolute()
    check_directory(src)  # a queue someone else could write is not copied into yours
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise IncompatibleQueue(f"salvage: {dst} exists and is not empty; give a new "
                                "directory to copy the queue into")
    try:
        con, _ = connect_readonly(src / DB)
    except sqlite3.DatabaseError as exc:
        raise CorruptQueue(f"salvage: {src / DB} does not read at all ({exc}): nothing can be "
                           "copied from it; restore the directory from a backup") from None
    try:
        reader = _Source(con, src)
        report = SalvageReport(src, dst, expected=reader.expected())
        store = Store(dst)
        try:
            _copy(reader, store, report)
        finally:
            store.close()
    finally:
        con.close()
    return report


class _Source:
    """Small reads of the damaged file, each failing alone."""

    def __init__(self, con: sqlite3.Connection, path: Path) -> None:
        self.con = con
        self.path = path
        self.disk = SyncedDisk(str(path))
        self.tables = set(self.try_rows("SELECT name FROM sqlite_master WHERE type = 'table'",
                                        one_column=True) or [])

    def try_rows(self, query: str, params: Any = (), *, one_column: bool = False) -> list[Any] | None:
        try:
            rows = self.con.execute(query, params).fetchall()
        except sqlite3.DatabaseError:
            return None
        return [r[0] for r in rows] if one_column else rows

    def columns(self, table: str) -> list[str]:
        return [r[1] for r in self.try_rows(f"PRAGMA table_info({table})") or []]

    def expected(self) -> int | None:
        counts = self.try_rows("SELECT n FROM nbq_count WHERE state != ':changes'",
                               one_column=True)
        if counts:
            return sum(int(n) for n in counts)
        total = self.try_rows("SELECT COUNT(*) FROM nbq_job", one_column=True)
        return int(total[0]) if total else None

    def job_rowids(self) -> list[int]:
        """Every rowid of nbq_job that can be reached: a scan of the table that skips past
        pages that do not read, and scans of its indexes that hold every job."""
        found: set[int] = set()
        last = 0
        while True:
            try:
                for (rowid,) in self.con.execute("SELECT rowid FROM nbq_job WHERE rowid > ? "
                                                 "ORDER BY rowid", (last,)):
                    found.add(rowid)
                    last = rowid
                break
            except sqlite3.DatabaseError:
                step = 1
                while step < FULL_INDEX_LIMIT:
                    try:
                        self.con.execute("SELECT rowid FROM nbq_job WHERE rowid > ? "
                                         "ORDER BY rowid LIMIT 1", (last + step,)).fetchall()
                        break
                    except sqlite3.DatabaseError:
                        step *= 2
                else:
                    break
                last += step
        for index in self._full_indexes():
            try:
                for (rowid,) in self.con.execute(f"SELECT rowid FROM nbq_job INDEXED BY "
                                                 f'"{index}"'):
                    found.add(rowid)
            except sqlite3.DatabaseError:
                pass
        return sorted(found)

    def _full_indexes(self) -> list[str]:
        rows = self.try_rows("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND "
                             "tbl_name = 'nbq_job'") or []
        # an automatic index (sql NULL: the primary key) or one with no WHERE holds every job
        return [name for name, text in rows if text is None or " WHERE " not in text.upper()]

    def job(self, rowid: int, columns: list[str]) -> tuple[Any, ...] | None:
        rows = self.try_rows(f"SELECT {', '.join(columns)} FROM nbq_job WHERE rowid = ?",
                             (rowid,))
        return rows[0] if rows else None

    def value(self, key: str) -> bytes | None:
        row = value_row(self.try_rows, key)
        if row is None:
            return None
        try:
            found = self.disk.fetch(*row, False)
        except OSError:
            return None
        return None if found is None else bytes(found)


def _copy(src: _Source, store: Any, report: SalvageReport) -> None:
    """Read everything readable from ``src`` and write it into ``store``, one transaction."""

    dst_columns = {name for name, in store._rows("SELECT name FROM pragma_table_info('nbq_job')")}
    columns = [c for c in src.columns("nbq_job") if c in dst_columns]
    if "id" not in columns or "state" not in columns:
        raise IncompatibleQueue(f"salvage: the job table of {src.path / DB} does not read "
                                "(its schema is damaged): nothing can be copied")
    jobs: dict[str, dict[str, Any]] = {}
    for rowid in src.job_rowids():
        row = src.job(rowid, columns)
        if row is None:
            report.unreadable += 1
            continue
        record = dict(zip(columns, row, strict=True))
        jobs.setdefault(record["id"], record)
    ref_columns = [c for c in columns if c.endswith("_ref")]
    values: dict[str, bytes] = {}
    lost_values: dict[str, str] = {}  # job -> its ref column whose value was lost
    for job_id, record in jobs.items():
        for column in ref_columns:
            key = record.get(column)
            if not key:
                continue
            value = src.value(key)
            if value is None:
                lost_values.setdefault(job_id, column)
                report.values_lost += 1
            else:
                values[key] = value
    functions = _functions(src, jobs)
    per_job = {table: _per_job_rows(src, table, jobs, store) for table in PER_JOB_TABLES
               if table in src.tables}
    maps = [job_id for job_id, record in jobs.items() if record.get("kind") == J.MAP]
    per_map = {table: _per_job_rows(src, table, maps, store, column=column)
               for table, column in MAP_TABLES if table in src.tables}
    resources = (src.try_rows("SELECT name, capacity, available FROM nbq_resource") or []
                 if "nbq_resource" in src.tables else [])
    # pauses are kept: a paused queue's copy starts paused (its paused jobs stay held)
    pauses = (src.try_rows("SELECT name, since FROM nbq_pause") or []
              if "nbq_pause" in src.tables else [])
    now = time.time()
    with store._txn() as sql:
        for function in functions:
            sql(f"INSERT OR IGNORE INTO nbq_fn VALUES ({','.join('?' * len(function))})",
                function)
        for key, value in values.items():
            store.cache.set(key, value)
        report.values_copied = len(values)
        for record in jobs.values():
            names = list(record)
            sql(f"INSERT INTO nbq_job ({', '.join(names)}) VALUES "
                f"({','.join('?' * len(names))})", [record[n] for n in names])
        report.copied = len(jobs)
        for table, (names, rows) in [*per_job.items(), *per_map.items()]:
            sql_text = (f"INSERT OR IGNORE INTO {table} ({', '.join(names)}) VALUES "
                        f"({','.join('?' * len(names))})")
            for row in rows:
                sql(sql_text, row)
        for row in resources:
            sql("INSERT OR REPLACE INTO nbq_resource VALUES (?, ?, ?)", row)
        for row in pauses:
            sql("INSERT OR REPLACE INTO nbq_pause VALUES (?, ?)", row)
        if pauses:
            sql("UPDATE nbq_meta SET value = value | ? WHERE key = 'controls'", (PAUSES,))
        _repair(Tx(store, sql, now), jobs, functions, lost_values, report)
        _recount(sql)


def _functions(src: _Source, jobs: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for fn_id in sorted({r["fn"] for r in jobs.values() if r.get("fn")}):
        rows = src.try_rows("SELECT * FROM nbq_fn WHERE id = ?", (fn_id,))
        if rows:
            out.append(tuple(rows[0]))
    return out


def _per_job_rows(src: _Source, table: str, jobs: Any, store: Any, *, column: str = "job",
                  ) -> tuple[list[str], list[tuple[Any, ...]]]:
    dst = {name for name, in store._rows(f"SELECT name FROM pragma_table_info('{table}')")}
    names = [c for c in src.columns(table) if c in dst]
    rows: list[tuple[Any, ...]] = []
    if column not in names:
        return names, rows
    for job_id in jobs:
        rows += src.try_rows(f"SELECT {', '.join(names)} FROM {table} WHERE {column} = ?",
                             (job_id,)) or []
    return names, rows


def _repair(tx: Any, jobs: dict[str, dict[str, Any]], functions: list[tuple[Any, ...]],
            lost_values: dict[str, str], report: SalvageReport) -> None:
    """Apply the queue's rules to what is missing (see the module)."""
    sql = tx.sql
    copied = set(jobs)
    have_fn = {f[0] for f in functions}

    def cancel(job_id: str, reason: str) -> None:
        """A job that cannot go on (none is running any more) is cancelled, and so are
        the jobs that need it, as the transition table has it."""
        if tx.row(job_id, "state")[0] not in J.ENDED:
            tx.end(job_id, J.CANCELLED, reason)
            report.changed[job_id] = reason

    # rows that name jobs that are not here
    sql("UPDATE nbq_job SET parent = NULL WHERE parent IS NOT NULL AND parent NOT IN "
        "(SELECT id FROM nbq_job)")
    dangling = sql("SELECT need, job, soft AS any_end FROM nbq_need WHERE need NOT IN "
                   "(SELECT id FROM nbq_job)").fetchall()
    sql("DELETE FROM nbq_need WHERE need NOT IN (SELECT id FROM nbq_job)")
    # a map's chunks without their map, a map without its chunking: gone, cancelled
    sql("DELETE FROM nbq_job WHERE kind = 'chunk' AND (parent IS NULL OR parent NOT IN "
        "(SELECT id FROM nbq_map))")
    for (job_id,) in sql("SELECT id FROM nbq_job WHERE kind = 'map' AND id NOT IN "
                         "(SELECT id FROM nbq_map)").fetchall():
        sql("INSERT INTO nbq_map (id, total, seq) VALUES (?, 0, 0)", (job_id,))
        cancel(job_id, "salvage: its items were lost; submit it again")
    # running jobs go back: their dispatcher served the old directory (a running map has
    # none: its chunks do)
    for (job_id,) in sql("SELECT id FROM nbq_job WHERE state = 'running' AND kind != 'map'"
                         ).fetchall():
        tx.put_back(job_id, cause="its queue was salvaged")
    for job_id, record in jobs.items():
        if record.get("fn") and record["fn"] not in have_fn:
            cancel(job_id, "salvage: its function was lost; submit it again")
        column = lost_values.get(job_id)
        if column == "result_ref" and record["state"] == J.DONE:
            # a repair outside the transition table (done is final): the job is kept, as
            # failed, so that a retry by hand runs it again
            reason = "salvage: its result was lost; retry it"
            sql("UPDATE nbq_job SET state = 'failed', reason = ?, result_ref = NULL, error = ? "
                "WHERE id = ?", (reason, json.dumps(J.RemoteError("SalvageLoss", reason, "")
                                                     .to_dict()), job_id))
            report.changed[job_id] = reason
            _cancel_takers(tx, job_id, cancel)
        elif column is not None:
            cancel(job_id, f"salvage: its {column[:-4]} value was lost; submit it again")
    for need, job_id, any_end in dangling:
        if job_id in copied:
            cancel(job_id, f"salvage: its child job {need} was lost" if any_end else
                   f"salvage: it needs job {need}, which was lost")
    for job_id, record in jobs.items():
        refs = json.loads(record["refs"]) if record.get("refs") else []
        missing = [ref for ref in refs if ref not in copied]
        if missing:
            cancel(job_id, f"salvage: it takes the result of job {missing[0]}, which was lost")
    for job_id, children in sql("SELECT job, children FROM nbq_journal").fetchall():
        missing = [child for child in json.loads(children) if child not in copied]
        if missing and job_id in copied:
            cancel(job_id, f"salvage: its child job {missing[0]} was lost")
    _settle_waiting(tx)


def _cancel_takers(tx: Any, job_id: str, cancel: Any) -> None:
    """Jobs that take ``job_id``'s result, which was lost, cannot run."""
    for taker, refs in tx.sql("SELECT id, refs FROM nbq_job WHERE refs IS NOT NULL AND "
                              "state NOT IN ('done', 'failed', 'cancelled', 'rejected')"
                              ).fetchall():
        if job_id in json.loads(refs):
            cancel(taker, f"salvage: it takes the result of job {job_id}, whose result was lost")


def _settle_waiting(tx: Any) -> None:
    """Waiting jobs count what they wait for afresh (needs rows may have been lost)."""
    sql = tx.sql
    for job_id, blocker, pending in sql("SELECT id, blocker, pending FROM nbq_job "
                                        "WHERE state = 'waiting' AND blocker IN (?, ?)",
                                        (J.BLOCK_NEEDS, J.BLOCK_CHILDREN)).fetchall():
        any_end = 1 if blocker == J.BLOCK_CHILDREN else 0
        n = sql("SELECT COUNT(*) FROM nbq_need n JOIN nbq_job j ON j.id = n.need "
                "WHERE n.job = ? AND n.soft = ? AND j.state NOT IN "
                "('done', 'failed', 'cancelled', 'rejected')", (job_id, any_end)).fetchone()[0]
        if n == pending:
            continue
        sql("UPDATE nbq_job SET pending = ? WHERE id = ?", (n, job_id))
        if n == 0:
            if any_end:
                tx.move(job_id, J.WAITING, J.READY, blocker=None, reason="")
            else:
                tx.advance(job_id)


def _recount(sql: Any) -> None:
    sql("UPDATE nbq_count SET n = 0 WHERE state != ':changes'")
    for state, n in sql("SELECT state, COUNT(*) FROM nbq_job WHERE kind != 'chunk' "
                        "GROUP BY state").fetchall():
        sql("UPDATE nbq_count SET n = ? WHERE state = ?", (n, state))
    sql("UPDATE nbq_meta SET value = (SELECT COALESCE(MAX(seq), 0) FROM nbq_job) "
        "WHERE key = 'seq'")
