"""diskcache, behind one door: the only module of nbqueue that imports it.

The store keeps its own tables in diskcache's SQLite file and writes them on diskcache's
connection, in diskcache's transactions, so that a job's row and its large result (a
diskcache value, maybe a value file) commit together (docs/storage.md). That leans on
parts of diskcache that are not its public API; each is reached here, under a name of
nbqueue's, and nowhere else:

- ``Cache._con``, the calling thread's connection (``QueueCache.connection``), and
  ``Cache._sql``, its ``execute`` (``QueueCache.sql``): bound to those names once, at
  import, as the same property objects, so that the hot path pays nothing for the names;
- ``Cache._sql_retry``, which diskcache's opening runs its statements through:
  ``QueueCache`` bounds its 60 s of retries by the store's timeout;
- ``Disk._write``, which writes a value file: ``Disk.write_file`` under nbqueue's name,
  where ``SyncedDisk`` (``disk.py``) makes the file durable;
- the ``Cache`` table, the columns the store reads and deletes values by
  (``VALUE_COLUMNS``), and the file layout: ``cache.db`` and value files two
  subdirectories down (``VALUE_FILES``).

``check_surfaces`` looks at every one of them when a store opens, before anything is
created, and ``check_cache`` at the switch to writing (the table's columns, the settings
``eviction_policy="none"`` and ``sqlite_synchronous=2`` in effect): a diskcache that
moved one raises ``IncompatibleDiskcache`` naming the installed version, instead of a
queue that half works. pyproject pins the versions this was tested with.
"""

from __future__ import annotations

import fnmatch
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

import diskcache
import diskcache.core

from ..errors import IncompatibleDiskcache
from ..job import Kind, OutcomeKind, State
from .files import DB

VERSION: str = diskcache.__version__
Timeout = diskcache.Timeout  # the write lock stayed held past the timeout

VALUES = "Cache"  # diskcache's table of values
VALUE_COLUMNS = ("rowid", "key", "raw", "size", "mode", "filename", "value")
VALUE_FILES = "??/??/*.val"  # value files, relative to the directory (a glob)
SETTINGS = {"eviction_policy": "none", "sqlite_synchronous": 2}  # 2: FULL

Run = Callable[..., Iterable[Any]]  # a query runner: (statement, params) -> rows

# (class, attribute, what nbqueue does with it): the private surfaces, checked at open
SURFACES = (
    (diskcache.Cache, "_con", "runs its own SQL on the thread's connection"),
    (diskcache.Cache, "_sql", "reads on the thread's connection"),
    (diskcache.Cache, "_sql_retry", "bounds the retries of the cache's opening"),
    (diskcache.Disk, "_write", "syncs the value files it writes"),
)


# States and kinds are bound into SQL as their strings. sqlite3 adapts a subclass of str
# through its adaptation protocol, and finds none for an enum slowly (~7 us a parameter);
# an adapter, looked up by exact type, makes it ~0.2 us.
for _words in (State, Kind, OutcomeKind):
    sqlite3.register_adapter(_words, str.__str__)


def _private(cls: type, name: str) -> Any:
    # None when missing: check_surfaces names it at the first open, not at import
    return getattr(cls, name, None)


def check_surfaces() -> None:
    """Raise ``IncompatibleDiskcache`` if the installed diskcache lacks a private surface
    the store relies on (``SURFACES``) or stores its database under another name. Reads
    only the classes: run before a directory is prepared, so it creates nothing."""
    for cls, name, why in SURFACES:
        found = getattr(cls, name, None)
        if not (isinstance(found, property) or callable(found)):
            raise _incompatible(f"diskcache.{cls.__name__}.{name} (nbqueue {why}) is missing")
    if getattr(diskcache.core, "DBNAME", None) != DB:
        raise _incompatible(f"its database is not named {DB}")


def check_cache(cache: QueueCache) -> None:
    """At the switch to writing: the ``Cache`` table has the columns the store uses,
    value files go two subdirectories down, and the settings the store rests on are in
    effect (set again if the directory's differ)."""
    if not isinstance(getattr(cache, "connection", None), sqlite3.Connection):
        raise _incompatible("Cache._con is not a SQLite connection")
    columns = {row[1] for row in cache.sql(f"PRAGMA table_info({VALUES})")}
    missing = [c for c in VALUE_COLUMNS if c != "rowid" and c not in columns]
    if missing:
        raise _incompatible(f"its {VALUES} table has no column {', '.join(missing)}")
    name, _ = cache.disk.filename()
    if not fnmatch.fnmatch(name, VALUE_FILES):
        raise _incompatible(f"its value files are laid out as {name}, not {VALUE_FILES}")
    if cache.eviction_policy != SETTINGS["eviction_policy"]:
        cache.reset("eviction_policy", SETTINGS["eviction_policy"])
    if int(cache.sql("PRAGMA synchronous").fetchone()[0]) != SETTINGS["sqlite_synchronous"]:
        cache.reset("sqlite_synchronous", SETTINGS["sqlite_synchronous"])
    if cache.eviction_policy != SETTINGS["eviction_policy"] or \
            int(cache.sql("PRAGMA synchronous").fetchone()[0]) != SETTINGS["sqlite_synchronous"]:
        raise _incompatible("the settings eviction_policy='none' and sqlite_synchronous=2 "
                            "do not take effect")


def _incompatible(what: str) -> IncompatibleDiskcache:
    return IncompatibleDiskcache(
        f"the installed diskcache {VERSION} is not one nbqueue can use: {what}. nbqueue "
        "stores jobs through parts of diskcache outside its public API, checked when a queue "
        "opens; install the diskcache version nbqueue's pyproject.toml pins (pip install "
        "--force-reinstall nbqueue, or pip install 'diskcache==<that version>'). Nothing "
        "was written")


class Disk(diskcache.Disk):  # type: ignore[misc]  # diskcache has no type hints
    """diskcache's ``Disk`` with the directory and its value file writer under names of
    nbqueue's (``directory``, ``write_file``)."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.directory = directory

    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None,
               ) -> int:
        # diskcache writes every value file through this method
        return self.write_file(full_path, iterator, mode, encoding)

    def write_file(self, full_path: str, iterator: Any, mode: str,
                   encoding: str | None = None) -> int:
        """Write a value file from the chunks of ``iterator``; its size. Overridden to
        make it durable (``disk.py``)."""
        return _DISK_WRITE(self, full_path, iterator, mode, encoding)  # type: ignore[no-any-return]


_DISK_WRITE = _private(diskcache.Disk, "_write")


class QueueCache(diskcache.Cache):  # type: ignore[misc]  # diskcache has no type hints
    """diskcache's ``Cache`` of a queue directory: its connection under nbqueue's names,
    and an opening that waits at most ``timeout`` for each statement that meets the write
    lock (diskcache's own retries wait 60 s)."""

    #: the calling thread's SQLite connection (made on first use in a thread or process)
    connection = _private(diskcache.Cache, "_con")
    #: ``connection.execute``
    sql = _private(diskcache.Cache, "_sql")

    def __init__(self, directory: str, *, timeout: float, **settings: Any) -> None:
        self._open_wait = timeout
        try:
            super().__init__(directory, timeout=timeout, **settings)
        except BaseException:
            self.close()  # the connection it opened: the traceback would keep it open
            raise
        #: diskcache's ``disk``, bound once: the property would cost a call per transaction
        self.values = self.disk

    @property
    def _sql_retry(self) -> Any:
        sql = self.sql
        deadline = time.monotonic() + self._open_wait

        def execute(statement: str, *args: Any, **kwargs: Any) -> Any:
            pause = 0.001
            while True:
                try:
                    return sql(statement, *args, **kwargs)
                except sqlite3.OperationalError as exc:
                    if str(exc) != "database is locked" or time.monotonic() > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)

        return execute


# -- the Cache table: nbqueue's reads and deletes of values ------------------------------------


def value_row(run: Callable[..., Iterable[Any] | None], key: str
              ) -> tuple[int, str | None, Any] | None:
    """``(mode, filename, value)`` of the value stored under ``key`` (as ``Disk.fetch``
    takes them), or None."""
    for row in run(f"SELECT mode, filename, value FROM {VALUES} WHERE key = ? AND raw = 1",
                   (key,)) or ():  # a salvage's reads give None for a damaged table
        return tuple(row)
    return None


def named_files(run: Run) -> set[str]:
    """The value files some row names."""
    return {name for name, in run(f"SELECT filename FROM {VALUES} WHERE filename IS NOT NULL")}


def file_rows(run: Run) -> list[tuple[str, str, int]]:
    """``(key, filename, size)`` of every value kept in a file."""
    return [tuple(r) for r in run(f"SELECT key, filename, size FROM {VALUES} "
                                  "WHERE filename IS NOT NULL")]


def value_sizes(run: Run) -> list[tuple[str, str | None, int | None]]:
    """``(key, filename, bytes inline)`` of every value."""
    return [tuple(r) for r in run(
        f"SELECT key, filename, length(value) FROM {VALUES} WHERE raw = 1")]


def values_after(run: Run, after: int, limit: int) -> list[tuple[int, str, int]]:
    """Up to ``limit`` values after rowid ``after``, by rowid: ``(rowid, key, bytes)``."""
    return [tuple(r) for r in run(
        f"SELECT rowid, key, CASE WHEN filename IS NULL THEN length(value) ELSE size END "
        f"FROM {VALUES} WHERE rowid > ? AND raw = 1 ORDER BY rowid LIMIT ?", (after, limit))]


def delete_value(sql: Run, key: str) -> list[str]:
    """Delete the value under ``key`` (inside the caller's transaction); the file to remove
    once it commits, if any."""
    files = [name for name, in sql(f"SELECT filename FROM {VALUES} WHERE key = ? AND raw = 1",
                                   (key,)) if name]
    sql(f"DELETE FROM {VALUES} WHERE key = ? AND raw = 1", (key,))
    return files


def delete_value_at(sql: Run, rowid: int) -> list[str]:
    """Delete the value at ``rowid`` (inside the caller's transaction), as ``delete_value``."""
    files = [name for name, in sql(f"SELECT filename FROM {VALUES} WHERE rowid = ?", (rowid,))
             if name]
    sql(f"DELETE FROM {VALUES} WHERE rowid = ?", (rowid,))
    return files


def missing_value_query(column: str) -> str:
    """The jobs (``id, column``) whose value ``column`` refers to no row (a check)."""
    return (f"SELECT id, {column} FROM nbq_job WHERE {column} IS NOT NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {VALUES} WHERE key = nbq_job.{column} AND raw = 1)")
