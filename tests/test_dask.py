"""Jobs in flight on a dask cluster: each slot keeps one job handed ahead while jobs are
short, the jobs of a dispatcher step go to the cluster in one batch, and every guarantee
holds: a SIGKILL of the dispatcher's process redoes at most two executions per worker, a
cancel reaches a job handed ahead, a worker that dies counts a death for the job that ran
there (and none for one that only waited on it), and each job keeps its own result.

A real ``LocalCluster`` (two single-threaded worker processes on 127.0.0.1), started once
for the module; the dispatcher that is killed runs in a child process of its own.
"""

from __future__ import annotations

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
