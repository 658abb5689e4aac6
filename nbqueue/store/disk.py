"""diskcache's ``Disk``, with value files made durable before the commit that names them.

Results of 32 KiB or more are stored as diskcache value files, which diskcache writes
with a plain ``open``/``write`` and never syncs. The row that names such a file is
committed with ``synchronous=FULL``; without a sync of the file first, a power cut or
an OS crash could leave a committed ``done`` job whose result file is empty. So the
file and the directory entries that lead to it (two levels of subdirectories, which
the write may just have created) are synced here, inside the transaction, before it
commits.
"""

from __future__ import annotations

import os
from typing import Any

import diskcache


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SyncedDisk(diskcache.Disk):
    """A ``diskcache.Disk`` whose value files are fsynced when written."""

    def _write(self, full_path: str, iterator: Any, mode: str, encoding: str | None = None) -> int:
        size = super()._write(full_path, iterator, mode, encoding)
        _sync(full_path)
        leaf = os.path.dirname(full_path)
        for directory in (leaf, os.path.dirname(leaf), self._directory):
            _sync(directory)
        return size
