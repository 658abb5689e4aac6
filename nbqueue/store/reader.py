"""Reading a queue directory without writing to it.

A store opened on an existing queue reads through connections of its own, opened with
SQLite's ``mode=ro``: reading never writes (no settings, no schema statements, no
recovery), so it never waits for SQLite's write lock, works while a writer holds that
lock (even a stopped one: WAL readers see the last commit), works on a damaged file
without touching it, and on a read-only file system. There, a queue that no writer has
open has no WAL index (``cache.db-shm``) and SQLite cannot make one: the connection is
then opened ``immutable=1``, which is exact as long as nothing writes the file; on a
read-only mount, only a writer through another mount could.

The store switches to diskcache's own connection at its first write (see ``Store``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

_CORRUPT, _CANTOPEN, _NOTADB = 11, 14, 26  # SQLite's primary result codes


def is_damage(exc: BaseException) -> bool:
    """Whether a SQLite error says the file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_CORRUPT, _NOTADB)
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _cannot_open(exc: BaseException) -> bool:
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == _CANTOPEN
    return "unable to open" in str(exc).lower()


def wal_in_use(db: Path) -> bool:
    """Whether ``db`` has a write-ahead log with frames in it (commits not checkpointed)."""
    try:
        return os.stat(f"{db}-wal").st_size > 0
    except FileNotFoundError:
        return False


def connect_readonly(db: Path, timeout: float = 10.0) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection to ``db`` and whether it is immutable (see the module).
    Raises ``sqlite3.Error`` if it cannot be read."""
    path = quote(str(db))
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout,
                          isolation_level=None, check_same_thread=False)
    try:
        con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return con, False
    except sqlite3.OperationalError as exc:
        con.close()
        # a read-only file system (or a directory we may not write): SQLite cannot create
        # the WAL index. Immutable is exact only if no commit waits in a WAL.
        if not _cannot_open(exc) or os.access(db.parent, os.W_OK) or wal_in_use(db):
            raise
    except BaseException:
        con.close()
        raise
    con = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=timeout,
                          isolation_level=None, check_same_thread=False)
    return con, True


class Reader:
    """Read-only connections to one ``cache.db``, one per thread (and per process: a
    forked child opens its own), all closed by ``close``."""

    def __init__(self, db: Path, timeout: float) -> None:
        self.db = db
        self.timeout = timeout
        self.immutable = False
        self._local = threading.local()
        self._all: list[tuple[int, sqlite3.Connection]] = []
        self._lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.con = os.getpid(), None
        if local.con is None:
            local.con, immutable = connect_readonly(self.db, self.timeout)
            self.immutable = self.immutable or immutable
            with self._lock:
                self._all.append((local.pid, local.con))
        return local.con  # type: ignore[no-any-return]

    def execute(self, query: str, params: Any = ()) -> sqlite3.Cursor:
        return self.connection().execute(query, params)

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for pid, con in connections:
            if pid != os.getpid():  # a forked child leaves its parent's connections alone
                continue
            try:
                con.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
