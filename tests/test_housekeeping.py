"""Retention and disk space: ``nbqueue gc`` gives back the space of 100,000 ended jobs and
keeps what active jobs need, a dry run changes nothing, ``nbqueue du`` adds up, and
``Queue(path, keep=...)`` is applied by a running dispatcher in the background."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import jobs
import pytest
from conftest import wait_for

import nbqueue
import nbqueue.cli
from nbqueue import NoSuchJob

BULK = 100_000  # ended jobs submitted in bulk
LARGE = 60  # jobs run for real, each with a result stored as a value file (64 kB)


def on_disk(path: Path) -> int:
    """Bytes of every regular file under ``path`` (what ``du`` must add up to)."""
    return sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(path)
               for n in names)


def value_files(path: Path) -> list[Path]:
    return sorted(path.glob("??/??/*.val"))


def snapshot(path: Path, q: nbqueue.Queue) -> tuple[object, ...]:
    """Everything a dry run must leave as it was: the files and their sizes, the database
    and its log byte for byte, the counts, the change counter."""
    files = sorted((str(p.relative_to(path)), p.lstat().st_size) for p in path.rglob("*")
                   if p.is_file())
    digests = [hashlib.sha256((path / name).read_bytes()).hexdigest()
               for name in ("cache.db", "cache.db-wal") if (path / name).exists()]
    return files, digests, q.counts(), q.changes()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = nbqueue.cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_gc_gives_back_the_space_of_100000_ended_jobs_and_keeps_what_active_jobs_need(
        queue_dir, capsys, monkeypatch):
    monkeypatch.setenv("NBQUEUE_KEEP_EVERY", "1e9")  # no background pass meanwhile
    with nbqueue.Queue(queue_dir, workers=2) as q:
        large = q.map(jobs.sized, [64_000] * LARGE, key=None)
        a = q.submit(jobs.sized, 50_000, b"a", key=None)
        q.join(timeout=300)
        assert {h.state for h in [*large, a]} == {"done"}
        gate = q.review("go on?")
        b = q.submit(jobs.takes, a, needs=[gate], key=None)  # a's result is b's argument
        no = q.review("no")
        q.reject(no)
        for _ in range(4):  # cancelled at once (they need a rejected gate), 1 kB each
            q.map(jobs.noop, [os.urandom(1000) for _i in range(BULK // 4)], needs=[no],
                  key=None)
    assert q.counts()["cancelled"] == BULK
    # what an older nbqueue's forget did (or a stranger with sqlite3): a job's row is gone,
    # its large result is not; and a value file no row names (a transaction that died)
    con = sqlite3.connect(queue_dir / "cache.db", timeout=30)
    with con:
        con.execute("DELETE FROM nbq_job WHERE id = ?", (large[0].id,))
    con.close()
    stray = queue_dir / "ab" / "cd" / ("0" * 28 + ".val")
    stray.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    stray.write_bytes(b"x" * 40_000)
    stray.chmod(0o600)

    q = nbqueue.Queue(queue_dir, start=False)
    before = q.du()
    assert before.total == on_disk(queue_dir)  # the kinds add up to the directory
    assert sum(s.results for s in before.states.values()) == before.kinds["results"]
    assert before.states["cancelled"].jobs == BULK
    assert before.states["unreferenced"].results >= 64_000  # large[0]'s value
    assert before.states["done"].results >= (LARGE - 1) * 64_000

    state = snapshot(queue_dir, q)
    code, out = run_cli(["gc", str(queue_dir), "--older-than", "0", "--dry-run"], capsys)
    assert code == 0, out
    assert f"would forget {BULK + LARGE} ended job(s) (and kept 1 " in out, out
    assert snapshot(queue_dir, q) == state  # a dry run changes nothing

    code, out = run_cli(["gc", str(queue_dir), "--older-than", "0"], capsys)
    assert code == 0, out
    assert f"forgot {BULK + LARGE} ended job(s) (and kept 1 " in out, out
    assert "before: " in out and "after: " in out
    q = nbqueue.Queue(queue_dir, start=False)
    assert {h.id for h in q.jobs()} == {a.id, gate.id, b.id}
    after = q.du()
    assert after.total == on_disk(queue_dir)
    assert after.total < before.total / 20, (before.kinds, after.kinds)
    assert on_disk(queue_dir) < before.total / 20
    assert (queue_dir / "cache.db").stat().st_size < before.kinds["rows"] / 5
    wal = queue_dir / "cache.db-wal"
    assert not wal.exists() or wal.stat().st_size < 64 * 1024  # the log was emptied
    assert len(value_files(queue_dir)) == 1  # a's result, that b takes
    assert after.states["unreferenced"].results == 0
    assert not stray.exists()
    q.close()

    with nbqueue.Queue(queue_dir, workers=1) as q:
        q.approve(gate)
        assert b.result(timeout=120) == b"a" * 50_000


def test_gc_deletes_functions_no_job_calls_and_keeps_the_others(queue):
    a = queue.submit(jobs.square, 3, key=None)
    b = queue.submit(jobs.add, 1, 2, key=None)
    assert a.result(timeout=60) == 9 and b.result(timeout=60) == 3
    assert queue.forget() == 2
    c = queue.submit(jobs.add, 2, 2, after="in 1h", key=None)  # waits: add is called

    assert queue.gc(dry_run=True).functions == 1  # square
    assert queue.gc().functions == 1
    assert queue.gc(dry_run=True).functions == 0
    c.cancel()
    assert queue.gc().functions == 0  # c ended, but it is still there: add stays
    assert queue.forget() == 1
    assert queue.gc().functions == 1
    assert queue.submit(jobs.add, 5, 5, key=None).result(timeout=60) == 10  # stored again


def test_gc_keeps_the_children_a_generator_replays_and_a_spawned_child_s_parent(
        queue, tmp_path):
    flag = tmp_path / "flag"
    h = queue.submit(jobs.squares_then_wait, 3, str(flag), key=None)
    wait_for(lambda: len(h.children) == 4 and h.children[3].state == "running", timeout=120,
             message="step 1's child to run")
    first = {c.id for c in h.children[:3]}
    gate = queue.review("go on?")
    parent = queue.submit(jobs.spawn_with, {"needs": [gate.id], "key": None}, key=None)
    parent.result(timeout=60)
    (child,) = parent.children  # spawned, waits for the gate
    other = queue.submit(jobs.square, 4, key=None)
    assert other.result(timeout=60) == 16

    done = queue.gc(older_than=0)
    assert done.forgotten == 1  # other
    assert set(done.kept) == first | {parent.id}  # replayed by h; shown above its child
    with pytest.raises(NoSuchJob):
        other.record()

    flag.touch()
    assert h.result(timeout=120) == 0 + 1 + 4 + 1000
    queue.approve(gate)
    assert child.result(timeout=60) is None
    assert queue.gc(older_than=0).forgotten == 1 + 4 + 3  # h and its children, the rest
    assert queue.jobs() == []


def test_keep_is_applied_by_a_running_dispatcher(queue_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NBQUEUE_KEEP_EVERY", "0.3")
    with nbqueue.Queue(queue_dir, workers=1, keep={"done": "1s"}) as q:
        assert q.keep == {"done": 1.0}
        assert nbqueue.Queue(queue_dir, start=False).keep == {"done": 1.0}  # recorded
        a = q.submit(jobs.square, 3, key=None)
        done = q.map(jobs.square, range(20), key=None)
        failed = q.submit(jobs.boom, key=None)
        q.join(timeout=120)
        gate = q.review("go on?")
        b = q.submit(jobs.takes, a, needs=[gate], key=None)

        def forgotten(h: nbqueue.Job) -> bool:
            try:
                h.record()
            except NoSuchJob:
                return True
            return False

        wait_for(lambda: all(forgotten(h) for h in done), timeout=120,
                 message="the done jobs past their retention to be forgotten")
        assert failed.state == "failed"  # failed jobs are kept: not in keep
        assert a.state == "done"  # b takes its result
        assert "nbqueue-keeper" in q._store.longest_holds  # the keeper's transactions
        q.approve(gate)
        assert b.result(timeout=60) == 9
        wait_for(lambda: forgotten(a) and forgotten(b) and forgotten(gate), timeout=120,
                 message="a, b and the gate to be forgotten once b ended")
        assert failed.state == "failed"
    with nbqueue.Queue(queue_dir, start=False, keep={}) as q:  # {}: keep everything
        assert q.keep == {}
    assert nbqueue.Queue(queue_dir, start=False).keep == {}


def test_du_by_state_and_kind(queue, capsys):
    big = queue.submit(jobs.sized, 40_000, key=None)  # a value file
    small = queue.submit(jobs.chatty, 5, key=None)  # a log
    failed = queue.submit(jobs.boom, key=None)
    arg = queue.submit(jobs.noop, b"y" * 5000, after="in 1h", key=None)  # arguments apart
    for h in (big, small, failed):
        h.wait(timeout=60)
    queue.stop()  # a live dispatcher's lease renewals would change the WAL between reads
    found = queue.du()
    assert found.total == on_disk(queue.path)
    assert found.states["done"].jobs == 2 and found.states["done"].results >= 40_000
    assert found.states["done"].logs > 0
    assert found.states["failed"].jobs == 1
    assert found.states["waiting"].arguments >= 5000
    assert found.kinds["functions"] > 0 and found.kinds["rows"] > 0
    code, out = run_cli(["du", str(queue.path)], capsys)
    assert code == 0, out
    assert f"({found.total} bytes)" in out
    for kind in ("rows", "results", "arguments", "logs", "functions", "files", "wal"):
        assert kind in out
    assert arg.state == "waiting"


def test_the_write_ahead_log_stays_small_while_short_jobs_stream(queue_dir):
    """A dispatcher's connection leaves SQLite's automatic checkpoints to a backstop of
    ``BACKSTOP_PAGES`` (inside a COMMIT, after the write lock is let go, they would pass for
    long holds of it) and checkpoints the log itself every ``CHECKPOINT_EVERY`` commits,
    between cycles: the log never nears the backstop."""
    from nbqueue.dispatcher import CHECKPOINT_EVERY
    from nbqueue.store import BACKSTOP_PAGES

    n = 6000  # about 2.4 pages of log per job: several times the log's limit in all
    with nbqueue.Queue(queue_dir, workers=2) as q:
        hs = q.map(jobs.noop, range(n), key=None)
        q.join(timeout=600)
        assert all(h.state == "done" for h in hs[:: n // 10])
        assert q.counts()["done"] == n
    wal = Path(queue_dir) / "cache.db-wal"
    size = wal.stat().st_size if wal.exists() else 0
    # the file keeps its largest size: the map's own transaction, or ~CHECKPOINT_EVERY
    # commits of the stream (~10 pages each), far below the backstop
    assert size < BACKSTOP_PAGES * 4096 // 3, (size, CHECKPOINT_EVERY)
