"""diskcache's ``Disk``, with value files made durable before the commit that names them.

Results of 32 KiB or more are stored as diskcache value files, which diskcache writes
with a plain ``open``/``write`` and never syncs. The row that names such a file is
committed with ``synchronous=FULL``; without a sync of the file first, a power cut or
an OS crash could leave a committed ``done`` job whose result file is empty. So the
file and the directory entries that lead to it (two levels of subdirectories, which
the write may just have created) are synced here, inside the transaction, before it
commits. Each value file is read, written and removed only once its path is checked: no
link, nobody else's subdirectory or file (``files.check_value_path``).

A value file written by a transaction that then fails (a full disk at its commit, a
rollback) is named by no row: ``track_written`` collects the files a thread writes inside
one transaction, so that the store deletes them when it rolls back. A write that
fails half way (``ENOSPC``) deletes its partial file at once.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .backend import Disk
from .files import check_value_path


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SyncedDisk(Disk):
    """diskcache's ``Disk`` (through ``backend.Disk``) whose value files are fsynced when
    written."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self._written = threading.local()

    def write_file(self, full_path: str, iterator: Any, mode: str,
                   encoding: str | None = None) -> int:
        self._private_dirs(full_path)
        try:
            size = super().write_file(full_path, iterator, mode, encoding)
            os.chmod(full_path, 0o600)  # diskcache creates it with the umask
            _sync(full_path)
        except OSError:
            _remove(full_path)  # a partial file (ENOSPC): no row will ever name it
            raise
        files = getattr(self._written, "files", None)
        if files is not None:
            files.append(full_path)
        leaf = os.path.dirname(full_path)
        for directory in (leaf, os.path.dirname(leaf), self.directory):
            _sync(directory)
        return size

    def _private_dirs(self, full_path: str) -> None:
        """Make the value file's two subdirectories 0700 (diskcache makes them with the
        umask), and check them: never through a link, nobody else's (``files.py``)."""
        leaf = os.path.dirname(full_path)
        for directory in (os.path.dirname(leaf), leaf):
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
        check_value_path(self.directory, os.path.relpath(full_path, self.directory))

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if filename:
            check_value_path(self.directory, filename)
        return super().fetch(mode, filename, value, read)

    def remove(self, file_path: str) -> None:
        check_value_path(self.directory, file_path)
        super().remove(file_path)

    def track_written(self, *, stop: bool = False) -> list[str] | None:
        """Start (or ``stop``) noting the value files this thread writes, around one
        transaction: the list they are noted in. If the transaction fails, its caller
        deletes them (``remove_written``): no committed row names them."""
        files: list[str] | None = None if stop else []
        self._written.files = files
        return files

    @staticmethod
    def remove_written(files: list[str]) -> None:
        for path in files:
            _remove(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
