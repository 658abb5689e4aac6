"""A job's processes end with it: a child process that a job starts (``sleep 300``) is
killed when the job is cancelled, when it times out, when its worker process dies and
when its dispatcher's process is SIGKILLed. A job that ends normally keeps its children
until its worker stops. Real processes, real signals, nothing mocked."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import jobs
import pytest
from conftest import pid_alive, start_python, wait_for

import nbqueue

TRIES = 20  # per case, as the issue asks; each case runs them on one queue, two at a time
GONE_WITHIN = 10.0  # seconds: a generous deadline (a killed child dies in milliseconds)


@pytest.fixture
def children(tmp_path: Path) -> Iterator[list[int]]:
    """Pids of the children the jobs started: whatever a failing test leaves alive (also
    a child whose pid file it never read) is killed at teardown, so a failure does not
    leave ``sleep 300`` behind."""
    pids: list[int] = []
    yield pids
    pids += [_pids(f)[1] for f in tmp_path.glob("pids*") if not f.name.endswith(".tmp")]
    for pid in pids:
        if pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _pids(pid_file: Path) -> tuple[int, int]:
    """(worker pid, child pid) published by ``jobs.child_then_wait``."""
    worker, child = pid_file.read_text().split()
    return int(worker), int(child)


def _end_each(q: nbqueue.Queue, tmp_path: Path, children: list[int],
              end: Callable[[nbqueue.Job, int], None] | None, **options: object,
              ) -> list[nbqueue.Job]:
    """Submit ``TRIES`` jobs that each start a child and block; as each one runs, ``end``
    it (given its handle and its worker's pid; None: it ends by itself) and check that its
    child dies. Returns the handles, once every job has ended."""
    gate = tmp_path / "gate"  # never opens
    pid_files = [tmp_path / f"pids{i}" for i in range(TRIES)]
    handles = q.map(jobs.child_then_wait, pid_files, [gate] * TRIES, key=None, **options)
    for i, (h, pid_file) in enumerate(zip(handles, pid_files, strict=True)):
        wait_for(pid_file.exists, timeout=120, message=f"job {i} to start its child")
        worker, child = _pids(pid_file)
        children.append(child)
        if end is not None:
            assert pid_alive(child)
            end(h, worker)
        wait_for(lambda child=child: not pid_alive(child), timeout=GONE_WITHIN,
                 message=f"the child {child} of job {i} to die")
        h.wait(timeout=60)
    return handles


def test_cancel_kills_the_jobs_children(queue_dir, tmp_path, children):
    with nbqueue.Queue(queue_dir, workers=2) as q:
        handles = _end_each(q, tmp_path, children, lambda h, _worker: h.cancel())
        assert {h.state for h in handles} == {"cancelled"}


# A local job's timeout counts from its hand-off to its slot, which includes starting a
# new worker process after the previous job's was killed (importing nbqueue: about a
# second on a busy 2-core machine). With 1 s the job could time out before it started
# its child, and the test then waited 120 s for a pid file that never comes (3 s still
# failed once at a load of 7).
TIMEOUT = 4


def test_timeout_kills_the_jobs_children(queue_dir, tmp_path, children):
    with nbqueue.Queue(queue_dir, workers=2) as q:
        handles = _end_each(q, tmp_path, children, None, timeout=TIMEOUT)
        assert {h.exception().exc_type for h in handles} == {"TimeoutError"}


def test_a_dead_worker_takes_its_jobs_children_along(queue_dir, tmp_path, children):
    with nbqueue.Queue(queue_dir, workers=2) as q:
        # the job fails, or runs again (and then returns at once): not this test's concern
        _end_each(q, tmp_path, children, lambda _h, worker: os.kill(worker, signal.SIGKILL))


# Each try of the dispatcher's death starts a Python process that opens a queue and starts
# its workers (about a second of CPU on a shared 2-core machine), so instead of 20 tries of
# one job this runs 5 tries of 4 workers each: the 20 children of the issue, each one in a
# worker of its own, for a quarter of the time.
DEATHS, WORKERS = 5, 4


@pytest.mark.parametrize("death", range(DEATHS))
def test_a_killed_dispatcher_takes_its_jobs_children_along(queue_dir, tmp_path, children,
                                                           death):
    gate = tmp_path / "gate"  # never opens
    pid_files = [tmp_path / f"pids{i}" for i in range(WORKERS)]
    proc = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers={WORKERS})
        q.map(jobs.child_then_wait, {[str(p) for p in pid_files]!r}, [{str(gate)!r}] * {WORKERS},
              key=None)
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: all(p.exists() for p in pid_files), timeout=120,
                 message="every job to start its child")
    finally:
        # not kill_and_reap(): its communicate() would wait for the end of the output
        # pipes, which a surviving child (inherited from the worker) keeps open
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
    pids = [_pids(p) for p in pid_files if p.exists()]
    children += [child for _, child in pids]
    assert len({worker for worker, _ in pids}) == WORKERS  # one job per worker
    everything = {pid for pair in pids for pid in pair}
    wait_for(lambda: not any(pid_alive(p) for p in everything), timeout=GONE_WITHIN,
             message=f"the workers and children {sorted(everything)} of the killed dispatcher "
                     "to die")


def test_a_job_that_ends_normally_keeps_its_children_until_its_worker_dies(
        queue_dir, tmp_path, children):
    """A job's leftover child outlives the job, but not its worker: killed while idle,
    the worker is replaced and its process group (the leftover child) killed."""
    with nbqueue.Queue(queue_dir, workers=1) as q:
        for i in range(TRIES // 4):
            worker, child = q.submit(jobs.leave_child, key=None).result(timeout=60)
            children.append(child)
            assert q.submit(jobs.getpid, key=None).result(timeout=60) == worker  # same worker
            assert pid_alive(child)
            os.kill(worker, signal.SIGKILL)
            wait_for(lambda child=child: not pid_alive(child), timeout=GONE_WITHIN,
                     message=f"the leftover child {child} of try {i} to die with its worker")


def test_stopping_the_queue_kills_what_its_jobs_left_behind(queue_dir, tmp_path, children):
    """Also a process whose parent exited (no longer a descendant of the worker, which is
    all that loky's own kill reaches): it is still in the worker's process group."""
    with nbqueue.Queue(queue_dir, workers=2) as q:
        handles = [q.submit(jobs.leave_orphan, key=None) for _ in range(TRIES // 4)]
        orphans = [h.result(timeout=60) for h in handles]
        children += orphans
        assert all(pid_alive(p) for p in orphans)  # a job that ended keeps its children
    wait_for(lambda: not any(pid_alive(p) for p in orphans), timeout=GONE_WITHIN,
             message=f"what the jobs left behind ({orphans}) to die when the queue stopped")
