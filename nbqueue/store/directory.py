"""Opening a queue directory safely, and who owns a lease.

Messages are pickles: whoever can write a queue directory can run code as its
owner. So a directory owned by another user or writable by others is refused.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import IncompatibleQueue, UnsafeQueue
from .schema import FORMAT

DB = "cache.db"


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
    """Refuse what is not ours to open: files, foreign data, newer formats, unsafe modes."""
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
            stacklevel=4,
        )
    entries = [e for e in os.listdir(path)]
    if not entries:
        return
    db = path / DB
    if not db.is_file():
        raise IncompatibleQueue(
            f"{path} is not empty and holds no queue ({DB} missing); give an empty or new "
            "directory, or the directory of an existing queue"
        )
    fmt = _read_format(db)
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


def _read_format(db: Path) -> int | None:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error:
        return None
    try:
        row = con.execute("SELECT value FROM nbq_meta WHERE key = 'format'").fetchone()
        return int(row[0]) if row else None
    except (sqlite3.Error, ValueError, TypeError):
        return None
    finally:
        con.close()
