"""One set of test bodies, run against every executor: local loky workers and a real
dask ``LocalCluster`` (two single-threaded worker processes on 127.0.0.1).

The dask cluster is started once per module (``test_dask_defaults`` starts one of its
own). Without ``distributed`` the dask cases
are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import jobs
import pytest
from conftest import local_dask_client, wait_for

import nbqueue
from nbqueue.executors import channel_address


@pytest.fixture(scope="module")
def dask_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real LocalCluster of two single-threaded worker processes, and its client."""
    with local_dask_client(tmp_path_factory.mktemp("dask"), n_workers=2,
                           threads_per_worker=1) as client:
        yield client


@pytest.fixture(params=["local", "dask"])
def executor(request: pytest.FixtureRequest) -> object:
    """None (local loky workers) or the module's dask client."""
    return request.getfixturevalue("dask_client") if request.param == "dask" else None


@pytest.fixture
def q(tmp_path: Path, executor: object) -> Iterator[nbqueue.Queue]:
    """A started queue with two workers on the executor under test."""
    queue = nbqueue.Queue(tmp_path / "q", workers=2, executor=executor)
    try:
        yield queue
    finally:
        queue.stop()


def meet_in_pairs(q: nbqueue.Queue, tmp_path: Path, tag: str) -> None:
    """Two jobs that finish only if both run at the same time: proof that both workers
    are free (a job stopped by a timeout or cancel no longer holds one)."""
    group = tmp_path / f"meet-{tag}"
    pair = [q.submit(jobs.span, tmp_path / f"meet-{tag}.log", i, group=group, size=2,
                     timeout=None, key=None) for i in range(2)]
    assert [h.result(timeout=90) for h in pair] == [0, 1]


def test_results_and_errors(q: nbqueue.Queue) -> None:
    assert q.submit(jobs.square, 7).result(timeout=60) == 49
    assert q.submit(lambda x: x + 1, 41, key=None).result(timeout=60) == 42  # by value
    failing = q.submit(jobs.boom, "no luck")
    with pytest.raises(nbqueue.JobFailed) as info:
        failing.result(timeout=60)
    assert info.value.exc_type == "ValueError"
    assert info.value.exc_value == "no luck"
    assert "def boom" in info.value.traceback or "boom" in info.value.traceback
    assert failing.state == "failed"


def test_map(q: nbqueue.Queue) -> None:
    handles = q.map(jobs.add, [1, 2, 3], [10, 20, 30])
    assert [h.result(timeout=60) for h in handles] == [11, 22, 33]


def test_chunked_map(q: nbqueue.Queue, tmp_path: Path) -> None:
    hs = q.map(jobs.fails_on, range(40), [(13,)] * 40, chunksize=8)
    with pytest.raises(nbqueue.JobFailed) as info:
        hs[13].result(timeout=60)
    assert info.value.exc_value == "bad item 13"
    assert [h.result(timeout=60) for h in hs if h.index != 13] == \
        [10 * i for i in range(40) if i != 13]
    auto = q.map(jobs.square, range(300), chunksize="auto", key=None)
    assert auto.results(timeout=60) == [i * i for i in range(300)]
    (tmp_path / "there").touch()
    timed = q.map(jobs.wait_for_file, [tmp_path / "never", tmp_path / "there"], range(2),
                  chunksize="auto", timeout=2)
    with pytest.raises(nbqueue.JobFailed) as info:
        timed[0].result(timeout=60)
    assert info.value.exc_type == "TimeoutError" and timed[1].result(timeout=60) == 1
    meet_in_pairs(q, tmp_path, "after-chunk-timeout")


def test_spawn(q: nbqueue.Queue) -> None:
    parent = q.submit(jobs.spawner, 3)
    ids = parent.result(timeout=60)
    assert [c.id for c in parent.children] == ids
    assert [c.result(timeout=60) for c in parent.children] == [0, 1, 4]


def test_retries(q: nbqueue.Queue, tmp_path: Path) -> None:
    h = q.submit(jobs.flaky, tmp_path / "count", 2, retries=2, retry_delay=0.05)
    assert h.result(timeout=60) == 3
    assert h.record().attempt == 3


def test_timeout_fails_the_job_and_frees_its_worker(q: nbqueue.Queue, tmp_path: Path) -> None:
    h = q.submit(jobs.wait_for_file, tmp_path / "never", timeout=1, key=None)
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=60)
    assert info.value.exc_type == "TimeoutError"
    assert h.state == "failed"
    meet_in_pairs(q, tmp_path, "after-timeout")


def test_cancel_running_job(q: nbqueue.Queue, tmp_path: Path) -> None:
    log = tmp_path / "hang.log"
    h = q.submit(jobs.hang, log, "x", tmp_path / "never", key=None)
    wait_for(log.exists, message="the job starting")
    assert h.cancel()
    with pytest.raises(nbqueue.JobCancelled):
        h.result(timeout=60)
    assert h.state == "cancelled"
    meet_in_pairs(q, tmp_path, "after-cancel")


def test_continuation_fan_out(q: nbqueue.Queue) -> None:
    parent = q.submit(jobs.fan_out, 4)
    assert parent.result(timeout=60) == 0 + 1 + 4 + 9
    assert [c.result(timeout=60) for c in parent.children] == [0, 1, 4, 9]


def test_logs_and_progress_while_running(q: nbqueue.Queue, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    printer = q.submit(jobs.print_then_wait, gate, key=None)
    reporter = q.submit(jobs.progress_then_wait, gate, key=None)
    wait_for(lambda: "first line" in printer.logs and "to stderr" in printer.logs,
             message="live output of a running job")
    wait_for(lambda: (reporter.progress or {}).get("message") == "a quarter",
             message="live progress of a running job")
    assert reporter.progress["done"] == 1 and reporter.progress["total"] == 4
    assert printer.state == "running"
    gate.touch()
    assert printer.result(timeout=60) == "printed"
    assert reporter.result(timeout=60) == "progressed"
    assert "last line" in printer.logs


def test_worker_crash_fails_only_its_job(q: nbqueue.Queue, tmp_path: Path) -> None:
    log, gate = tmp_path / "survivor.log", tmp_path / "gate"
    survivor = q.submit(jobs.hang, log, "alive", gate, key=None)
    wait_for(log.exists, message="the survivor starting")
    crash = q.submit(jobs.suicide, key=None)
    with pytest.raises(nbqueue.JobFailed) as info:
        crash.result(timeout=90)
    assert crash.state == "failed"
    assert "died" in info.value.exc_value
    assert survivor.state == "running"
    gate.touch()
    assert survivor.result(timeout=60) == "alive"
    assert survivor.record().attempt == 1
    assert q.submit(jobs.square, 12).result(timeout=90) == 144


def test_a_worker_death_runs_again_until_poisoned(q: nbqueue.Queue, tmp_path: Path) -> None:
    """A job whose worker dies runs again by nbqueue's decision (not dask's), and the third
    death fails it as poisoned; its retries (for exceptions) add no runs."""
    h = q.submit(jobs.suicide, retries=1, retry_delay=0.05, key=None)
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=120)
    assert info.value.exc_type == "PoisonedJob"
    record = h.record()
    assert (record.attempt, record.deaths) == (3, 3)
    assert record.why.startswith("its worker process died")


# -- dask only ----------------------------------------------------------------------------------


def test_dask_defaults(tmp_path: Path) -> None:
    # a cluster of its own, not the module's: a worker that the tests above killed may
    # not come back (a nanny does not restart a worker that dies while it is still
    # starting it, which a busy machine makes likely), and this test counts them
    with local_dask_client(tmp_path / "dask", n_workers=2, threads_per_worker=1) as client:
        queue = nbqueue.Queue(tmp_path / "q", executor=client)
        try:
            assert queue.workers == 2  # the cluster's threads
            allowed = client.run_on_scheduler(  # type: ignore[attr-defined]
                lambda dask_scheduler: dask_scheduler.allowed_failures)
            assert allowed == 0  # nbqueue owns retries
            assert queue.submit(os.getpid, key=None).result(timeout=60) != os.getpid()
        finally:
            queue.stop()


def test_channel_address(dask_client: object, monkeypatch: pytest.MonkeyPatch) -> None:
    assert channel_address(None) == ("127.0.0.1", "127.0.0.1")
    assert channel_address(dask_client) == ("127.0.0.1", "127.0.0.1")  # a LocalCluster
    monkeypatch.setenv("NBQUEUE_CHANNEL_HOST", "10.1.2.3")
    assert channel_address(dask_client) == ("0.0.0.0", "10.1.2.3")


def test_executor_must_be_a_client(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="distributed.Client"):
        nbqueue.Queue(tmp_path / "q", executor=object())
    assert not (tmp_path / "q").exists()
