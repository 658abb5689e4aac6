"""The dispatcher's fast path for streams of short jobs (see docs/concepts.md, "Short jobs"):
a reserve of claimed jobs, claims made in a transaction left open while workers run,
outcomes held back briefly in the worker. Real processes, real SIGKILLs."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import jobs
from conftest import pid_alive, start_python, wait_for

import nbqueue


def _runs(log: Path) -> list[tuple[str, str, int]]:
    """(kind, value, pid) for each line of a ``jobs.record`` log."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, value, pid, _ = line.split()
        out.append((kind, value, int(pid)))
    return out


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=60)  # reaped: a zombie still looks alive to recovery


def test_sigkill_while_short_jobs_stream(queue_dir, tmp_path):
    """Killed mid-stream (reserve claimed, a transaction open, outcomes in flight): every
    job ends done once in the store, at most two runs per worker are redone, and a job
    that never started used no attempt."""
    log, n, workers = tmp_path / "log", 5000, 2
    proc = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers={workers})
        q.map(jobs.record, [{str(log)!r}] * {n}, range({n}), key=None)
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: sum(kind == "end" for kind, _, _ in _runs(log)) >= 300, timeout=120,
                 message="300 short jobs to end")
    finally:
        _kill(proc)
    first = _runs(log)
    first_pids = {pid for _, _, pid in first}
    wait_for(lambda: not any(pid_alive(p) for p in first_pids), timeout=120,
             message="the killed dispatcher's workers to exit")
    first = _runs(log)
    ran_before = {value for kind, value, _ in first if kind == "start"}
    assert 300 <= len(ran_before) < n  # killed mid-stream

    with nbqueue.Queue(queue_dir, workers=workers) as q:
        handles = q.jobs()
        assert len(handles) == n
        assert sorted(h.result(timeout=300) for h in handles) == list(range(n))
        records = {str(h.result()): h.record() for h in handles}
    starts: dict[str, int] = {}
    for kind, value, _ in _runs(log):
        if kind == "start":
            starts[value] = starts.get(value, 0) + 1
    assert set(starts) == {str(i) for i in range(n)}
    assert sum(starts.values()) - n <= 2 * workers  # at most two redone per worker
    # claimed (in the reserve, or handed to a worker) but never started: no attempt used
    assert all(records[v].attempt == 1 for v in records if v not in ran_before)
    con = sqlite3.connect(queue_dir / "cache.db")
    try:
        counts = dict(con.execute("SELECT state, n FROM nbq_count WHERE state != ':changes'"))
        actual = dict(con.execute("SELECT state, COUNT(*) FROM nbq_job GROUP BY state"))
    finally:
        con.close()
    assert {s: c for s, c in counts.items() if c} == actual == {"done": n}


def test_an_outcome_is_not_held_behind_a_long_job(tmp_path):
    """A worker given two jobs at once holds the first outcome only briefly (to send both
    in one message): when the second runs long, the first is committed meanwhile."""
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        for h in q.map(jobs.sleepy, [0] * 20, range(20)):  # sleepy is now known to be short
            h.result(timeout=60)
        first, second = q.map(jobs.sleepy, [0, 600], ["first", "second"])
        assert first.result(timeout=30) == "first"
        assert second.state == "running"
        second.cancel()
        wait_for(lambda: second.state == "cancelled", timeout=60, message="the cancel")


def test_a_submit_goes_through_while_short_jobs_stream(tmp_path):
    """The store's write lock is held at most a millisecond at a time by the stream's
    transactions: a submit from this thread gets in, and its priority still counts."""
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        stream = q.map(jobs.noop, range(20000), key=None)
        wait_for(lambda: q.store.counts()["done"] >= 200, timeout=120,
                 message="the stream to be under way")
        urgent = q.submit(jobs.add, 1, 2, priority=10)
        assert urgent.result(timeout=60) == 3
        q.join(timeout=600)
        assert {h.state for h in stream} == {"done"}
        ends = sorted(h.record().ended for h in stream)
        # thousands of the stream were still waiting; at most a few turns' worth went first
        assert urgent.record().ended < ends[-1000]


def test_a_worker_killed_while_idle_is_replaced_before_its_next_job(tmp_path):
    """A worker that dies while it has nothing to do is replaced: the next job runs on the
    new one and does not fail as if its process had died under it."""
    import os
    import signal

    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        assert q.submit(jobs.add, 1, 1).result(timeout=60) == 2
        (slot,) = q.dispatcher._slots
        (pid,) = slot.pids()
        os.kill(pid, signal.SIGKILL)
        # the dispatcher notices the dead worker (its socket closes) and starts another
        wait_for(lambda: slot.pids() and pid not in slot.pids(), timeout=60,
                 message="a new worker in the slot")
        h = q.submit(jobs.add, 2, 3)
        assert h.result(timeout=60) == 5
        assert h.record().attempt == 1


def test_a_stopped_queue_leaves_no_threads_behind(tmp_path):
    """The dispatcher's listeners (live channel, worker hub) stop their accepting threads
    when the queue stops: a kernel that opens many queues does not collect threads."""
    import threading

    before = set(threading.enumerate())  # other tests' threads may come and go meanwhile

    def ours() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.name.startswith("nbqueue-") and t not in before]

    for i in range(3):
        with nbqueue.Queue(tmp_path / f"q{i}", workers=1) as q:
            assert q.submit(jobs.add, i, 1).result(timeout=60) == i + 1
            assert "nbqueue-worker-hub" in ours()
    wait_for(lambda: not ours(), timeout=60, message="the queues' threads to stop")
    assert not ours()
