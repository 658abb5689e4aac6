"""Opening a queue directory safely, and who owns a lease.

Messages are pickles: whoever can write a queue directory can run code as its
owner. So a directory owned by another user or writable by others is refused, and so
is any file in it that is (``files.py``). A new queue is created under a lock, so that
processes opening one new directory at once all find it whole; a damaged one is
refused before anything is written to it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import sqlite3
import stat
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptQueue, IncompatibleQueue, QueueLocked, UnsafeQueue
from .files import DB, check_entry, check_files, open_private
from .reader import connect_readonly, is_damage, wal_in_use
from .schema import FORMAT, install


@dataclass(frozen=True)
class Owner:
    """Who holds a lease: host, boot, pid and process start time."""

    host: str
    boot: str
    pid: int
    start: str
    nonce: str = ""

    def __str__(self) -> str:
        return f"{self.host}|{self.boot}|{self.pid}|{self.start}|{self.nonce}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        parts = text.split("|")
        if len(parts) != 5 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), parts[3], parts[4])

    @classmethod
    def current(cls) -> Owner:
        """A new owner identity for a dispatcher of this process."""
        return cls(socket.gethostname(), _boot_id(), os.getpid(), _start_time(os.getpid()),
                   secrets.token_hex(3))

    def is_dead(self) -> bool:
        """True only when certain: same host and boot, and that process is gone."""
        if self.host != socket.gethostname() or self.boot != _boot_id():
            return False
        return _start_time(self.pid) != self.start

    def is_alive(self) -> bool:
        """True only when certain: same host and boot, and that very process still runs
        (its pid has the recorded start time: not a later process that reused the pid)."""
        if self.host != socket.gethostname() or self.boot != _boot_id():
            return False
        return _start_time(self.pid) == self.start


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "noboot"


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` ("gone" if it has ended: a zombie has, though
    its parent has not reaped it yet, as a container's init may not for a while)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return "gone" if fields[0] == "Z" else fields[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            pass
        return "alive"


# -- opening a directory ----------------------------------------------------------------


def check_directory(path: Path) -> None:
    """Refuse what is not ours to open: a file, a directory or any file in it that is a
    symbolic link, someone else's or writable by everyone (``files.py``)."""
    if path.exists() and not path.is_dir():
        raise IncompatibleQueue(
            f"{path} is a file, not a queue directory; give a directory path (it is created "
            "if missing)"
        )
    if not path.exists():
        return
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise UnsafeQueue(
            f"queue directory {path} belongs to another user (uid {st.st_uid}); its messages "
            "are pickles that would run code as you. Use a directory you own."
        )
    if st.st_mode & stat.S_IWOTH:
        raise UnsafeQueue(
            f"queue directory {path} is writable by everyone (mode {stat.filemode(st.st_mode)}); "
            "anyone could plant a job that runs as you. Run: chmod o-w " + str(path)
        )
    if st.st_mode & stat.S_IWGRP:
        warnings.warn(
            f"queue directory {path} is writable by its group: group members can run code as "
            "you through it (chmod g-w to stop this)",
            UserWarning,
            stacklevel=6,  # the caller of Queue() (through Store and open_directory)
        )
    check_files(path)


def prepare_directory(path: Path) -> None:
    """Check ``path`` (``check_directory``) and create it, private, if it is missing. Any
    number of processes may do this at once: whichever makes it, the others use it."""
    check_directory(path)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:  # another process made it just now: check it as found
                check_directory(path)
        except OSError as exc:
            raise IncompatibleQueue(
                f"cannot create the queue directory {path}: {_cannot_create(path, exc)}; give "
                "a path where you can create a directory") from None
    elif not os.listdir(path):
        os.chmod(path, 0o700)


def _cannot_create(path: Path, exc: OSError) -> str:
    """Why ``path`` cannot be created: an ancestor that is a file, else the OS's reason."""
    for parent in path.parents:
        if parent.exists():
            return f"{parent} is a file" if not parent.is_dir() else (exc.strerror or str(exc))
    return exc.strerror or str(exc)


NEW, QUEUE = "new", "queue"


def inspect(path: Path, *, timeout: float, final: bool) -> str:
    """What the existing directory ``path`` holds: ``QUEUE``, or ``NEW`` (nothing yet: it
    is empty, or its database is empty, as one left by a creation that stopped before
    its first commit). Everything else raises: not a queue (``IncompatibleQueue``), a
    newer format, a damaged file (``CorruptQueue``). Reads only.

    Not ``final``: no creation lock is held, so what may be another process creating the
    queue right now (an empty database, one that cannot be read yet) is ``NEW``: the
    caller takes the lock and asks again (``final``)."""
    if not os.listdir(path):
        return NEW
    db = path / DB
    try:
        st = os.lstat(db)
    except FileNotFoundError:
        raise IncompatibleQueue(
            f"{path} is not empty and holds no queue ({DB} missing); give an empty or new "
            "directory, or the directory of an existing queue"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise IncompatibleQueue(f"{db} is not a file; {path} is not a queue directory")
    if st.st_size == 0 and not wal_in_use(db):
        return NEW
    try:
        fmt, tables = _read_database(path, db, timeout)
    except sqlite3.OperationalError:
        if not final:
            return NEW  # perhaps being created: ask again under the creation lock
        raise
    if not tables:
        return NEW
    if fmt is None:
        raise IncompatibleQueue(
            f"{db} is an SQLite file that nbqueue did not write (no queue tables); give "
            "another directory"
        )
    if fmt > FORMAT:
        raise IncompatibleQueue(
            f"queue {path} has format {fmt}, written by a newer nbqueue (this one reads up "
            f"to {FORMAT}); upgrade nbqueue to open it"
        )
    return QUEUE


def _read_database(path: Path, db: Path, timeout: float) -> tuple[int | None, set[str]]:
    """The format and the tables of ``db``, read only; ``CorruptQueue`` if the file is
    damaged in a way seen without reading all of it: not SQLite, truncated, a schema or
    meta table that does not read."""
    try:
        con, _ = connect_readonly(db, timeout)
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise corrupt(path, str(exc)) from None
        raise
    try:
        tables = {name for name, in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not wal_in_use(db):  # in WAL mode the file may lag the log
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            size = pages * con.execute("PRAGMA page_size").fetchone()[0]
            actual = os.stat(db).st_size
            if actual < size:
                raise corrupt(path, f"it is truncated: {actual} bytes of {size}")
        if "nbq_meta" not in tables:
            return None, tables
        row = con.execute("SELECT value FROM nbq_meta WHERE key = 'format'").fetchone()
        try:
            return int(row[0]), tables
        except (TypeError, ValueError):
            raise corrupt(path, f"its format record reads {row!r}") from None
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise corrupt(path, str(exc)) from None
        raise
    finally:
        con.close()


def corrupt(path: Path, what: str, *, opening: bool = True) -> CorruptQueue:
    """The error for a damaged queue database: what is wrong and what to do. ``opening``:
    met while opening it (nothing was written); else met by a read or a transaction
    (which was rolled back)."""
    done = ("nbqueue wrote nothing to it" if opening else
            "what met the damage was not written (a transaction is rolled back)")
    return CorruptQueue(
        f"queue {path} is damaged: {path / DB}: {what}; {done}. See what is wrong with: "
        f"nbqueue check {path}; copy what can still be read into a new queue with: nbqueue "
        f"salvage {path} NEW_DIR (or restore the directory from a backup)"
    )


@contextmanager
def creation_lock(path: Path, timeout: float) -> Iterator[None]:
    """Held while a queue is created in the directory ``path`` (an exclusive ``flock`` on
    the directory itself), so that processes opening a new directory at the same time
    create it once and none of them reads it half made."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise QueueLocked(
                        f"queue {path} has been being created by another process for "
                        f"{timeout:g}s; try again, or stop the process that opens it") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)  # releases the lock


def create_database(path: Path) -> None:
    """Make the queue's database in ``path`` (under ``creation_lock``): ``cache.db``
    created 0600 (never through a link), then every table and meta row in one commit,
    so that it is never seen half made, in WAL mode as diskcache opens it."""
    db = path / DB
    if check_entry(db):
        os.chmod(db, 0o600)  # an empty one left behind: checked, ours, a regular file
    else:
        os.close(open_private(db, os.O_RDWR | os.O_CREAT | os.O_EXCL))
    con = sqlite3.connect(str(db), isolation_level=None, timeout=60)
    try:
        con.execute("PRAGMA auto_vacuum = 1")  # diskcache's; settable only before any table
        con.execute("PRAGMA journal_mode = wal")
        con.execute("BEGIN IMMEDIATE")
        install(con.execute)
        con.execute("COMMIT")
    finally:
        con.close()
