"""Mistakes that need a scene of their own (an unsafe or foreign directory, a gate in
the wrong state): each raises a clear error and changes nothing. The table of wrong
calls of the API, the command line and the magics is tests/test_bad_input.py."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading

import jobs
import pytest

import nbqueue


def _unchanged(q: nbqueue.Queue, before: int) -> None:
    assert q.changes() == before
    assert q.jobs() == []
    assert sum(q.counts().values()) == 0
    assert q._store._one("SELECT COUNT(*) FROM nbq_job") == 0
    assert q._store._one("SELECT COUNT(*) FROM nbq_fn") == 0


# -- submitting -------------------------------------------------------------------------------


def test_unpicklable_positional_argument(stopped_queue):
    q = stopped_queue
    before = q.changes()
    with pytest.raises(nbqueue.SubmitError) as info:
        q.submit(jobs.noop, 1, threading.Lock())
    text = str(info.value)
    assert "argument #1" in text and "lock" in text
    assert "nothing was stored" in text
    _unchanged(q, before)


def test_unpicklable_keyword_argument(stopped_queue, tmp_path):
    q = stopped_queue
    before = q.changes()
    with (tmp_path / "data.txt").open("w") as handle:
        with pytest.raises(nbqueue.SubmitError) as info:
            q.submit(jobs.noop, fh=handle)
    assert "argument fh=" in str(info.value)
    assert "TextIOWrapper" in str(info.value)
    _unchanged(q, before)


def test_one_bad_call_in_map_stores_none_of_them(stopped_queue):
    q = stopped_queue
    before = q.changes()
    with pytest.raises(nbqueue.SubmitError):
        q.map(jobs.add, [1, 2, 3], [1, threading.Lock(), 3])
    _unchanged(q, before)


def test_unparseable_after(stopped_queue):
    q = stopped_queue
    before = q.changes()
    with pytest.raises(ValueError) as info:
        q.submit(jobs.noop, after="when pigs fly")
    text = str(info.value)
    assert "when pigs fly" in text
    for form in ('"15:00"', '"tomorrow 9:00"', '"in 10m"', "ISO 8601"):
        assert form in text
    _unchanged(q, before)


@pytest.mark.parametrize(
    ("option", "value"),
    [("priority", "x"), ("retries", -1), ("timeout", 0), ("resources", [1]),
     ("retry_delay", -1), ("resources", {"gpu": 0}), ("key", 42)],
)
def test_bad_option_values(stopped_queue, option, value):
    q = stopped_queue
    before = q.changes()
    with pytest.raises(nbqueue.SubmitError) as info:
        q.submit(jobs.noop, **{option: value})
    text = str(info.value)
    assert option in text or repr(value) in text
    assert "noop" in text
    _unchanged(q, before)


def test_needs_something_that_is_not_a_job(stopped_queue):
    q = stopped_queue
    before = q.changes()
    with pytest.raises(nbqueue.SubmitError):
        q.submit(jobs.noop, needs=[3.5])
    with pytest.raises(nbqueue.NoSuchJob):
        q.submit(jobs.noop, needs=["no-such-job"])
    _unchanged(q, before)


def test_not_callable(stopped_queue):
    before = stopped_queue.changes()
    with pytest.raises(nbqueue.SubmitError):
        stopped_queue.submit("not a function")
    _unchanged(stopped_queue, before)


# -- finding jobs -------------------------------------------------------------------------------


def test_unknown_id(stopped_queue):
    with pytest.raises(nbqueue.NoSuchJob) as info:
        stopped_queue.job("deadbeef00")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, nbqueue.NbqueueError)
    assert "deadbeef00" in str(info.value)
    with pytest.raises(KeyError):
        stopped_queue._store.get("deadbeef00")


# -- opening directories --------------------------------------------------------------------


def test_path_that_is_a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("hello")
    with pytest.raises(nbqueue.IncompatibleQueue, match="is a file"):
        nbqueue.Queue(path, start=False)
    assert path.read_text() == "hello"


def test_non_empty_directory_that_is_not_a_queue(tmp_path):
    path = tmp_path / "notes"
    path.mkdir(mode=0o700)
    (path / "README").write_text("mine")
    with pytest.raises(nbqueue.IncompatibleQueue):
        nbqueue.Queue(path, start=False)
    assert os.listdir(path) == ["README"]


def test_foreign_sqlite_file(tmp_path):
    path = tmp_path / "foreign"
    path.mkdir(mode=0o700)
    db = path / "cache.db"
    con = sqlite3.connect(db)
    with con:
        con.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes(text) VALUES ('keep me')")
    con.close()
    original = db.read_bytes()
    with pytest.raises(nbqueue.IncompatibleQueue, match="did not write"):
        nbqueue.Queue(path, start=False)
    assert db.read_bytes() == original
    assert sorted(os.listdir(path)) == ["cache.db"]


def test_newer_format(queue_dir):
    nbqueue.Queue(queue_dir, start=False).close()
    con = sqlite3.connect(queue_dir / "cache.db")
    with con:
        con.execute("UPDATE nbq_meta SET value = 999 WHERE key = 'format'")
    con.close()
    with pytest.raises(nbqueue.IncompatibleQueue, match="newer nbqueue"):
        nbqueue.Queue(queue_dir, start=False)


def test_directory_writable_by_everyone(queue_dir):
    queue_dir.mkdir()
    os.chmod(queue_dir, 0o777)
    with pytest.raises(nbqueue.UnsafeQueue, match="chmod o-w"):
        nbqueue.Queue(queue_dir, start=False)
    assert os.listdir(queue_dir) == []


def test_existing_queue_made_writable_by_everyone(queue_dir):
    nbqueue.Queue(queue_dir, start=False).close()
    before = sorted(os.listdir(queue_dir))
    os.chmod(queue_dir, 0o777)
    with pytest.raises(nbqueue.UnsafeQueue):
        nbqueue.Queue(queue_dir, start=False)
    assert sorted(os.listdir(queue_dir)) == before


def test_group_writable_warns(queue_dir):
    queue_dir.mkdir()
    os.chmod(queue_dir, 0o770)
    with pytest.warns(UserWarning, match="writable by its group"):
        q = nbqueue.Queue(queue_dir, start=False)
    q.close()


def test_new_directory_is_private(queue_dir):
    q = nbqueue.Queue(queue_dir / "nested", start=False)
    q.close()
    assert stat.S_IMODE((queue_dir / "nested").stat().st_mode) == 0o700


def test_empty_existing_directory_is_made_private(queue_dir):
    queue_dir.mkdir(mode=0o755)
    nbqueue.Queue(queue_dir, start=False).close()
    assert stat.S_IMODE(queue_dir.stat().st_mode) == 0o700


def test_bad_workers(queue_dir):
    for workers in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers"):
            nbqueue.Queue(queue_dir, workers=workers, start=False)
    assert not queue_dir.exists()


# -- review gates -----------------------------------------------------------------------------


def test_approve_a_job_that_is_not_a_gate(stopped_queue):
    q = stopped_queue
    h = q.submit(jobs.noop)
    before = q.changes()
    with pytest.raises(ValueError, match="not a review gate"):
        q.approve(h.id)
    with pytest.raises(ValueError):
        q.reject(h)
    assert q.changes() == before
    assert h.state == "ready"


def test_approve_a_gate_twice(stopped_queue):
    q = stopped_queue
    gate = q.review("Check it")
    q.approve(gate, comment="fine")
    before = q.changes()
    with pytest.raises(ValueError, match="only a gate in review"):
        q.approve(gate)
    with pytest.raises(ValueError):
        q.reject(gate)
    assert q.changes() == before
    assert gate.state == "done"
    assert gate.result().comment == "fine"


def test_approve_a_gate_still_waiting_for_its_needs(stopped_queue):
    q = stopped_queue
    need = q.submit(jobs.noop)
    gate = q.review("After the job", needs=[need])
    assert gate.state == "waiting"
    before = q.changes()
    with pytest.raises(ValueError):
        q.approve(gate)
    assert q.changes() == before
    assert gate.state == "waiting"


def test_approve_unknown_id(stopped_queue):
    with pytest.raises(nbqueue.NoSuchJob):
        stopped_queue.approve("nope")
