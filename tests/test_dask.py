"""Jobs on a dask cluster, served by a loop per slot (one long dask task each, which
takes its slot's jobs over a connection to the dispatcher): each slot keeps one job
handed ahead while jobs are short, and every guarantee holds: a SIGKILL of the
dispatcher's process redoes at most two executions per worker, a cancel reaches a job
handed ahead, a timeout stops its job and the loop goes on, a worker that dies counts a
death for the job that ran there (and none for one that only waited on it), each job
keeps its own result, and a paused dispatcher's jobs stop once its lease ran out. The
loops end when the queue idles and when the dispatcher stops; jobs that wait for a loop
with no thread to run on go back to the queue; a loop that cannot reach the dispatcher
makes its slot run one dask task per job.

A real ``LocalCluster`` (two single-threaded worker processes on 127.0.0.1), started once
for the module; the dispatchers that are killed or paused run in child processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import jobs
import pytest
from conftest import kill_and_reap, local_dask_client, start_python, wait_for

import nbqueue
from nbqueue.channel import ChannelClient, ChannelServer
from nbqueue.executors import CHANNEL_OUTCOME_MAX

WORKERS = 2


@pytest.fixture(scope="module")
def dask_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with local_dask_client(tmp_path_factory.mktemp("dask"), n_workers=WORKERS,
                           threads_per_worker=1) as client:
        yield client


@pytest.fixture
def client(dask_client: object) -> object:
    """The module's client, once both workers are up (a test may have killed one)."""
    dask_client.wait_for_workers(WORKERS, timeout=120)  # type: ignore[attr-defined]
    return dask_client


def _starts(log: Path) -> Counter[str]:
    """How many times each value's job started (one line per execution)."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[1] for line in log.read_text().splitlines()
                   if line.startswith("start "))


def _idle(client: object) -> bool:
    return not any(client.processing().values())  # type: ignore[attr-defined]


def _tasks(client: object) -> list[str]:
    """The keys of the tasks running on the cluster now."""
    return sorted(key for keys in client.processing().values()  # type: ignore[attr-defined]
                  for key in keys)


def _loops(client: object) -> list[str]:
    """The keys of the dask slots' loops running on the cluster now."""
    return [key for key in _tasks(client) if key.startswith("nbqueue-slot-")]


def _quiet(log: Path) -> bool:
    """Whether nothing was added to ``log`` for half a second."""
    before = log.read_text()
    time.sleep(0.5)
    return log.read_text() == before


def _both_threads_free(client: object, tmp_path: Path) -> None:
    """Two dask tasks, one per worker, that end only if both run at the same time: no
    thread of the cluster is still held by a job nbqueue stopped."""
    workers = sorted(client.scheduler_info()["workers"])  # type: ignore[attr-defined]
    meet = [client.submit(jobs.span, tmp_path / "meet.log", i,  # type: ignore[attr-defined]
                          group=tmp_path / "meet", timeout=60, workers=[w], pure=False)
            for i, w in enumerate(workers)]
    assert client.gather(meet) == [0, 1]  # type: ignore[attr-defined]


def _runs(log: Path) -> dict[str, list[str]]:
    """The lines of each ``jobs.ticks`` execution, by kind ("tick", "end")."""
    runs: dict[str, list[str]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, run, _ = line.split()
        runs.setdefault(run, []).append(kind)
    return runs


def _warm_up(q: nbqueue.Queue, log: Path, gate: Path) -> None:
    """Run a few quick ``jobs.hang`` (their gate exists): the dispatcher then knows the
    function as short, and hands each slot a job ahead."""
    gate.touch()
    handles = q.map(jobs.hang, [log] * 6, [f"warm{i}" for i in range(6)], [gate] * 6, key=None)
    assert [h.result(timeout=60) for h in handles] == [f"warm{i}" for i in range(6)]


def test_sigkill_of_the_dispatcher_redoes_at_most_two_per_worker(client, tmp_path):
    """Short jobs stream through a dispatcher in a child process, which is SIGKILLed
    mid-run; the queue reopened here finishes them. Every job is done once in the store,
    and the executions redone (started, their outcome never committed) are at most
    ``2 x workers``, although the cluster held jobs handed ahead when the process died."""
    log, queue_dir, n = tmp_path / "log", tmp_path / "q", 400
    address = client.scheduler.address  # type: ignore[attr-defined]
    proc = start_python(f"""
        import time, nbqueue, jobs
        from distributed import Client
        client = Client({address!r})
        q = nbqueue.Queue({str(queue_dir)!r}, executor=client, workers={WORKERS})
        q.map(jobs.record, [{str(log)!r}] * {n}, range({n}), key=None)
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: sum(_starts(log).values()) >= 60, timeout=120,
                 message="a stream of jobs to run")
    finally:
        kill_and_reap(proc)
    # the scheduler drops the dead client's tasks; those already running end
    wait_for(lambda: _idle(client), timeout=60, message="the cluster to run nothing")
    first = _starts(log)
    assert sum(first.values()) < n  # killed mid-run

    q = nbqueue.Queue(queue_dir, executor=client, workers=WORKERS)
    try:
        handles = q.jobs()
        assert len(handles) == n
        assert sorted(h.result(timeout=120) for h in handles) == list(range(n))
        assert {h.state for h in handles} == {"done"}
    finally:
        q.stop()
    starts = _starts(log)
    assert set(starts) == {str(i) for i in range(n)}
    redone = sum(starts.values()) - n
    assert redone <= 2 * WORKERS, starts.most_common(2 * WORKERS + 1)


def test_cancel_reaches_a_job_handed_ahead(client, tmp_path):
    """Two jobs run (a thread each) and two wait in the cluster, handed ahead; one of the
    waiting ones is cancelled: it ends cancelled at once, while the others still run, and
    never starts."""
    log, go = tmp_path / "log", tmp_path / "go"
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=WORKERS)
    try:
        _warm_up(q, log, go)
        gates = [tmp_path / f"gate{i}" for i in range(4)]
        values = [f"v{i}" for i in range(4)]
        handles = q.map(jobs.hang, [log] * 4, values, gates, key=None)
        wait_for(lambda: sum(_starts(log)[v] for v in values) == 2,
                 message="two jobs to start")
        wait_for(lambda: all(h.state == "running" for h in handles),
                 message="all four to be handed to the cluster")
        started = _starts(log)
        waiting = [h for h, v in zip(handles, values, strict=True) if not started[v]]
        running = [h for h in handles if h not in waiting]
        assert len(waiting) == 2
        assert waiting[0].cancel()
        with pytest.raises(nbqueue.JobCancelled):
            waiting[0].result(timeout=60)
        assert waiting[0].state == "cancelled"
        assert [h.state for h in running] == ["running", "running"]
        for gate in gates:
            gate.touch()
        others = [h for h in handles if h is not waiting[0]]
        assert [h.result(timeout=60) for h in others] == \
            [v for h, v in zip(handles, values, strict=True) if h is not waiting[0]]
        assert all(h.record().deaths == 0 for h in others)
        assert wait_for(lambda: _idle(client), message="the cluster to run nothing")
        cancelled = values[handles.index(waiting[0])]
        assert _starts(log)[cancelled] == 0
    finally:
        q.stop()


def test_a_worker_that_dies_counts_a_death_for_its_job_only(client, tmp_path):
    """Among short jobs streaming with jobs handed ahead, one kills its dask worker each
    time it runs: it dies three times and is failed as poisoned (dask's ``KilledWorker``
    is a death). A job that only waited on that worker, handed ahead, also gets
    ``KilledWorker`` from dask, but had not started: it runs again with no death."""
    log, go, doom = tmp_path / "log", tmp_path / "go", tmp_path / "doom"
    doom.touch()
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=WORKERS)
    try:
        _warm_up(q, log, go)
        n, killer = 40, 5
        dooms = [doom if i == killer else tmp_path / "never" for i in range(n)]
        handles = q.map(jobs.dies_if, [log] * n, range(n), dooms, key=None)
        with pytest.raises(nbqueue.JobFailed) as info:
            handles[killer].result(timeout=240)
        assert info.value.exc_type == "PoisonedJob"
        assert handles[killer].record().deaths == 3
        assert _starts(log)[str(killer)] == 3
        innocent = [h for i, h in enumerate(handles) if i != killer]
        assert [h.result(timeout=120) for h in innocent] == \
            [i for i in range(n) if i != killer]
        assert [h.record().deaths for h in innocent] == [0] * (n - 1)
    finally:
        q.stop()


def test_batches_keep_each_jobs_own_outcome(client, tmp_path):
    """Jobs sent in batches (and their outcomes, small ones over the live channel, large
    ones through dask) each keep their own result or failure."""
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=WORKERS)
    try:
        squares = q.map(jobs.square, range(150), key=None)
        failing = q.map(jobs.boom, [f"no {i}" for i in range(10)], key=None)
        big = CHANNEL_OUTCOME_MAX + 1000
        large = q.map(jobs.sized, [big, big + 1], [b"a", b"b"], key=None)
        assert [h.result(timeout=120) for h in squares] == [i * i for i in range(150)]
        for i, h in enumerate(failing):
            with pytest.raises(nbqueue.JobFailed) as info:
                h.result(timeout=60)
            assert (info.value.exc_type, info.value.exc_value) == ("ValueError", f"no {i}")
        assert [h.result(timeout=60) for h in large] == [b"a" * big, b"b" * (big + 1)]
        assert all(h.record().attempt == 1 for h in squares + failing + large)
    finally:
        q.stop()


def test_the_channel_keeps_what_a_task_says_per_claim():
    """What a dask task sends over a real channel connection: that its job starts, then
    its outcome, kept for that claim of the job only, and woken for; an outcome with no
    start before it (a job settled or stopped meanwhile) and a discarded job keep
    nothing."""
    server = ChannelServer()
    woken = []
    server.on_ended = lambda: woken.append(1)
    try:
        client = ChannelClient(server.address, server.authkey)
        client.send("started", "a", 2)
        client.send("ended", "a", (2, b"outcome of a"))
        client.send("ended", "b", (1, b"outcome of b, never started"))
        client.send("started", "c", 1)
        client.send("progress", "c", {"done": 1})  # the last message: all before are read
        wait_for(lambda: server.drain()[0], message="the messages to arrive")
        assert server.starts_seen
        assert server.started("a", 2) and not server.started("a", 1)
        assert server.ended("a", 1) is None
        assert server.ended("a", 2) == b"outcome of a"
        assert server.ended("a", 2) is None  # taken once
        assert server.ended("b", 1) is None
        assert len(woken) == 2
        server.discard("c")
        client.send("ended", "c", (1, b"too late"))
        client.send("progress", "c", {"done": 2})
        wait_for(lambda: server.drain()[0], message="the messages to arrive")
        assert not server.started("c", 1) and server.ended("c", 1) is None
    finally:
        server.close()


def test_loops_end_when_the_queue_idles_and_start_again_on_demand(client, tmp_path):
    """Each slot serves its jobs with a loop of its own (no dask task per job); once the
    queue has had nothing to run for a while, the loops end and the cluster runs nothing,
    while the dispatcher serves on; the next jobs start new loops."""
    log, gate, again = tmp_path / "log", tmp_path / "gate", tmp_path / "again"
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=WORKERS)
    try:
        handles = q.map(jobs.hang, [log] * 2, ["a", "b"], [gate] * 2, key=None)
        wait_for(lambda: sum(_starts(log).values()) == 2, message="both jobs to start")
        first = _loops(client)
        assert len(first) == WORKERS and _tasks(client) == first
        gate.touch()
        assert [h.result(timeout=60) for h in handles] == ["a", "b"]
        wait_for(lambda: _idle(client), message="the loops to end once the queue idles")
        assert q.dispatcher is not None and q.dispatcher.alive
        later = q.submit(jobs.hang, log, "c", again, key=None)
        wait_for(lambda: _starts(log)["c"], message="a job after the loops ended")
        assert len(_loops(client)) == 1 and not set(_loops(client)) & set(first)
        again.touch()
        assert later.result(timeout=60) == "c"
    finally:
        q.stop()


def test_loops_end_when_the_dispatcher_stops(client, tmp_path):
    """A stop ends the loops, interrupting the jobs they run (handed back to the queue):
    the cluster runs nothing of the queue, and both worker threads are free again."""
    log = tmp_path / "log"
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=WORKERS)
    try:
        handles = q.map(jobs.hang, [log] * 2, ["a", "b"], [tmp_path / "never"] * 2, key=None)
        wait_for(lambda: sum(_starts(log).values()) == 2, message="both jobs to start")
        assert len(_loops(client)) == WORKERS
    finally:
        q.stop()
    wait_for(lambda: _idle(client), message="the loops to end")
    assert [h.state for h in handles] == ["ready", "ready"]
    _both_threads_free(client, tmp_path)


def test_a_timeout_stops_its_job_and_the_loop_goes_on(client, tmp_path):
    """A job past its timeout is interrupted in its loop's thread, and the same loop
    runs the next job: the timed-out job's code stopped (it never ended by itself)."""
    log, ticks, gate = tmp_path / "log", tmp_path / "ticks", tmp_path / "gate"
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=1)
    try:
        slow = q.submit(jobs.ticks, ticks, tmp_path / "never", timeout=1, key=None)
        wait_for(lambda: _runs(ticks), message="the job to tick")
        loop = _loops(client)
        assert len(loop) == 1
        after = q.submit(jobs.hang, log, "after", gate, key=None)  # waits for the slot
        with pytest.raises(nbqueue.JobFailed) as info:
            slow.result(timeout=60)
        assert info.value.exc_type == "TimeoutError"
        wait_for(lambda: _starts(log)["after"], message="the next job to start")
        assert _loops(client) == loop  # the same loop, in the same thread
        (run,) = _runs(ticks).values()
        assert "end" not in run
        gate.touch()
        assert after.result(timeout=60) == "after"
        assert slow.record().attempt == 1
    finally:
        q.stop()


def test_a_job_stuck_in_c_keeps_its_thread_not_its_slot(client, tmp_path):
    """A job past its timeout while blocked in a call that Python cannot interrupt (an
    ``open`` of a named pipe no one writes to) is failed at once and keeps its thread;
    its slot leaves that loop to it and runs the next job on the other thread. Once the
    call returns, the old loop ends and both threads are free."""
    log, gate, fifo = tmp_path / "log", tmp_path / "gate", tmp_path / "fifo"
    os.mkfifo(fifo)
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=1)
    try:
        stuck = q.submit(jobs.read_fifo, fifo, timeout=1, key=None)
        with pytest.raises(nbqueue.JobFailed) as info:
            stuck.result(timeout=60)
        assert info.value.exc_type == "TimeoutError"
        after = q.submit(jobs.hang, log, "after", gate, key=None)
        wait_for(lambda: _starts(log)["after"], message="the next job, on the other thread")
        # the stuck call returns; the interrupt it kept pending may then end the job
        # before it reads, and the write meets a closed pipe
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as writer:
            writer.write(b"x")  # (the close flushes: inside the suppress too)
        gate.touch()
        assert after.result(timeout=60) == "after"
        assert stuck.state == "failed"
    finally:
        q.stop()
    wait_for(lambda: _idle(client), message="the loops to end")
    _both_threads_free(client, tmp_path)


def test_jobs_waiting_for_a_loop_with_no_thread_go_back(client, tmp_path):
    """Three slots on a cluster of two threads, both held by running jobs: the job
    handed to the third slot, whose loop has no thread to start on, goes back to the
    queue (not run, no attempt used) and runs on a slot that frees up."""
    log, gate = tmp_path / "log", tmp_path / "gate"
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=3)
    try:
        holders = q.map(jobs.hang, [log] * 2, ["a", "b"], [gate] * 2, key=None)
        wait_for(lambda: sum(_starts(log).values()) == 2, message="two jobs to hold the threads")
        waiting = q.submit(jobs.hang, log, "c", gate, key=None)
        wait_for(lambda: waiting.state == "running", message="the third job to be handed out")
        wait_for(lambda: waiting.state == "ready", message="the third job to go back")
        assert not _starts(log)["c"]
        gate.touch()
        assert [h.result(timeout=60) for h in [*holders, waiting]] == ["a", "b", "c"]
        assert (waiting.record().attempt, waiting.record().deaths) == (1, 0)
    finally:
        q.stop()


def test_a_loop_that_cannot_reach_the_dispatcher_falls_back_to_a_task_per_job(
        client, tmp_path, monkeypatch, caplog):
    """Workers that cannot reach the dispatcher's address (here an address that routes
    nowhere): the slots' loops give up, each slot runs its jobs as one dask task each
    (said once in the log), and the jobs' results come back all the same."""
    monkeypatch.setenv("NBQUEUE_CHANNEL_HOST", "192.0.2.1")  # TEST-NET-1: reaches nothing
    caplog.set_level(logging.WARNING, logger="nbqueue.daskloop")
    log, gate = tmp_path / "log", tmp_path / "gate"
    q = nbqueue.Queue(tmp_path / "q", executor=client, workers=WORKERS)
    try:
        h = q.submit(jobs.hang, log, "slow", gate, key=None)
        wait_for(lambda: any(key.startswith("nbqueue-hang-") for key in _tasks(client)),
                 timeout=120, message="the job to run as a dask task of its own")
        assert not _loops(client)
        gate.touch()
        assert h.result(timeout=60) == "slow"
        squares = q.map(jobs.square, range(20), key=None)
        assert [s.result(timeout=120) for s in squares] == [i * i for i in range(20)]
    finally:
        q.stop()
    said = [r.getMessage() for r in caplog.records if "could not reach" in r.getMessage()]
    assert len(said) == 1 and "192.0.2.1" in said[0]


def test_a_paused_dispatchers_dask_jobs_stop_when_its_lease_runs_out(client, tmp_path):
    """A dispatcher (lease 2 s) is paused with SIGSTOP while its job runs in a loop: the
    loop, told of each renewal, stops the job once the lease has run out, before anyone
    may take it over. Killed and reopened, the queue runs the job again, to its end."""
    log, gate, queue_dir = tmp_path / "ticks", tmp_path / "gate", tmp_path / "q"
    address = client.scheduler.address  # type: ignore[attr-defined]
    proc = start_python(f"""
        import time, nbqueue, jobs
        from distributed import Client
        client = Client({address!r})
        q = nbqueue.Queue({str(queue_dir)!r}, executor=client, workers=1)
        print(q.submit(jobs.ticks, {str(log)!r}, {str(gate)!r}).id, flush=True)
        time.sleep(600)
    """, cwd=tmp_path, env={"NBQUEUE_LEASE": "2"})
    try:
        job_id = proc.stdout.readline().strip()
        wait_for(lambda: _runs(log), timeout=120, message="the job to tick")
        os.kill(proc.pid, signal.SIGSTOP)
        wait_for(lambda: _quiet(log), timeout=60, message="the paused dispatcher's job to stop")
    finally:
        kill_and_reap(proc)
    (first,) = _runs(log).values()
    assert "end" not in first
    gate.touch()
    q = nbqueue.Queue(queue_dir, executor=client, workers=1)
    try:
        second = q.job(job_id).result(timeout=120)
    finally:
        q.stop()
    runs = _runs(log)
    assert second in runs and runs[second] == ["end"] and len(runs) == 2
