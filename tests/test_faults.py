"""Faults of the store and of strangers: forget never takes what an active job needs, a
claim that meets a missing input fails that job alone, a full disk (a real tmpfs filled
up) stops nothing for good, a dead dispatcher makes waiting raise instead of hang, and
a large argument is written once, not at every change of its job's row."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jobs
import pytest
from conftest import python_env, wait_for

import nbqueue

# -- forget ---------------------------------------------------------------------------------


def test_forget_keeps_a_result_that_a_waiting_job_takes(queue):
    a = queue.submit(jobs.square, 3, key=None)
    assert a.result(timeout=60) == 9
    gate = queue.review("go on?")
    b = queue.submit(jobs.takes, a, needs=[gate], key=None)  # a's result is b's argument
    other = queue.submit(jobs.square, 4, key=None)
    assert other.result(timeout=60) == 16

    forgotten = queue.forget()
    assert forgotten == 1  # other; a is kept for b
    assert forgotten.kept == (a.id,)
    assert "kept" in repr(forgotten) and str(forgotten) == "1"
    assert a.state == "done"

    queue.approve(gate)
    assert b.result(timeout=60) == 9
    assert queue.dispatcher.alive
    assert queue.forget(state="done") == 3  # a, gate and b once b has ended


def test_forget_keeps_the_children_a_generator_replays(queue, tmp_path):
    flag = tmp_path / "flag"
    h = queue.submit(jobs.squares_then_wait, 3, str(flag), key=None)
    wait_for(lambda: len(h.children) == 4 and h.children[3].state == "running", timeout=120,
             message="step 1's child to run")
    first = {c.id for c in h.children[:3]}
    assert {c.state for c in h.children[:3]} == {"done"}

    forgotten = queue.forget(state="done")
    assert forgotten == 0
    assert set(forgotten.kept) == first

    flag.touch()
    assert h.result(timeout=120) == 0 + 1 + 4 + 1000
    assert queue.dispatcher.alive


def test_a_claim_that_meets_a_missing_input_fails_that_job_alone(queue, queue_dir):
    a = queue.submit(jobs.square, 3, key=None)
    assert a.result(timeout=60) == 9
    gate = queue.review("go on?")
    b = queue.submit(jobs.takes, a, needs=[gate], key=None)
    c = queue.submit(jobs.add, 2, 3, needs=[gate], key=None)
    # what an older nbqueue's forget did (or a stranger with sqlite3)
    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    with con:
        con.execute("DELETE FROM nbq_job WHERE id = ?", (a.id,))
    con.close()

    queue.approve(gate)
    with pytest.raises(nbqueue.JobFailed, match=f"MissingInput.*result of job {a.id}"):
        b.result(timeout=60)
    assert c.result(timeout=60) == 5
    assert queue.submit(jobs.square, 5, key=None).result(timeout=60) == 25
    assert queue.dispatcher.alive and queue.dispatcher.error is None


# -- a dispatcher that dies -----------------------------------------------------------------


def test_waiting_on_a_queue_whose_dispatcher_died_raises(queue, queue_dir, tmp_path):
    running = queue.submit(jobs.wait_for_file, str(tmp_path / "never"), key=None)
    wait_for(lambda: running.state == "running", message="a job to run")
    gate = queue.review("go on?")
    doomed = queue.submit(jobs.add, 1, 2, needs=[gate], key=None)
    # a stranger breaks the store under it: the next claim of a new function fails
    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    with con:
        con.execute("ALTER TABLE nbq_fn RENAME TO hidden")
    con.close()
    queue.approve(gate)
    wait_for(lambda: not queue.dispatcher.alive, message="the dispatcher to die")
    assert "no such table" in queue.dispatcher.error

    with pytest.raises(nbqueue.DispatcherDied, match=r"no such table.*q\.start\(\)"):
        doomed.result()  # no timeout: it used to wait forever
    with pytest.raises(nbqueue.DispatcherDied, match="would wait forever"):
        queue.join()
    # the job it ran went back to the queue instead of staying "running" for good
    assert running.state == "ready"
    assert "its dispatcher failed" in running.record().why

    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    with con:
        con.execute("ALTER TABLE hidden RENAME TO nbq_fn")
    con.close()
    queue.start()  # a new dispatcher in the same process
    assert doomed.result(timeout=60) == 3
    wait_for(lambda: running.state == "running", message="the handed back job to run again")


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs of 16 MiB mounted on ``tmp_path / "disk"`` (skipped if this process
    may not mount: the test needs root)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = bytes(size)
            try:
                while True:
                    os.write(fd, block)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)


def test_a_full_disk_holds_outcomes_and_the_dispatcher_carries_on(small_disk, tmp_path):
    gate = tmp_path / "gate"
    q = nbqueue.Queue(small_disk / "q", workers=3)
    try:
        early = q.map(jobs.square, range(10), key=None)
        assert [h.result(timeout=60) for h in early] == [i * i for i in range(10)]
        # two results of 400 kB (a value file each) and a small one, held at the gate
        big = [q.submit(jobs.sized_after_file, str(gate), f"b{i}", 200_000, key=None)
               for i in range(2)]
        small = q.submit(jobs.wait_for_file, str(gate), "small", key=None)
        later = q.map(jobs.square, range(5), key=None)
        victim = q.submit(jobs.square, 1, after="in 1h", key=None)  # cancelled at once
        wait_for(lambda: all(h.state == "running" for h in [*big, small]),
                 message="the gated jobs to run")
        assert len(list((small_disk / "q").glob("space.reserve.*"))) == 4

        _fill(small_disk / "ballast")
        count = len(q.jobs())
        with pytest.raises(nbqueue.StoreFull, match="could not submit job 'square'.*disk is full"):
            q.submit(jobs.square, 99, key=None)
        with pytest.raises(nbqueue.StoreFull, match="could not submit job 'takes'"):
            q.submit(jobs.takes, b"y" * 100_000, key=None)  # its argument: a value file
        assert len(q.jobs()) == count  # nothing stored

        # room for small commits, not for a large result: a job whose result could not be
        # stored used to be failed (the failure fit)
        os.truncate(small_disk / "ballast", (small_disk / "ballast").stat().st_size - 160_000)
        gated_at = time.time()
        gate.touch()  # the gated jobs end while the disk is (nearly) full
        wait_for(lambda: q.dispatcher.failures.count >= 3, message="three tries on the full disk")
        assert "disk is full" in q.dispatcher.store_error
        assert q.dispatcher.alive and q.dispatcher.error is None
        assert {h.state for h in big} == {"running"}  # held by the dispatcher, not failed
        assert "failed" not in {h.state for h in q.jobs()}

        # freeing actions still work: each takes a piece of the reserve
        assert q.forget(state="done", older_than=time.time() - gated_at) == 10  # the early jobs
        _fill(small_disk / "ballast")  # whatever the forget freed is taken again
        assert victim.cancel() and victim.state == "cancelled"
        assert q.dispatcher.alive

        (small_disk / "ballast").unlink()  # room again
        assert [h.result(timeout=120) for h in big] == [b"b0" * 200_000, b"b1" * 200_000]
        assert small.result(timeout=60) == "small"
        assert [h.result(timeout=60) for h in later] == [i * i for i in range(5)]
        assert q.submit(jobs.square, 7, key=None).result(timeout=60) == 49
        assert "failed" not in {h.state for h in q.jobs()}
        assert q.dispatcher.alive and q.dispatcher.error is None
        wait_for(lambda: q.dispatcher.store_error is None, message="the store to work again")
        wait_for(lambda: len(list((small_disk / "q").glob("space.reserve.*"))) == 4,
                 message="the reserve to be made again")
        # no value file is left that no row names (a write cut short by ENOSPC)
        files = {str(p.relative_to(small_disk / "q")) for p in (small_disk / "q").glob("??/??/*.val")}
        named = {r[0] for r in q._store._rows("SELECT filename FROM Cache WHERE filename IS NOT NULL")}
        assert files == named
    finally:
        q.close()


# -- large arguments ------------------------------------------------------------------------


def _write_bytes(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/<pid>/io")


def test_a_large_argument_is_written_once(queue_dir, tmp_path):
    """A job with a 16 MB argument that reports progress every 0.1 s for 3 s: what the
    serving process writes, and what both processes write, stay under twice the argument
    (the argument used to be rewritten with the job's row at every progress write)."""
    nbqueue.Queue(queue_dir, start=False).close()
    worker = subprocess.Popen([sys.executable, "-m", "nbqueue", "worker", str(queue_dir),
                               "--workers", "1"], env=python_env(), cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        q = nbqueue.Queue(queue_dir, start=False)
        warm = q.submit(jobs.square, 2, key=None)
        assert warm.result(timeout=120) == 4
        blob = os.urandom(16_000_000)
        os.sync()
        ours, theirs = _write_bytes("self"), _write_bytes(worker.pid)
        h = q.submit(jobs.busy_with, blob, 3.0, key=None)
        assert h.result(timeout=120) == len(blob)
        assert "step 20" in h.logs and h.progress is None
        os.sync()
        served = _write_bytes(worker.pid) - theirs
        total = served + _write_bytes("self") - ours
        wal = (queue_dir / "cache.db-wal").stat().st_size
        q.close()
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    assert served <= 2 * len(blob), f"serving process wrote {served} bytes"
    assert total <= 2 * len(blob), f"both processes wrote {total} bytes"
    assert wal < len(blob) / 2, f"the write-ahead log grew to {wal} bytes"


def test_a_queue_an_older_nbqueue_wrote_keeps_its_logs(queue_dir, tmp_path):
    """Logs in the job's row and no ``args_ref`` column, as an older nbqueue left them:
    read as they are; a job run again after the upgrade keeps them before its new output."""
    q = nbqueue.Queue(queue_dir, workers=1)
    h = q.submit(jobs.flaky_loud, str(tmp_path / "count"), 1, key=None)
    with pytest.raises(nbqueue.JobFailed):
        h.result(timeout=60)
    q.close()
    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    with con:
        con.execute("UPDATE nbq_job SET log = (SELECT log FROM nbq_log WHERE job = nbq_job.id)")
        con.execute("DROP TABLE nbq_log")
        con.execute("ALTER TABLE nbq_job DROP COLUMN args_ref")
    con.close()

    q = nbqueue.Queue(queue_dir, workers=1)
    try:
        assert h.logs == "run 1\n"
        big = q.submit(jobs.takes, b"x" * 100_000, key=None)  # its argument apart, as now
        assert big.result(timeout=60) == b"x" * 100_000
        h.retry()
        assert h.result(timeout=60) == 2
        assert h.logs == "run 1\n--- attempt 2: run again after attempt 1 ended failed ---\nrun 2\n"
    finally:
        q.close()


def test_a_queue_with_the_older_listing_indexes_is_upgraded(queue_dir, tmp_path):
    """A queue an earlier nbqueue wrote lists its jobs by two indexes (top-level jobs by
    state, ended ones by end time): opened now, they give way to the one index that
    serves both orders, and the lists keep their order."""
    gate = tmp_path / "gate"
    with nbqueue.Queue(queue_dir, workers=2) as q:  # the first job ends last
        first = q.submit(jobs.wait_for_file, str(gate), "slow", key=None)
        second = q.submit(jobs.add, 1, 2, key=None)
        assert second.result(timeout=60) == 3
        gate.touch()
        assert first.result(timeout=60) == "slow"
        waiting = q.submit(jobs.add, 2, 2, key=None, after=3600)
    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    with con:
        con.execute("DROP INDEX nbq_job_listed")
        con.execute("CREATE INDEX nbq_job_top ON nbq_job(state, seq, parent) WHERE parent IS NULL")
        con.execute("CREATE INDEX nbq_job_top_ended ON nbq_job(state, ended, seq) "
                    "WHERE parent IS NULL AND ended IS NOT NULL")
    con.close()

    with nbqueue.Queue(queue_dir, start=False) as q:
        page = q.tree().top_jobs("", offset=0, limit=10)
        # active first, then ended ones newest end first
        assert [r.id for r in page.records] == [waiting.id, first.id, second.id]
        assert [r.id for r in q.tree().tree_jobs("done", limit=10)] == [second.id, first.id]
        assert [r.id for r in q.tree().tree_jobs("waiting", limit=10)] == [waiting.id]
    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    indexes = {name for name, in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    con.close()
    assert "nbq_job_listed" in indexes
    assert not indexes & {"nbq_job_top", "nbq_job_top_ended"}
