"""Trust for every file of a queue directory, not only the directory itself.

Messages are pickles, so whoever can write a file that nbqueue reads can run code as
its user. The directory's rules apply to each entry nbqueue opens in it: it must be
yours (``st_uid``), not writable by others, and not a symbolic link (nbqueue never
follows a link in a queue directory; a link could lead anywhere, to another user's
file among others). A group-writable entry gives a warning, as the directory does.

The checks look at the entries (``lstat``) before SQLite opens them; that is enough
because the directory itself is checked first: once it is yours and closed to others,
nobody else can put or swap an entry in it between the check and the open. The files
nbqueue creates itself are opened by ``open_private``: created 0600, never through a
link, and refused if an existing one belongs to someone else.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path

from ..errors import UnsafeQueue

DB = "cache.db"
# the entries of a queue directory nbqueue opens, by name or by the start of their name
# (``cache.db`` and its ``-wal``/``-shm``, the service's files and their rotations, the
# reserve's pieces, a record being replaced); the value files' first-level directories
# are the two-hex-digit names (what is below them is checked as it is used:
# ``check_value_path``)
FILES = (DB, "turn.lock", "outputs")
PREFIXES = (f"{DB}-", "service.", ".service.", "space.reserve")


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def problem(path: Path, st: os.stat_result, *, what: str = "file") -> str | None:
    """Why an entry whose ``lstat`` is ``st`` must not be opened (None if it may)."""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path) if os.path.islink(path) else "?"
        return (f"{path} is a symbolic link (to {target}); nbqueue never follows links in a "
                f"queue directory. Remove it (and find out who made it: whoever can write the "
                f"directory can run code as you)")
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        return (f"{path} belongs to another user (uid {st.st_uid}); a queue's {what}s hold "
                f"pickles that would run code as you. Use a queue directory whose files are all "
                f"yours (or, if you trust that user, chown them to yourself)")
    if st.st_mode & stat.S_IWOTH:
        return (f"{path} is writable by everyone (mode {stat.filemode(st.st_mode)}); anyone "
                f"could plant a job that runs as you. Run: chmod o-w {path}")
    return None


def check_entry(path: Path, *, what: str = "file", stacklevel: int = 3) -> bool:
    """Refuse (``UnsafeQueue``) an entry of a queue directory that is a symbolic link,
    someone else's, or writable by everyone; warn if its group can write it and reach it
    (the directory lets the group in: a private directory's group-writable entries, made
    under a umask of 002, are out of the group's reach). False if it does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    reason = problem(path, st, what=what)
    if reason is not None:
        raise UnsafeQueue(reason)
    if st.st_mode & stat.S_IWGRP and os.stat(path.parent).st_mode & stat.S_IXGRP:
        warnings.warn(f"{path} is writable by its group: group members can run code as you "
                      f"through it (chmod g-w {path} to stop this)", UserWarning,
                      stacklevel=stacklevel)
    return True


def check_files(directory: Path) -> None:
    """``check_entry`` for every entry nbqueue opens at the top of a queue directory
    (``is_ours``), the value files' first-level subdirectories included."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if is_ours(entry.name):
                what = "value directory" if is_value_dir(entry.name) else "file"
                check_entry(Path(entry.path), what=what, stacklevel=8)  # Queue()'s caller


def is_ours(name: str) -> bool:
    """Whether nbqueue opens the entry ``name`` at the top of a queue directory."""
    return name in FILES or name.startswith(PREFIXES) or is_value_dir(name)


def is_value_dir(name: str) -> bool:
    return len(name) == 2 and all(c in "0123456789abcdef" for c in name)


def check_value_path(root: str, filename: str) -> None:
    """Before a value file ``filename`` (``ab/cd/…val``, relative to the queue directory
    ``root``) is read, written or removed: its two subdirectories and the file itself must
    pass ``problem`` (a link there could lead a write or a delete anywhere)."""
    parts = filename.split(os.sep)
    path = Path(root)
    for i, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        reason = problem(path, st, what="value file" if i == len(parts) - 1 else
                         "value directory")
        if reason is not None:
            raise UnsafeQueue(reason)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` a file of a queue directory: created 0600, never through a symbolic
    link, refused if it belongs to someone else or everyone may write it (``UnsafeQueue``
    naming the file). An existing file open to its group or others is made 0600."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise UnsafeQueue(problem(path, os.lstat(path)) or f"{path} is a symbolic link; "
                              "nbqueue never follows links in a queue directory") from None
        raise
    try:
        st = os.fstat(fd)
        reason = problem(path, st)
        if reason is not None:
            raise UnsafeQueue(reason)
        if st.st_mode & 0o077:
            try:
                os.fchmod(fd, 0o600)
            except OSError:  # a read-only file system: reading it is still fine
                pass
    except BaseException:
        os.close(fd)
        raise
    return fd
