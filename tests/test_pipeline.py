"""The dispatcher's fast path for streams of short jobs (see docs/concepts.md, "Short jobs"):
a reserve of claimed jobs (claimed after the hand-out, in a transaction of its own),
outcomes held back briefly in the worker. Real processes, real SIGKILLs."""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import io
import os
import sqlite3
import textwrap
from pathlib import Path

import jobs
from conftest import kill_and_reap, start_python, wait_for, wait_gone

import nbqueue


def _runs(log: Path) -> list[tuple[str, str, int]]:
    """(kind, value, pid) for each line of a ``jobs.record`` log."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, value, pid, _ = line.split()
        out.append((kind, value, int(pid)))
    return out


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
        kill_and_reap(proc)
    first = _runs(log)
    first_pids = {pid for _, _, pid in first}
    wait_gone(first_pids, "the killed dispatcher's workers to exit")
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


SUBMITS = 5  # each one a fresh chance to be starved: one passing by luck proves little
LATE = 1000  # stream jobs that may end between a submit and its job's end (a few turns' worth)


def _submits_while_streaming(q: nbqueue.Queue) -> str:
    """Code for a loop, in this process or another, that submits an urgent job every
    2,000 stream jobs and prints how many had ended just before each submit, and its id."""
    return f"""
        import time, jobs
        lines = []
        for i in range({SUBMITS}):
            while q.counts()["done"] < 200 + 2000 * i:
                time.sleep(0.005)
            before = q.counts()["done"]
            lines.append(f"{{before}} {{q.submit(jobs.add, i, 1, priority=10, key=None).id}}")
        print("\\n".join(lines), flush=True)
    """


def _check_none_starved(q: nbqueue.Queue, stream: list[nbqueue.Job], report: str) -> None:
    q.join(timeout=600)
    assert {h.state for h in stream} == {"done"}
    ends = sorted(h.record().ended for h in stream)
    pairs = [line.split() for line in report.strip().splitlines()]
    assert len(pairs) == SUBMITS
    for i, (before, job_id) in enumerate(pairs):
        urgent = q.job(job_id)
        assert urgent.result(timeout=60) == i + 1
        ended_first = bisect.bisect_left(ends, urgent.record().ended)
        assert ended_first - int(before) < LATE, (i, int(before), ended_first)


def test_a_submit_goes_through_while_short_jobs_stream(tmp_path):
    """The stream's transactions give way to a writer queued at the directory's
    turnstile: a submit from another thread gets in at once, and its priority counts.
    (Without the turnstile, SQLite's busy handler starved it for up to seconds.)"""
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        stream = q.map(jobs.noop, range(20000), key=None)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(textwrap.dedent(_submits_while_streaming(q)), {"q": q})
        _check_none_starved(q, stream, printed.getvalue())


def test_a_submit_from_another_process_goes_through_while_short_jobs_stream(tmp_path):
    """The same for a writer in another process."""
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        opening = f"""
            import nbqueue
            q = nbqueue.Queue({str(tmp_path / "q")!r}, start=False)
            print("ready", flush=True)
        """
        child = start_python(textwrap.dedent(opening) + textwrap.dedent(_submits_while_streaming(q)),
                             cwd=tmp_path)
        assert child.stdout.readline().strip() == "ready"
        stream = q.map(jobs.noop, range(20000), key=None)
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        _check_none_starved(q, stream, out)


def test_a_worker_killed_while_idle_is_replaced_before_its_next_job(tmp_path):
    """A worker that dies while it has nothing to do is replaced: the next job runs on the
    new one and does not fail as if its process had died under it."""
    import os
    import signal

    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        assert q.submit(jobs.add, 1, 1).result(timeout=60) == 2
        (slot,) = q.dispatcher.slots.slots
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


def test_a_writer_stuck_at_the_turnstile_slows_nothing_for_long(tmp_path):
    """A process that stops while it holds the turnstile (here: this test, holding it
    itself) costs a stream a bounded pause now and then, and other writers a bounded
    wait: the stream ends and submits go through."""
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        q.submit(jobs.noop, key=None).result(timeout=60)  # turn.lock exists now
        fd = os.open(tmp_path / "q" / "turn.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            stream = q.map(jobs.noop, range(2000), key=None)
            assert q.submit(jobs.add, 1, 2, key=None).result(timeout=60) == 3
            q.join(timeout=60)  # at 0.25 s per transaction this would take minutes
            assert {h.state for h in stream} == {"done"}
        finally:
            os.close(fd)
