"""Errors of the store that pass (a full disk, an I/O error, a busy lock), and the
space kept in reserve so that freeing actions still work on a full disk.

``transient_cause`` tells such an error from a bug: SQLite's extended result codes
(``SQLITE_FULL``, ``SQLITE_IOERR``, ``SQLITE_BUSY``, ``SQLITE_LOCKED``, read from the
exception, Python 3.11+, else from its message) and the ``errno`` of an ``OSError``
from a value file (``ENOSPC``, ``EDQUOT``, ``EIO``). A SQLite error that rolls the
whole transaction back may be followed by a failing ``ROLLBACK``, so the chain of
``__context__`` is searched too.

The reserve is ``RESERVE_PIECES`` files ``DIR/space.reserve.N`` of ``RESERVE_PIECE``
bytes each, made by a serving process while there is room. SQLite needs free space even
to delete: each change goes to the write-ahead log first. A cancel or a forget that
meets a full disk deletes one piece and tries again, as long as pieces are left; a
dispatcher that finds room again makes them anew (about once a second).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

from ..errors import StoreError, StoreFull

log = logging.getLogger(__name__)

RESERVE_NAME = "space.reserve"
RESERVE_PIECES = 4
RESERVE_PIECE = 256 * 1024  # a cancel takes ~16 KiB of log, a forget of 100 jobs ~100 KiB

_FULL, _IOERR, _BUSY, _LOCKED = 13, 10, 5, 6  # SQLite's primary result codes
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("database or disk is full",)
_IO_TEXT = ("disk i/o error", "database is locked", "database table is locked")


def transient_cause(exc: BaseException | None) -> str | None:
    """``"full"``, ``"io"`` or None: whether ``exc`` (or what it happened while
    handling) is an error of the store that may pass."""
    seen = 0
    while exc is not None and seen < 8:
        kind = _kind(exc)
        if kind is not None:
            return kind
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _kind(exc: BaseException) -> str | None:
    if isinstance(exc, StoreFull):
        return "full"
    if isinstance(exc, StoreError):
        return "io"
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            primary = code & 0xFF
            if primary == _FULL:
                return "full"
            if primary in (_IOERR, _BUSY, _LOCKED):
                return "io"
            return None
        text = str(exc).lower()
        if any(t in text for t in _FULL_TEXT):
            return "full"
        if any(t in text for t in _IO_TEXT):
            return "io"
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno in _FULL_ERRNOS:
            return "full"
        if exc.errno == errno.EIO:
            return "io"
    return None


def store_error(exc: BaseException, path: Path, doing: str) -> StoreError | None:
    """The nbqueue error for a transient ``exc`` met while ``doing`` something (None if
    ``exc`` is not one: a bug, to be raised as it is)."""
    kind = transient_cause(exc)
    if kind is None:
        return None
    if isinstance(exc, StoreError):
        return exc
    if kind == "full":
        return StoreFull(
            f"queue {path}: the disk is full ({exc}) while {doing}; nothing of it was stored. "
            f"Free space on that disk (or forget ended jobs: q.forget()), then try again")
    return StoreError(
        f"queue {path}: the store could not be written ({exc}) while {doing}; nothing of it "
        "was stored. Check the disk (dmesg, df), then try again")


# -- the reserve -----------------------------------------------------------------------------


def _pieces(directory: Path) -> list[Path]:
    return [directory / f"{RESERVE_NAME}.{i}" for i in range(RESERVE_PIECES)]


def ensure_reserve(directory: Path) -> bool:
    """Make the pieces of the reserve that are missing while there is room; True if all
    exist."""
    for path in _pieces(directory):
        if path.exists():
            continue
        partial = path.with_name(path.name + ".new")
        try:
            # never through a link (files.py): a planted one would be truncated
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_PIECE)  # blocks taken, nothing written
                except OSError as exc:
                    if exc.errno in _FULL_ERRNOS:
                        raise
                    os.write(fd, bytes(RESERVE_PIECE))  # a file system without fallocate
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, path)
        except OSError:
            try:
                os.unlink(partial)
            except OSError:
                pass
            return False
    return True


def free_reserve(directory: Path) -> bool:
    """Delete one piece of the reserve to give SQLite room; False if none is left."""
    for path in reversed(_pieces(directory)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue
        log.warning("queue %s: the disk is full; a piece of its reserve (%d KiB) was freed for "
                    "a cancel or a forget", directory, RESERVE_PIECE // 1024)
        return True
    return False
