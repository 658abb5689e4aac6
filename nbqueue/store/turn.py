"""Fair turns at the write lock between a busy dispatcher and everyone else.

A dispatcher draining short jobs takes SQLite's write lock back a few microseconds after
each commit. Any other writer (a submit, a cancel, an approval, from this process or
another) waits in SQLite's busy handler, which sleeps 1, 2, 5, ... up to 100 ms between
tries, and almost never lands in one of those gaps: it could wait for the whole stream.

So the directory has a turnstile, an ``flock`` on ``turn.lock``. A writer holds it
exclusively while it waits for the write lock, and lets go once it has it. The
dispatcher's stream transactions give way: before each one they check the turnstile
(a shared, non-blocking ``flock``) and, while a writer holds it, wait for that writer
to get in. ``flock`` locks belong to open files, so threads of one process queue on it
too, each through its own descriptor.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .files import open_private

FILE = "turn.lock"
GIVE_WAY_FOR = 0.25  # a writer stuck while holding the turnstile delays a dispatcher at most this
STUCK_PAUSE = 1.0  # after such a wait, the turnstile is not checked for this long
QUEUE_FOR = 1.0  # a writer queues this long at most behind another, then goes on unaided
POLL = 0.0002


class Turnstile:
    """The turnstile of one queue directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE
        self._fd: int | None = None  # the dispatcher's, for its checks
        self._unchecked_until = 0.0  # a writer seemed stuck holding the turnstile

    def _open(self) -> int:
        return open_private(self.path, os.O_RDWR | os.O_CREAT)  # never through a link

    def take(self) -> int | None:
        """Queue for a turn: returns a descriptor holding the turnstile (give it to
        ``leave`` once the write lock is held), or None if another writer kept it for
        ``QUEUE_FOR`` (the caller then waits for the write lock unaided)."""
        fd = self._open()
        deadline = time.monotonic() + QUEUE_FOR
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return None
                time.sleep(POLL)

    @staticmethod
    def leave(fd: int | None) -> None:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases its lock

    def give_way(self) -> None:
        """Wait while another writer holds the turnstile, at most ``GIVE_WAY_FOR``. A
        writer that keeps it longer (a stopped process) is then not waited for during
        ``STUCK_PAUSE``: it costs a stream a quarter of a second per second, not per
        transaction."""
        if self._unchecked_until and time.monotonic() < self._unchecked_until:
            return
        if self._fd is None:
            self._fd = self._open()
        fd = self._fd
        deadline = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                now = time.monotonic()
                if not deadline:
                    deadline = now + GIVE_WAY_FOR
                elif now > deadline:
                    self._unchecked_until = now + STUCK_PAUSE
                    return
                time.sleep(POLL)
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
            return

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
