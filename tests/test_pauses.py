"""A serving process that pauses (SIGSTOP, or its main thread holding the interpreter in
a C call) without dying: its workers stop before its lease runs out, so no job runs
twice at once and resources stay exclusive; when it wakes it stops what is left and
commits nothing stale. And a process stopped while short jobs stream holds no lock:
everyone else goes on. Real processes, real signals (see docs/concepts.md, "Pauses and
locks")."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import signal
import sqlite3
import time
from pathlib import Path

import jobs
import pytest
from conftest import kill_and_reap, start_python, wait_for, wait_gone

import nbqueue
from nbqueue.store.turn import Turnstile

LEASE = 2.0  # seconds: $NBQUEUE_LEASE of the process that pauses
GIL_HELD = 6  # seconds the main thread holds the interpreter in the "gil" variant


def _runs(log: Path) -> dict[int, dict[str, list[float]]]:
    """Per pid of a ``jobs.exclusive_ticks`` run: the times of its lines, by kind."""
    runs: dict[int, dict[str, list[float]]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, _, pid, at, *_ = line.split()
        runs.setdefault(int(pid), {}).setdefault(kind, []).append(float(at))
    return runs


def _children(log: Path) -> list[int]:
    return [int(line.split()[4]) for line in log.read_text().splitlines()
            if line.startswith("start ")]


@pytest.mark.parametrize("pause", ["sigstop", "gil"])
def test_a_paused_dispatcher_never_lets_its_job_run_twice_at_once(queue_dir, tmp_path, pause):
    """The serving process pauses past its lease while its job runs (holding the resource
    "excl"); a second dispatcher takes the job over. The first run was killed, with the
    child process it started, before the second started: no overlap in time, never two
    holders of the lock. The paused process, woken, commits nothing stale (the job ends
    once, with no death counted) and serves again."""
    log, lock = tmp_path / "log", tmp_path / "lock"
    hold_gil = f"""
        while not os.path.exists({str(log)!r}):
            time.sleep(0.01)
        ctypes.PyDLL(None).sleep({GIL_HELD})  # PyDLL: the GIL stays held in the call
    """ if pause == "gil" else ""
    first = start_python(f"""
        import ctypes, os, time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers=1)
        h = q.submit(jobs.exclusive_ticks, {str(log)!r}, {str(lock)!r}, "once", 3 * {LEASE},
                     resources=["excl"])
        print(h.id, flush=True)
        {hold_gil.strip()}
        time.sleep(600)
    """, cwd=tmp_path, env={"NBQUEUE_LEASE": str(LEASE)})
    try:
        job_id = first.stdout.readline().strip()
        wait_for(lambda: _runs(log), timeout=120, message="the first run to start")
        if pause == "sigstop":
            os.kill(first.pid, signal.SIGSTOP)
        with nbqueue.Queue(queue_dir, workers=1) as second:
            h = second.job(job_id)
            wait_for(lambda: len(_runs(log)) == 2, timeout=60,
                     message="the second dispatcher to run the job")
            if pause == "sigstop":
                os.kill(first.pid, signal.SIGCONT)
            assert h.result(timeout=60) == "once"
        # the woken process serves again; the job it lost stays as the second one left it
        with nbqueue.Queue(queue_dir, start=False) as probe:
            assert probe.submit(jobs.add, 2, 3, key=None).result(timeout=60) == 5
        record = h.record()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.pid, signal.SIGCONT)
        kill_and_reap(first)

    runs = _runs(log)
    (killed, killed_run), (ended, ended_run) = sorted(runs.items(),
                                                      key=lambda r: r[1]["start"][0])
    assert "clash" not in killed_run and "clash" not in ended_run  # one holder at a time
    assert "end" not in killed_run and ended_run["end"]  # the first was killed, once
    assert max(killed_run["tick"]) < ended_run["start"][0]  # ... before the second started
    wait_gone({killed, _children(log)[0]}, "the first run and the process it started")
    assert (record.state, record.attempt, record.deaths) == ("done", 2, 0)
    assert record.why == "its dispatcher stopped renewing its lease while attempt 1 ran"


def test_a_busy_dispatcher_keeps_its_lease(queue_dir, tmp_path):
    """A healthy dispatcher busy with a stream of short jobs renews its lease on time:
    a job running three leases long is never stopped by its worker's watchdog. (The
    stream is submitted before the queue serves: one transaction that holds the write
    lock longer than the lease's slack keeps renewals out, see docs/concepts.md.)"""
    log, lock = tmp_path / "log", tmp_path / "lock"
    result = start_python(f"""
        import nbqueue, jobs
        with nbqueue.Queue({str(queue_dir)!r}, start=False) as q:
            q.map(jobs.noop, range(20_000), key=None)
        with nbqueue.Queue({str(queue_dir)!r}, workers=2) as q:
            h = q.submit(jobs.exclusive_ticks, {str(log)!r}, {str(lock)!r}, "long",
                         3 * {LEASE + 1}, priority=10)
            print(h.result(timeout=120), h.record().attempt, flush=True)
            q.join(timeout=300)
            print(q.counts()["done"], flush=True)
    """, cwd=tmp_path, env={"NBQUEUE_LEASE": str(LEASE + 1)})
    try:
        out, err = result.communicate(timeout=400)
    finally:
        if result.poll() is None:
            kill_and_reap(result)
    assert out.split() == ["long", "1", "20001"], err
    assert "lease" not in err
    assert len(_runs(log)) == 1


# -- a process stopped while short jobs stream ----------------------------------------------

FREE_STOPS = 10  # stops that catch the serving process outside a transaction
MOST_CAUGHT = 150  # stops inside a transaction (a commit lasts milliseconds) tolerated
# the calls that wait (poll, select, sleeps), by machine: a thread stopped in one of them
# while its process holds the write lock held it across a wait
WAITS = {"x86_64": {7, 23, 35, 230, 232, 270, 271, 281},
         "aarch64": {22, 72, 73, 101, 115}}.get(platform.machine(), set())


def _holds_write_lock(queue_dir: Path) -> bool:
    """Whether some process holds the queue's write lock for longer than a commit takes:
    queue at the turnstile as nbqueue's writers do (a streaming dispatcher gives way),
    then try SQLite's write lock for 0.3 s."""
    turnstile = Turnstile(queue_dir)
    fd = turnstile.take()  # None: a writer stopped while queued; go on unaided
    con = sqlite3.connect(queue_dir / "cache.db", timeout=0.3, isolation_level=None)
    try:
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        con.execute("ROLLBACK")
        return False
    finally:
        con.close()
        turnstile.leave(fd)


def _waiting(pid: int, tid: int) -> bool:
    """Whether thread ``tid`` of the stopped process ``pid`` is in a call that waits."""
    try:
        call = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False  # not readable here: the rest of the test still holds
    return call.lstrip("-").isdigit() and int(call) in WAITS


def test_a_process_stopped_while_short_jobs_stream_blocks_no_one(queue_dir, tmp_path):
    """SIGSTOP the serving process at random moments while short jobs stream. Each time
    it is caught outside a transaction, a submit, a cancel and an approval from another
    process go through, and a second dispatcher runs the job submitted. A stop caught
    inside a transaction (its commit holds SQLite's write lock for milliseconds, as any
    writer's does) is let go and drawn again, but its dispatcher thread was not waiting
    (poll, sleep): no transaction is held across a wait."""
    q = nbqueue.Queue(queue_dir, start=False)
    blocker = q.review("never approved")
    gates = [q.review(f"gate {i}") for i in range(FREE_STOPS)]
    waiting = [q.submit(jobs.add, i, 0, needs=[blocker], key=None) for i in range(FREE_STOPS)]
    q.map(jobs.noop, range(20_000), key=None)
    # a long lease: no renewal (another thread's transaction) during the test
    serving = start_python(f"""
        import time, nbqueue
        q = nbqueue.Queue({str(queue_dir)!r}, workers=2)
        print(q.dispatcher._thread.native_id, flush=True)
        time.sleep(600)
    """, cwd=tmp_path, env={"NBQUEUE_LEASE": "600"})
    other = start_python(f"""
        import time, nbqueue
        q = nbqueue.Queue({str(queue_dir)!r}, workers=1)
        time.sleep(600)
    """, cwd=tmp_path)
    rng = random.Random(os.getpid())
    free = caught = 0
    try:
        tid = int(serving.stdout.readline())
        wait_for(lambda: q.counts()["done"] > 2000, timeout=120,
                 message="the stream to flow")
        while free < FREE_STOPS:
            if q.counts()["ready"] < 5000:
                q.map(jobs.noop, range(20_000), key=None)
            time.sleep(rng.uniform(0.0, 0.1))
            os.kill(serving.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: Path(f"/proc/{serving.pid}/stat").read_text()
                         .rsplit(")", 1)[1].split()[0] == "T", message="the stop")
                if _holds_write_lock(queue_dir):
                    caught += 1
                    assert not _waiting(serving.pid, tid), \
                        "the dispatcher waits while it holds the write lock"
                    assert caught <= MOST_CAUGHT, f"{caught} stops caught in a transaction"
                    continue
                waiting[free].cancel()
                q.approve(gates[free].id, comment=f"while stopped {free}")
                urgent = q.submit(jobs.add, free, 1, priority=10, key=None)
                assert urgent.result(timeout=60) == free + 1  # the other dispatcher ran it
                free += 1
            finally:
                os.kill(serving.pid, signal.SIGCONT)
    finally:
        for proc in (serving, other):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            kill_and_reap(proc)
        q.close()
    assert [h.state for h in waiting] == ["cancelled"] * FREE_STOPS
    assert [g.state for g in gates] == ["done"] * FREE_STOPS


def test_the_longest_hold_is_measured_afresh_after_clear_holds(queue_dir):
    """``Store.longest_holds`` (the figure benchmarks/throughput.py prints) counts only the
    transactions after ``clear_holds``, also those shorter than an earlier one."""
    with nbqueue.Queue(queue_dir, start=False) as q:
        q.map(jobs.noop, range(20_000), key=None)  # one long transaction
        long = q._store.longest_holds["MainThread"]
        q._store.clear_holds()
        assert q._store.longest_holds == {}
        q.submit(jobs.noop, 1, key=None)
        short = q._store.longest_holds["MainThread"]
        assert 0.0 < short < long
