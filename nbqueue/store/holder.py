"""Who holds SQLite's write lock on a queue: asked only once a writer has given up.

In WAL mode SQLite's write lock is a POSIX lock on one byte of the WAL index,
``cache.db-shm`` (byte 120: ``UNIX_SHM_BASE`` in SQLite's os_unix.c). Linux lists
every POSIX lock in ``/proc/locks`` with the pid of its holder and the inode it is
on, so one read of that file names the holder, without opening the queue's files
(closing a descriptor of a file drops every POSIX lock this process holds on it,
SQLite's included). The pid is as seen from this pid namespace; a holder on another
machine (a network file system) or outside this container is not listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WRITE_LOCK_BYTE = 120


@dataclass(frozen=True)
class Holder:
    """A process that holds the write lock."""

    pid: int
    command: str  # its command line, shortened ("" if unknown)
    stopped: bool  # stopped by a signal (SIGSTOP, Ctrl-Z, a debugger)

    def describe(self) -> str:
        text = f"pid {self.pid}" + (f" ({self.command})" if self.command else "")
        if self.pid == os.getpid():
            return text + ", this very process (another thread of it, or a transaction left open)"
        if self.stopped:
            return (text + ", which is stopped: resume it (kill -CONT "
                    f"{self.pid}) or end it (kill {self.pid})")
        return text


def write_lock_holder(db: Path) -> Holder | None:
    """The process holding SQLite's write lock on ``db`` (WAL mode), or None if none is
    listed (it let go, or it is not visible from here)."""
    try:
        st = os.stat(f"{db}-shm")
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "5: POSIX  ADVISORY  WRITE 26646 fe:00:2148140 120 120" ("->" marks a waiter)
        if "->" in fields or len(fields) < 8 or fields[1] != "POSIX":
            continue
        kind, pid, where, start, end = fields[3], fields[4], fields[5], fields[6], fields[7]
        if kind != "WRITE" or where != device or not pid.isdigit():
            continue
        if start.isdigit() and int(start) <= WRITE_LOCK_BYTE and (
                end == "EOF" or (end.isdigit() and int(end) >= WRITE_LOCK_BYTE)):
            return _holder(int(pid))
    return None


def _holder(pid: int) -> Holder:
    command, stopped = "", False
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        command = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
        if len(command) > 120:
            command = command[:117] + "..."
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        stopped = state in ("T", "t")
    except (OSError, IndexError):
        pass
    return Holder(pid, command, stopped)


def locked_message(path: Path, db: Path, seconds: float, doing: str) -> str:
    """The text of ``QueueLocked``: who holds the lock, if that can be known, and what to do."""
    holder = write_lock_holder(db)
    head = f"queue {path} stayed locked by another writer for {seconds:g}s while {doing}"
    if holder is None:
        return (head + "; which process holds the lock cannot be told from here (it let go "
                "just now, or it runs on another machine or in another container). Try "
                "again, or stop the process that writes to the queue.")
    return (head + f": {holder.describe()} holds SQLite's write lock on {db}. Try again once "
            "it lets go, or stop that process.")
