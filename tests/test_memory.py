"""Memory limits: a job past its ``memory=`` fails with the limit in its reason, as a
failure (never a death), its worker is replaced and the next job on that slot runs, other
slots go on; what the job's own child processes use counts; workers ask the kernel to be
killed first (``oom_score_adj``); on dask a limit is not enforced, and the dispatcher
says so."""

from __future__ import annotations

import logging
import os
import sys

import jobs
import pytest
from conftest import local_dask_client

import nbqueue

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="memory limits read /proc (Linux)")


def test_a_job_past_its_limit_fails_naming_it_and_the_next_job_on_its_slot_runs(queue_dir):
    with nbqueue.Queue(queue_dir, workers=1) as q:
        before = q.submit(jobs.getpid, key=None)
        hog = q.submit(jobs.hog, 2_000_000_000, memory="200MB", key=None)
        after = q.submit(jobs.getpid, key=None)
        with pytest.raises(nbqueue.JobFailed, match="MemoryError") as info:
            hog.result(timeout=120)
        assert "memory limit (memory=200 MB)" in str(info.value)
        record = hog.record()
        assert record.state == "failed"
        assert "200 MB" in record.reason and "MemoryError" in record.reason
        assert record.deaths == 0 and record.attempt == 1  # a failure, not a death
        assert after.result(timeout=120) != before.result(timeout=120)  # a new worker
        assert q.dispatcher.alive and q.dispatcher.error is None
        assert q.submit(jobs.hog, 50_000_000, memory="1GB", key=None).result(
            timeout=120) == 50_000_000  # under its limit: runs to its end


def test_the_limit_counts_against_retries_and_never_poisons(queue_dir):
    with nbqueue.Queue(queue_dir, workers=1) as q:
        h = q.submit(jobs.hog, 2_000_000_000, memory="150MB", retries=3, retry_delay=0.01,
                     key=None)
        with pytest.raises(nbqueue.JobFailed, match="memory=150 MB"):
            h.result(timeout=300)
        record = h.record()
        assert record.attempt == 4 and record.deaths == 0  # 1 + 3 retries; never poisoned
        assert "poisoned" not in record.reason


def test_other_slots_go_on_and_a_child_process_counts(queue_dir, tmp_path):
    with nbqueue.Queue(queue_dir, workers=2) as q:
        slow = q.submit(jobs.sleepy, 3.0, "slept", key=None)
        child = q.submit(jobs.hog_in_child, 2_000_000_000, memory="150MB", key=None)
        with pytest.raises(nbqueue.JobFailed, match="memory=150 MB"):
            child.result(timeout=120)
        assert slow.result(timeout=120) == "slept"
        assert slow.record().attempt == 1


def test_the_queue_default_applies_and_a_job_own_limit_wins(queue_dir):
    with nbqueue.Queue(queue_dir, workers=1, memory="150MB") as q:
        capped = q.submit(jobs.hog, 2_000_000_000, key=None)
        mapped = q.map(jobs.hog, [2_000_000_000], key=None)
        own = q.submit(jobs.hog, 200_000_000, memory="2GB", key=None)
        for h in (capped, *mapped):
            with pytest.raises(nbqueue.JobFailed, match="memory=150 MB"):
                h.result(timeout=120)
        assert own.result(timeout=120) == 200_000_000
        assert own.record().options.memory == 2_000_000_000
        assert capped.record().options.memory == 150_000_000


def test_workers_ask_the_kernel_to_kill_them_first(queue):
    pid, adj = queue.submit(jobs.oom_score_adj, key=None).result(timeout=60)
    assert pid != os.getpid()
    with open("/proc/self/oom_score_adj") as f:
        own = int(f.read())
    assert adj == 1000 and adj > own


def test_on_dask_a_limit_is_not_enforced_and_the_dispatcher_says_so(queue_dir, tmp_path,
                                                                    caplog):
    with local_dask_client(tmp_path / "dask", n_workers=1, threads_per_worker=1) as client:
        with nbqueue.Queue(queue_dir, executor=client) as q, \
                caplog.at_level(logging.WARNING, logger="nbqueue.dispatcher"):
            h = q.submit(jobs.hog, 100_000_000, memory="50MB", key=None)
            assert h.result(timeout=120) == 100_000_000  # ran to its end, unlimited
    assert any("memory=" in r.getMessage() and "dask" in r.getMessage()
               for r in caplog.records)
