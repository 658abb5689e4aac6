"""Crash scenarios with real SIGKILLs: a dispatcher process dies mid-run and the queue
directory, reopened, finishes the work: nothing lost, at most ``2 x workers`` redone,
children exactly once, no job twice across processes, poisoned jobs stop."""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

import jobs
import pytest
from conftest import kill_and_reap, run_python, start_python, wait_for, wait_gone

import nbqueue


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _in_flight(log: Path) -> set[str]:
    """Values with a start line and no end line."""
    started, ended = set(), set()
    for kind, value, *_ in _lines(log):
        (started if kind == "start" else ended).add(value)
    return started - ended


def _states(queue_dir: Path) -> list[str]:
    """Job states in submission order, read with plain sqlite3 (no recovery)."""
    con = sqlite3.connect(queue_dir / "cache.db")
    try:
        return [r[0] for r in con.execute("SELECT state FROM nbq_job ORDER BY seq")]
    finally:
        con.close()


def test_sigkill_mid_run_redoes_at_most_two_per_worker(queue_dir, tmp_path):
    log, n, workers = tmp_path / "log", 12, 2
    proc = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers={workers})
        q.map(jobs.record, [{str(log)!r}] * {n}, range({n}), [0.5] * {n})
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: _in_flight(log), timeout=120, message="a job to be running")
    finally:
        kill_and_reap(proc)
    first_pids = {int(pid) for _, _, pid, _ in _lines(log)}
    wait_gone(first_pids)  # workers watch their parent and exit with it
    first = _lines(log)
    # what the dead process left running was never committed (a worker may have finished
    # it after the kill, before noticing its parent was gone): it must run again
    states = _states(queue_dir)
    started = {value for kind, value, *_ in first if kind == "start"}
    interrupted = {str(i) for i, state in enumerate(states) if state == "running"} & started
    assert interrupted

    q = nbqueue.Queue(queue_dir, workers=workers)
    try:
        handles = q.jobs()
        assert len(handles) == n
        assert sorted(h.result(timeout=120) for h in handles) == list(range(n))
        assert {h.state for h in handles} == {"done"}
    finally:
        q.stop()

    everything = _lines(log)
    second = everything[len(first):]
    assert {int(pid) for _, _, pid, _ in second}.isdisjoint(first_pids)
    starts = Counter(value for kind, value, *_ in everything if kind == "start")
    assert set(starts) == {str(i) for i in range(n)}
    for value in interrupted:
        assert ["end", value] in [line[:2] for line in second]
    assert sum(starts.values()) - n <= 2 * workers


def test_children_exist_once_and_only_after_the_parent_completes(queue_dir, tmp_path):
    log, gate = tmp_path / "log", tmp_path / "gate"
    proc = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers=2)
        print(q.submit(jobs.spawn_then_wait, {str(log)!r}, {str(gate)!r}, 3).id, flush=True)
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: any(line[:2] == ["spawned", "parent"] for line in _lines(log)),
                 timeout=120, message="the parent to spawn")
    finally:
        parent_id = kill_and_reap(proc).strip()
    wait_gone({int(line[2]) for line in _lines(log)})

    q = nbqueue.Queue(queue_dir, workers=2)
    try:
        parent = q.job(parent_id)
        assert q._store._one("SELECT COUNT(*) FROM nbq_job WHERE parent = ?", (parent.id,)) == 0
        wait_for(lambda: sum(line[:2] == ["spawned", "parent"] for line in _lines(log)) == 2,
                 timeout=120, message="the parent to run again")
        assert parent.children == []  # spawned, but not before the parent completes
        gate.touch()
        ids = parent.result(timeout=120)
        children = parent.children
        assert [c.id for c in children] == ids
        assert [c.result(timeout=120) for c in children] == ["child0", "child1", "child2"]
        assert q._store._one("SELECT COUNT(*) FROM nbq_job WHERE parent = ?", (parent.id,)) == 3
        assert parent.record().attempt == 2
    finally:
        q.stop()

    lines = _lines(log)
    (parent_end,) = [float(line[3]) for line in lines if line[:2] == ["end", "parent"]]
    child_starts = [line for line in lines if line[0] == "start"]
    assert sorted(line[1] for line in child_starts) == ["child0", "child1", "child2"]
    assert all(float(line[3]) > parent_end for line in child_starts)


def test_two_processes_serve_one_directory(stopped_queue, queue_dir, tmp_path):
    log, gate, n = tmp_path / "log", tmp_path / "gate", 40
    q = stopped_queue
    handles = q.map(jobs.record_ppid, [log] * n, range(n), [gate] * n)
    serve = f"""
        import os, nbqueue
        q = nbqueue.Queue({str(queue_dir)!r}, workers=2)
        q.join(timeout=240)
        q.stop()
        print(os.getpid())
    """
    procs = [start_python(serve, cwd=tmp_path) for _ in range(2)]
    try:
        # open the gate only once both processes run jobs: then each must have taken some
        wait_for(lambda: len({h.owner for h in q.records(state="running")}) == 2,
                 timeout=120, message="both processes to run jobs")
        gate.touch()
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                kill_and_reap(p)
    assert [p.returncode for p in procs] == [0, 0], outs
    pids = {int(out.strip()) for out, _ in outs}
    assert {h.state for h in handles} == {"done"}
    assert [h.result() for h in handles] == list(range(n))

    runs = _lines(log)
    assert Counter(line[1] for line in runs) == Counter(str(i) for i in range(n))
    per_process = Counter(int(line[3]) for line in runs)
    assert set(per_process) == pids


def test_auto_key_from_two_processes_runs_once(queue_dir, tmp_path):
    log = tmp_path / "log"
    script = f"""
        import nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers=1)
        h = q.submit(jobs.record, {str(log)!r}, "once")
        print(h.id, h.result(timeout=60))
        q.stop()
    """
    first = run_python(script, cwd=tmp_path).stdout.split()
    second = run_python(script, cwd=tmp_path).stdout.split()
    assert first[1] == second[1] == "once"
    assert first[0] == second[0]
    assert [line[:2] for line in _lines(log)] == [["start", "once"], ["end", "once"]]


def test_dispatcher_deaths_are_not_deaths_of_the_job(queue_dir, tmp_path):
    """Three SIGKILLs of the serving process while one healthy job runs: the job is not
    poisoned, no attempt counts against its retries, and it finishes when served again,
    its record and log saying why each attempt ran."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    q = nbqueue.Queue(queue_dir, start=False)
    job_id = q.submit(jobs.hang, log, "victim", gate).id
    q.close()
    serve = f"""
        import time, nbqueue
        q = nbqueue.Queue({str(queue_dir)!r}, workers=1)
        time.sleep(600)
    """
    for kills in range(1, 4):
        proc = start_python(serve, cwd=tmp_path)
        try:
            wait_for(lambda kills=kills: len(_lines(log)) == kills, timeout=120,
                     message=f"run {kills} of the job")
        finally:
            kill_and_reap(proc)
        wait_gone({int(line[2]) for line in _lines(log)})

    gate.touch()
    q = nbqueue.Queue(queue_dir, workers=1)
    try:
        h = q.job(job_id)
        assert h.result(timeout=120) == "victim"
        record = h.record()
        assert record.deaths == 0
        assert record.attempt == 4
        assert record.why == "its dispatcher's process died while attempt 3 ran"
        assert record.attempt_note == ("attempt 4: its dispatcher's process died while "
                                       "attempt 3 ran")
    finally:
        q.stop()
    assert len(_lines(log)) == 4


def test_job_that_keeps_killing_its_worker_is_poisoned(queue_dir, tmp_path):
    """Its own worker process dying is a death: it runs again, and the third death fails
    it as poisoned (retries do not add runs); the dispatcher and other jobs go on."""
    log = tmp_path / "log"
    with nbqueue.Queue(queue_dir, workers=1) as q:
        h = q.submit(jobs.die_logged, log, retries=2, retry_delay=0)
        with pytest.raises(nbqueue.JobFailed) as info:
            h.result(timeout=120)
        assert info.value.exc_type == "PoisonedJob"
        assert "died 3 times" in info.value.exc_value
        assert "worker process died" in info.value.exc_value
        record = h.record()
        assert (record.state, record.deaths, record.attempt) == ("failed", 3, 3)
        assert len(_lines(log)) == 3  # never a fourth run
        assert "--- attempt 3: its worker process died" in h.logs
        assert q.submit(jobs.square, 4).result(timeout=60) == 16


def test_a_script_that_exits_with_a_job_running_does_not_hang(queue_dir, tmp_path):
    """No ``with``, no ``stop()``: at interpreter exit the dispatcher stops before loky's
    exit hook would wait for the running job, and hands the job back without using an
    attempt. A worker replaced earlier (loky registers its hook again) changes nothing."""
    pid_file, gate = tmp_path / "pid", tmp_path / "gate"
    child = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers=2)
        try:
            q.submit(jobs.suicide, key=None).result(timeout=60)
        except nbqueue.JobFailed:
            pass
        h = q.submit(jobs.pid_then_wait, {str(pid_file)!r}, {str(gate)!r}, "later", key=None)
        while h.state != "running" or not __import__("os").path.exists({str(pid_file)!r}):
            time.sleep(0.01)
        print(h.id, flush=True)
    """, cwd=tmp_path)
    try:
        out, err = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        kill_and_reap(child)
        raise AssertionError("the script hung at exit with a job running") from None
    assert child.returncode == 0, err
    worker = int(pid_file.read_text())
    wait_gone({worker})
    with nbqueue.Queue(queue_dir, start=False) as q:
        h = q.job(out.split()[0])
        record = h.record()
        # handed back at exit: the attempt stays on record, and says why it runs again
        assert (record.state, record.attempt, record.deaths) == ("ready", 1, 0)
        assert record.reason == ("its dispatcher's process exited while attempt 1 ran; "
                                 "attempt 2 comes next")
        gate.write_text("go")
        q.start()
        assert h.result(timeout=60) == "later"
        assert h.record().attempt_note == ("attempt 2: its dispatcher's process exited while "
                                           "attempt 1 ran")


def test_recovery_deletes_value_files_of_results_never_committed(queue_dir, tmp_path):
    """A process that dies inside a transaction storing a large result leaves its value
    file behind, named by no row. The recovery after a death deletes such files, and only
    those: a committed large result keeps its file."""
    gate = tmp_path / "gate"
    proc = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers=1)
        print(q.submit(jobs.sized, 100_000).result(timeout=60) == b"x" * 100_000, flush=True)
        q.submit(jobs.wait_for_file, {str(gate)!r}, "late", key=None)
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "True"
        wait_for(lambda: "running" in _states(queue_dir), message="the second job to run")
    finally:
        kill_and_reap(proc)
    [kept] = list(queue_dir.glob("??/??/*.val"))
    # what the death would have left had it come while a large result was being stored
    orphan = queue_dir / "ab" / "cd" / "0123456789abcdef0123456789ab.val"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"never committed")
    gate.write_text("go")
    with nbqueue.Queue(queue_dir, workers=1) as q:
        assert not orphan.exists() and not orphan.parent.exists()
        assert kept.exists()
        assert [h.result(timeout=60) for h in q.jobs()] == [b"x" * 100_000, "late"]
