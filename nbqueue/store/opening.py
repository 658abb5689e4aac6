"""Opening a queue directory: creating a new one once, and the switch to writing.

``open_directory`` prepares the directory and, if it holds no queue yet, creates one
under the creation lock (``directory.creation_lock``): any number of processes may
open one new directory at the same moment, one creates it and the others find it
whole. An existing queue is not written at all: the store reads it read-only
(``reader.py``) until its first write, which ``open_cache`` serves: diskcache's
``Cache`` (its settings rows), the store's settings checked, and the schema made
current.

diskcache retries the statements of its own opening for 60 s whatever the timeout,
then raises a raw ``sqlite3.OperationalError``; ``backend.QueueCache`` bounds that wait by
the store's timeout, so that a writer stuck holding the lock gives ``QueueLocked`` naming
it. ``backend.check_cache`` checks what the store relies on in the cache it opened.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import QueueLocked, StoreError
from .backend import SETTINGS, QueueCache, Timeout, check_cache, check_surfaces
from .directory import NEW, corrupt, create_database, creation_lock, inspect, prepare_directory
from .disk import SyncedDisk
from .files import DB
from .holder import locked_message
from .reader import is_damage
from .schema import install

_READONLY = 8  # SQLite's SQLITE_READONLY


def open_directory(path: Path, timeout: float) -> QueueCache | None:
    """Prepare ``path``; if it holds no queue yet, create one and return its open cache
    (the creator writes); for an existing queue return None (it is read read-only).
    ``IncompatibleDiskcache`` before anything is made if diskcache is not one the store
    can use."""
    check_surfaces()
    prepare_directory(path)
    if inspect(path, timeout=timeout, final=False) != NEW:
        return None
    with creation_lock(path, timeout):
        if inspect(path, timeout=timeout, final=True) != NEW:
            return None  # another process created it while this one waited
        create_database(path)
        # diskcache's own tables too, before the lock lets anyone else read it
        return open_cache(path, timeout)


def open_cache(path: Path, timeout: float) -> QueueCache:
    """diskcache's ``Cache`` of the queue, for writing: its settings checked and the
    queue's schema made current. ``QueueLocked`` naming the holder of the write lock if
    it stays held past ``timeout``; ``CorruptQueue`` if the file is damaged."""
    db = path / DB
    cache: QueueCache | None = None
    try:
        cache = QueueCache(str(path), timeout=timeout, disk=SyncedDisk, **SETTINGS)
        check_cache(cache)
        with cache.transact():
            install(cache.connection.execute)
        return cache
    except (Timeout, sqlite3.DatabaseError) as exc:
        if cache is not None:
            cache.close()
        if isinstance(exc, Timeout) or str(exc) == "database is locked":
            raise QueueLocked(locked_message(path, db, timeout, "opening it to write")) from None
        if is_damage(exc):
            raise corrupt(path, str(exc)) from exc
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == _READONLY:
            raise StoreError(
                f"queue {path} cannot be written ({exc}): it is on a read-only file system, "
                "or its files are not writable by you. Reading it works (nbqueue status, "
                "jobs, export; Queue(path, start=False)); to change it, open it where it "
                "can be written") from exc
        raise
    except BaseException:
        if cache is not None:
            cache.close()
        raise

