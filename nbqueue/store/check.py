"""``nbqueue check DIR``: an integrity report of a queue directory, read only.

What it looks at, each problem one line:

- trust: the directory and every entry nbqueue opens in it, value files included
  (``files.problem``: no link, nobody else's, not writable by everyone);
- SQLite's own check of the file (``PRAGMA integrity_check``, or ``quick_check``),
  and a file shorter than its header says (truncated);
- the queue's invariants, read in one snapshot (a live queue may be checked): the
  counts per state match the rows; every running job has an owner; every need, hold,
  journal and log row names a job, and the journal of a generator not ended names only
  children that exist; every job's function exists, and its parent;
- value files: every file a row names exists with the size it was written with, every
  ``*_ref`` of a job names a value, and no value file is named by no row (an orphan is
  left by a transaction that never committed; the next recovery deletes it, so one seen
  while a dispatcher runs may be a commit in flight).

It never writes and never refuses: a damaged file is what it is for.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from .. import job as J
from .backend import VALUE_FILES, VALUES, file_rows, missing_value_query
from .files import DB, is_ours, is_value_dir, problem
from .maps import MAP_TABLES
from .reader import connect_readonly, wal_in_use
from .schema import FORMAT

# tables whose rows belong to a job, and the column naming it
JOB_TABLES = (("nbq_need", "job"), ("nbq_need", "need"), ("nbq_hold", "job"),
              ("nbq_journal", "job"), ("nbq_log", "job"), *MAP_TABLES)
SHOWN = 50  # problems of one kind listed one per line; past that, a count

T = TypeVar("T")


@dataclass
class Report:
    """What ``check_queue`` found."""

    path: Path
    problems: list[str] = field(default_factory=list)
    jobs: int | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems

    def add(self, text: str) -> None:
        self.problems.append(text)

    def add_many(self, texts: list[str], what: str) -> None:
        """One line per problem, at most ``SHOWN``, then how many more of ``what``."""
        self.problems += texts[:SHOWN]
        if len(texts) > SHOWN:
            self.problems.append(f"... and {len(texts) - SHOWN} more {what}")


def check_queue(path: str | os.PathLike[str], *, quick: bool = False) -> Report:
    """Check the queue directory ``path`` (see the module); never writes to it."""
    report = Report(Path(path).absolute())
    root = report.path
    if not root.is_dir():
        report.add(f"{root} is not a directory")
        return report
    _check_trust(report, root)
    db = root / DB
    if not db.is_file():
        report.add(f"{db} is missing: {root} holds no queue")
        return report
    try:
        con, immutable = connect_readonly(db)
    except sqlite3.Error as exc:
        report.add(f"{db} cannot be opened: {exc}")
        return report
    try:
        con.execute("BEGIN")  # one snapshot for everything below
        _check_sqlite(report, con, db, quick)
        tables = _read(report, "the list of tables", lambda: {
            name for name, in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")})
        if tables is None:
            return report
        if "nbq_meta" not in tables or "nbq_job" not in tables:
            report.add(f"{db} holds no queue tables (nbq_meta, nbq_job): not a queue nbqueue wrote")
            return report
        fmt = _read(report, "the format record", lambda: con.execute(
            "SELECT value FROM nbq_meta WHERE key = 'format'").fetchone())
        if fmt is not None and (not fmt or not str(fmt[0]).isdigit()):
            report.add(f"the format record of {db} reads {fmt!r}")
        elif fmt is not None and int(fmt[0]) > FORMAT:
            report.add(f"format {fmt[0]} is newer than this nbqueue reads ({FORMAT}): its "
                       "checks may not apply; upgrade nbqueue")
        _check_invariants(report, con, tables)
        _check_values(report, con, root, tables)
    finally:
        con.close()
    return report


def _read(report: Report, what: str, read: Callable[[], T]) -> T | None:
    """``read()``, or None with a problem line if the file does not let it."""
    try:
        return read()
    except sqlite3.DatabaseError as exc:
        report.add(f"could not read {what}: {exc}")
        return None


def _rows(sql: Callable[..., sqlite3.Cursor], query: str) -> list[Any]:
    return sql(query).fetchall()


def _check_trust(report: Report, root: Path) -> None:
    reason = problem(root, root.stat(), what="directory")
    if reason is not None:
        report.add(reason)
    texts = []
    for path in _entries(root):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        reason = problem(path, st)
        if reason is not None:
            texts.append(reason)
    report.add_many(texts, "unsafe entries")


def _entries(root: Path) -> Iterator[Path]:
    """Every entry nbqueue opens: its files, the value directories and files, the
    outputs' lock files (not looking through a link)."""
    yield from _below(root / "outputs", 1)
    with os.scandir(root) as entries:
        for entry in entries:
            if is_ours(entry.name):
                yield Path(entry.path)
            if is_value_dir(entry.name):
                yield from _below(Path(entry.path), 2)


def _below(directory: Path, depth: int) -> Iterator[Path]:
    if depth < 1 or directory.is_symlink() or not directory.is_dir():
        return
    with os.scandir(directory) as entries:
        for entry in entries:
            yield Path(entry.path)
            yield from _below(Path(entry.path), depth - 1)


def _check_sqlite(report: Report, con: sqlite3.Connection, db: Path, quick: bool) -> None:
    pragma = "quick_check" if quick else "integrity_check"
    try:
        rows = [r[0] for r in con.execute(f"PRAGMA {pragma}(100)")]
    except sqlite3.DatabaseError as exc:
        report.add(f"SQLite's {pragma} of {db} stopped: {exc}")
        rows = []
    if rows != ["ok"]:
        report.add_many([f"SQLite {pragma}: {text}" for text in rows if text != "ok"],
                        "lines of SQLite's report")
    if not wal_in_use(db):
        try:
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            size = pages * con.execute("PRAGMA page_size").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            report.add(f"could not read the size of {db}: {exc}")
            return
        actual = os.stat(db).st_size
        if actual < size:
            report.add(f"{db} is truncated: {actual} bytes of {size}")


def _check_invariants(report: Report, con: sqlite3.Connection, tables: set[str]) -> None:
    sql = con.execute
    per_state = _read(report, "the jobs per state", lambda: dict(sql(
        "SELECT state, COUNT(*) FROM nbq_job NOT INDEXED WHERE kind != 'chunk' "  # uncounted
        "GROUP BY state").fetchall()))
    if per_state is not None:
        report.jobs = sum(per_state.values())
    counted = _read(report, "the counts per state", lambda: dict(sql(
        "SELECT state, n FROM nbq_count WHERE state != ':changes'").fetchall()))
    if per_state is not None and counted is not None:
        for state in sorted(set(per_state) | set(counted)):
            rows, n = per_state.get(state, 0), counted.get(state, 0)
            if rows != n:
                report.add(f"count of {state} jobs says {n}, the rows hold {rows}")
        unknown = sorted(set(per_state) - set(J.STATES))
        if unknown:
            report.add(f"jobs in unknown states: {', '.join(unknown)}")
    ownerless = _read(report, "the running jobs", lambda: [r[0] for r in sql(
        "SELECT id FROM nbq_job WHERE state = 'running' AND (owner IS NULL OR owner = '') "
        "AND kind != 'map'")])  # a running map has no owner: its chunks do
    report.add_many([f"job {job} is running but has no owner" for job in ownerless or []],
                    "running jobs without an owner")
    for table, column in JOB_TABLES:
        if table not in tables:
            continue
        orphans = _read(report, table, partial(_rows, sql, (
            f"SELECT DISTINCT {column} FROM {table} WHERE {column} NOT IN (SELECT id FROM nbq_job)")))
        report.add_many([f"{table} names job {job} ({column}), which does not exist"
                         for job, in orphans or []], f"{table} rows naming missing jobs")
    held = _read(report, "the resources held", lambda: sql(
        "SELECT h.resource, h.job, j.state FROM nbq_hold h JOIN nbq_job j ON j.id = h.job "
        "WHERE j.state != 'running'").fetchall())
    report.add_many([f"job {job} holds resource {name} but is {state}"
                     for name, job, state in held or []], "holds of jobs not running")
    if "nbq_fn" in tables:
        lost = _read(report, "the jobs' functions", lambda: sql(
            "SELECT id, fn FROM nbq_job WHERE fn IS NOT NULL AND fn NOT IN "
            "(SELECT id FROM nbq_fn)").fetchall())
        report.add_many([f"job {job}: its function {fn} is missing" for job, fn in lost or []],
                        "jobs without their function")
    if "nbq_journal" in tables:  # a generator not ended replays its steps' children
        lost = _read(report, "the generators' journals", lambda: sql(
            "SELECT j.job, c.value FROM nbq_journal j JOIN nbq_job p ON p.id = j.job, "
            "json_each(j.children) c WHERE p.state NOT IN ('done', 'failed', 'cancelled', "
            "'rejected') AND c.value NOT IN (SELECT id FROM nbq_job)").fetchall())
        report.add_many([f"job {job}: its journal names child job {child}, which does not "
                         "exist" for job, child in lost or []], "journals naming missing jobs")
    parents = _read(report, "the jobs' parents", lambda: sql(
        "SELECT id, parent FROM nbq_job WHERE parent IS NOT NULL AND parent NOT IN "
        "(SELECT id FROM nbq_job)").fetchall())
    report.add_many([f"job {job}: its parent job {parent} does not exist"
                     for job, parent in parents or []], "jobs without their parent")


def _check_values(report: Report, con: sqlite3.Connection, root: Path,
                  tables: set[str]) -> None:
    if VALUES not in tables:
        return
    sql = con.execute
    columns = _read(report, "the columns of nbq_job", lambda: [
        r[1] for r in sql("PRAGMA table_info(nbq_job)") if r[1].endswith("_ref")])
    for column in columns or []:
        missing = _read(report, f"the jobs' {column}",
                        partial(_rows, sql, missing_value_query(column)))
        report.add_many([f"job {job}: its value {ref} ({column}) is missing"
                         for job, ref in missing or []], f"missing {column} values")
    files = _read(report, "the value files' rows", lambda: file_rows(sql))
    if files is None:
        return
    texts, named = [], set()
    for key, filename, size in files:
        named.add(filename)
        try:
            actual = os.lstat(root / filename).st_size
        except FileNotFoundError:
            texts.append(f"value {key}: its file {root / filename} is missing")
            continue
        if actual != size:
            texts.append(f"value {key}: its file {root / filename} is {actual} bytes, "
                         f"{size} were written")
    report.add_many(texts, "damaged value files")
    orphans = [str(p.relative_to(root)) for p in root.glob(VALUE_FILES)]
    report.add_many([f"value file {root / name} is named by no row (a transaction that "
                     "never committed: recovery deletes it)"
                     for name in sorted(orphans) if name not in named], "orphan value files")
