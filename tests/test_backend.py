"""diskcache behind one door (``nbqueue/store/backend.py``): with the installed diskcache
the store's checks pass and its settings are in effect; a diskcache that lacks a part the
store relies on is refused at open with ``IncompatibleDiskcache``, naming its version and
what to do, before anything is created.

An incompatible diskcache is simulated by deleting or changing an attribute of
diskcache's own classes for the test (``monkeypatch``): the dependency, not nbqueue.
"""

from __future__ import annotations

import contextlib
import sqlite3

import diskcache
import diskcache.core
import jobs
import pytest

import nbqueue
from nbqueue.errors import IncompatibleDiskcache
from nbqueue.store.backend import SURFACES


def test_the_installed_diskcache_passes_and_its_settings_hold(tmp_path):
    with contextlib.closing(nbqueue.Queue(tmp_path / "q", workers=1)) as q:
        assert q.submit(jobs.sized, 100_000).result(timeout=60) == b"x" * 100_000
        cache = q._store.cache
        assert cache.eviction_policy == "none"
        assert cache.connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert len(list((tmp_path / "q").glob("??/??/*.val"))) == 1  # the large result


def test_settings_changed_in_the_directory_are_set_back_at_open(tmp_path):
    nbqueue.Queue(tmp_path / "q", start=False).close()
    with contextlib.closing(sqlite3.connect(tmp_path / "q" / "cache.db")) as con, con:
        con.execute("UPDATE Settings SET value = 'least-recently-used' "
                    "WHERE key = 'eviction_policy'")
        con.execute("UPDATE Settings SET value = 1 WHERE key = 'sqlite_synchronous'")
    with contextlib.closing(nbqueue.Queue(tmp_path / "q", start=False)) as q:
        h = q.submit(jobs.add, 1, 2)  # the first write opens the cache: checked there
        cache = q._store.cache
        assert cache.eviction_policy == "none"
        assert cache.connection.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert q.job(h.id).state == "ready"


@pytest.mark.parametrize("cls, name", [(cls, name) for cls, name, _ in SURFACES],
                         ids=[f"{cls.__name__}.{name}" for cls, name, _ in SURFACES])
def test_a_missing_private_surface_is_refused_and_nothing_is_made(tmp_path, monkeypatch,
                                                                  cls, name):
    monkeypatch.delattr(cls, name)
    with pytest.raises(IncompatibleDiskcache) as caught:
        nbqueue.Queue(tmp_path / "q", start=False)
    message = str(caught.value)
    assert f"diskcache {diskcache.__version__}" in message
    assert f"diskcache.{cls.__name__}.{name}" in message
    assert "pyproject.toml" in message and "pip install" in message
    assert not (tmp_path / "q").exists()


def test_a_missing_surface_is_refused_on_an_existing_queue_too(tmp_path, monkeypatch):
    with contextlib.closing(nbqueue.Queue(tmp_path / "q", start=False)) as q:
        q.submit(jobs.add, 1, 2)
    before = sorted(p.name for p in (tmp_path / "q").iterdir())
    monkeypatch.delattr(diskcache.Disk, "_write")
    with pytest.raises(IncompatibleDiskcache, match=r"diskcache\.Disk\._write"):
        nbqueue.Queue(tmp_path / "q", start=False)
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == before


def test_another_database_name_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(diskcache.core, "DBNAME", "store.sqlite3")
    with pytest.raises(IncompatibleDiskcache, match="not named cache.db"):
        nbqueue.Queue(tmp_path / "q", start=False)
    assert not (tmp_path / "q").exists()


def test_another_layout_of_value_files_is_refused_at_the_first_write(tmp_path, monkeypatch):
    nbqueue.Queue(tmp_path / "q", start=False).close()
    monkeypatch.setattr(diskcache.Disk, "filename",
                        lambda self, key=None, value=None: ("flat.val", "/nowhere/flat.val"))
    q = nbqueue.Queue(tmp_path / "q", start=False)  # reads: diskcache is not opened yet
    try:
        with pytest.raises(IncompatibleDiskcache, match=r"flat\.val, not \?\?/\?\?/\*\.val"):
            q.submit(jobs.add, 1, 2)
        assert q.counts()["ready"] == 0
    finally:
        q.close()
