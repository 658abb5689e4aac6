"""Chunked maps (``q.map(..., chunksize=...)``): the items run in chunks, each keeps its
own result, failure, retries and handle; automatic chunk sizes adapt; submitting a map
again attaches to it and runs only what is not done; a crash (SIGKILL of the dispatcher's
process or of a worker) redoes at most one chunk per worker; the map is one row for the
command line and the job lists, its chunks none."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jobs
import pytest
from conftest import kill_and_reap, python_env, start_python, wait_for, wait_gone

import nbqueue


def _runs(log: Path) -> Counter[int]:
    """How often each item ran (``jobs.mark_item`` writes a line per run)."""
    if not log.exists():
        return Counter()
    return Counter(int(line.split()[1]) for line in log.read_text().splitlines())


def _pids(log: Path) -> set[int]:
    return {int(line.split()[2]) for line in log.read_text().splitlines()} if log.exists() \
        else set()


def _counts(folder: Path, n: int) -> list[int]:
    """How often each item of ``jobs.flaky_item`` ran."""
    return [int((folder / f"item-{i}").read_text()) if (folder / f"item-{i}").exists() else 0
            for i in range(n)]


def _chunk_sizes(q: nbqueue.Queue, map_id: str) -> list[int]:
    """The sizes of the map's first runs of chunks, in item order."""
    return [n for n, in q._store._rows("SELECT n FROM nbq_map_out WHERE map = ? ORDER BY start",
                                      (map_id,))]


def test_items_run_in_chunks_and_keep_their_own_results(queue):
    hs = queue.map(jobs.add, range(50), range(100, 150), chunksize=7)
    assert len(hs) == 50
    assert [h.result(timeout=60) for h in hs] == [2 * i + 100 for i in range(50)]
    assert _chunk_sizes(queue, hs.id) == [7] * 7 + [1]
    assert hs[-1].id == f"{hs.id}#49" and hs[-1].state == "done"
    assert hs[10:12] == [hs[10], hs[11]] and hs[10].parent.id == hs.id
    assert queue.job(hs[5].id).result() == 110
    assert hs.map.state == "done" and hs.map.reason == "50 items done"
    assert hs.map.result() is None
    # one job: the map; its chunks are gone and were never counted
    assert [h.id for h in queue.jobs()] == [hs.id]
    assert queue.status()["counts"]["done"] == 1
    assert sum(queue.status()["counts"].values()) == 1
    assert queue._store._one("SELECT COUNT(*) FROM nbq_job") == 1
    assert len(queue.map(jobs.add, [], [], chunksize="auto")) == 0  # nothing to store
    assert queue.forget() == 1  # the map, with its arguments and results
    assert [queue._store._one(f"SELECT COUNT(*) FROM {table}") for table in
            ("nbq_job", "nbq_map", "nbq_map_args", "nbq_map_out")] == [0, 0, 0, 0]


def test_a_failing_item_fails_alone(queue):
    hs = queue.map(jobs.fails_on, range(30), [(4, 17)] * 30, chunksize=10)
    with pytest.raises(nbqueue.JobFailed) as info:
        hs[4].result(timeout=60)
    assert info.value.exc_type == "ValueError" and info.value.exc_value == "bad item 4"
    assert "fails_on" in info.value.traceback
    assert [h.result(timeout=60) for h in hs if h.index not in (4, 17)] == \
        [10 * i for i in range(30) if i not in (4, 17)]
    hs.map.wait(timeout=60)
    assert hs.map.state == "failed"
    assert hs.map.reason == "2 of 30 items failed; first: item 4: ValueError: bad item 4"
    assert [h.state for h in hs].count("failed") == 2 and hs[17].state == "failed"
    assert hs[5].exception() is None and hs[17].exception().exc_value == "bad item 17"
    with pytest.raises(nbqueue.JobFailed, match="item 4"):
        hs.map.result()


def test_a_failed_item_is_retried_alone(queue, tmp_path):
    flaky = (3, 22)
    hs = queue.map(jobs.flaky_item, [tmp_path] * 40, range(40),
                   [1 if i in flaky else 0 for i in range(40)], chunksize=8, retries=2,
                   retry_delay=0.05)
    assert [h.result(timeout=60) for h in hs] == list(range(40))
    assert _counts(tmp_path, 40) == [2 if i in flaky else 1 for i in range(40)]
    assert hs[3].record().attempt == 2 and hs[4].record().attempt == 1
    assert hs.map.state == "done"


def test_an_item_is_retried_and_cancelled_by_hand(stopped_queue, tmp_path):
    q = stopped_queue
    hs = q.map(jobs.flaky_item, [tmp_path] * 10, range(10), [1 if i == 6 else 0 for i in range(10)],
               chunksize=4)
    assert hs[2].cancel() and hs[2].state == "cancelled"
    assert not hs[2].cancel()
    q.start()
    hs.map.wait(timeout=60)
    assert hs.map.state == "failed" and hs[6].state == "failed"
    with pytest.raises(nbqueue.JobCancelled):
        hs[2].result(timeout=5)
    hs[6].retry()
    assert hs[6].result(timeout=60) == 6
    hs[2].retry()
    assert hs[2].result(timeout=60) == 2
    hs.map.wait(timeout=60)
    assert hs.map.state == "done"
    assert _counts(tmp_path, 10) == [1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    with pytest.raises(nbqueue.errors.JobStateError):
        hs[0].retry()


def test_a_cancelled_map_submitted_again_attaches_and_runs(stopped_queue, tmp_path):
    q, log = stopped_queue, tmp_path / "log"
    hs = q.map(jobs.mark_item, [log] * 30, range(30), chunksize=5)
    assert hs.map.cancel()
    assert hs.map.state == "cancelled" and {h.state for h in hs} == {"cancelled"}
    with pytest.raises(nbqueue.JobCancelled):
        hs[0].result(timeout=5)
    again = q.map(jobs.mark_item, [log] * 30, range(30), chunksize=5)
    assert again.id == hs.id
    q.start()
    assert [h.result(timeout=60) for h in again] == list(range(30))
    assert _runs(log) == Counter(range(30))
    assert again.map.state == "done"


def test_submitting_again_runs_only_the_items_not_done(queue, tmp_path):
    args = ([tmp_path] * 20, range(20), [1 if i % 5 == 0 else 0 for i in range(20)])
    hs = queue.map(jobs.flaky_item, *args, chunksize="auto")
    hs.map.wait(timeout=60)
    assert hs.map.state == "failed" and [h.state for h in hs].count("failed") == 4
    again = queue.map(jobs.flaky_item, *args, chunksize="auto")
    assert again.id == hs.id
    assert [h.result(timeout=60) for h in again] == list(range(20))
    assert _counts(tmp_path, 20) == [2 if i % 5 == 0 else 1 for i in range(20)]
    assert again[5].record().attempt == 2
    done = queue.map(jobs.flaky_item, *args, chunksize="auto")  # a done map: nothing runs
    assert done.id == hs.id and done.map.state == "done"
    queue.join(timeout=60)
    assert _counts(tmp_path, 20) == [2 if i % 5 == 0 else 1 for i in range(20)]
    other = queue.map(jobs.flaky_item, *args, chunksize="auto", key=None)
    assert other.id != hs.id


def test_automatic_chunks_grow_for_fast_items_and_stay_short_for_slow_ones(queue):
    fast = queue.map(jobs.square, range(20_000), chunksize="auto", key=None)
    assert fast.results(timeout=120) == [i * i for i in range(20_000)]
    sizes = _chunk_sizes(queue, fast.id)
    assert sizes[0] == 1 and max(sizes) >= 1024
    assert all(n <= 2 * max(sizes[:i]) for i, n in enumerate(sizes) if i)  # at most doubling
    # items of 20 ms: chunks grow until they take about 0.2 s, never past twice that
    medium = queue.map(jobs.sleepy, [0.02] * 100, chunksize="auto", key=None)
    medium.results(timeout=120)
    sizes = _chunk_sizes(queue, medium.id)
    assert 4 <= max(sizes) <= 20
    # items of a third of a second: one per chunk
    slow = queue.map(jobs.sleepy, [0.3] * 6, range(6), chunksize="auto", key=None)
    assert slow.results(timeout=120) == list(range(6))
    assert _chunk_sizes(queue, slow.id) == [1] * 6


def test_a_timeout_stops_its_item_alone(queue, tmp_path):
    never, there = tmp_path / "never", tmp_path / "there"
    there.touch()
    for h in queue.map(jobs.noop, range(4), key=None):  # the workers have started
        h.result(timeout=60)
    hs = queue.map(jobs.wait_for_file, [there, never, there], range(3), chunksize="auto",
                   timeout=1)
    with pytest.raises(nbqueue.JobFailed) as info:
        hs[1].result(timeout=60)
    assert info.value.exc_type == "TimeoutError"
    assert [hs[0].result(timeout=60), hs[2].result(timeout=60)] == [0, 2]


def test_a_crash_inside_one_item_ends_up_alone(queue):
    hs = queue.map(jobs.die_on, range(16), [11] * 16, chunksize=16)
    with pytest.raises(nbqueue.JobFailed) as info:
        hs[11].result(timeout=120)
    assert info.value.exc_type == "PoisonedJob"
    assert [h.result(timeout=60) for h in hs if h.index != 11] == \
        [i for i in range(16) if i != 11]
    assert hs.map.state == "failed"


def test_sigkill_of_the_dispatcher_process_redoes_at_most_one_chunk_per_worker(queue_dir,
                                                                                 tmp_path):
    log, n, chunk, workers = tmp_path / "log", 400, 20, 2
    args = f"[{str(log)!r}] * {n}, range({n}), [0.02] * {n}, chunksize={chunk}"
    proc = start_python(f"""
        import time, nbqueue, jobs
        q = nbqueue.Queue({str(queue_dir)!r}, workers={workers})
        q.map(jobs.mark_item, {args})
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: sum(_runs(log).values()) >= 100, timeout=120,
                 message="the map to be running")
    finally:
        kill_and_reap(proc)
    wait_gone(_pids(log))
    first = _runs(log)
    con = sqlite3.connect(queue_dir / "cache.db")
    try:  # as the dead process left it: its chunks running, none done twice
        running = con.execute("SELECT COUNT(*) FROM nbq_job WHERE kind = 'chunk' AND "
                              "state = 'running'").fetchone()[0]
    finally:
        con.close()
    assert 1 <= running <= workers

    q = nbqueue.Queue(queue_dir, workers=workers)
    try:
        hs = q.map(jobs.mark_item, [str(log)] * n, range(n), [0.02] * n, chunksize=chunk)
        assert [h.id for h in q.jobs()] == [hs.id]  # attached to the map the dead one made
        assert hs.results(timeout=240) == list(range(n))
        assert hs.map.state == "done"
    finally:
        q.stop()
    runs = _runs(log)
    assert set(runs) == set(range(n))  # nothing lost
    redone = {i for i, count in runs.items() if count > 1}
    assert redone and max(runs.values()) == 2
    assert redone <= set(first)
    assert len({i // chunk for i in redone}) <= workers  # at most one chunk per worker


def test_sigkill_of_a_worker_redoes_its_chunk_only(queue, tmp_path):
    log, n, chunk = tmp_path / "log", 200, 20
    hs = queue.map(jobs.mark_item, [log] * n, range(n), [0.02] * n, chunksize=chunk)
    wait_for(lambda: sum(_runs(log).values()) >= 50, timeout=120, message="items to run")
    victim = int(log.read_text().splitlines()[-1].split()[2])
    os.kill(victim, signal.SIGKILL)
    assert hs.results(timeout=240) == list(range(n))
    runs = _runs(log)
    redone = {i for i, count in runs.items() if count > 1}
    assert redone and len({i // chunk for i in redone}) == 1 and max(runs.values()) == 2
    assert hs.map.state == "done" and hs.map.record().deaths == 0


def _cli(*args: object, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "nbqueue", *map(str, args)], cwd=cwd,
                          env=python_env(), text=True, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_command_line_shows_a_map_as_one_row(queue, queue_dir, tmp_path):
    gate = tmp_path / "gate"
    hs = queue.map(jobs.wait_for_file, [gate] * 10, range(10), chunksize=2, name="waits")
    wait_for(lambda: len(queue._store.map_chunks(hs.id)) == 2, message="two chunks to run")
    listed = json.loads(_cli("jobs", queue_dir, "--json", cwd=tmp_path))
    assert [(j["id"], j["kind"], j["state"]) for j in listed] == [(hs.id, "map", "running")]
    assert listed[0]["progress"]["total"] == 10
    table = _cli("jobs", queue_dir, cwd=tmp_path).splitlines()
    assert len(table) == 2 and "waits" in table[1] and "0 of 10 items done (0%)" in table[1]
    status = json.loads(_cli("status", queue_dir, "--json", cwd=tmp_path))
    assert status["counts"]["running"] == 1 and sum(status["counts"].values()) == 1
    assert [j["id"] for j in status["running"]] == [hs.id]
    gate.touch()
    hs.map.wait(timeout=60)
    table = _cli("jobs", queue_dir, cwd=tmp_path).splitlines()
    assert len(table) == 2 and "done" in table[1] and "10 items done" in table[1]


def test_jobs_that_need_a_map_wait_for_all_its_items(stopped_queue):
    q = stopped_queue
    hs = q.map(jobs.square, range(10), chunksize=3)
    whole = q.submit(jobs.noop, "whole", needs=hs, key=None)
    one = q.submit(jobs.noop, "one", needs=[hs[4]], key=None)
    assert whole.state == one.state == "waiting" and hs.id in one.reason
    q.start()
    assert whole.result(timeout=60) is None and one.result(timeout=60) is None
    assert whole.record().started >= hs.map.record().ended
    bad = q.map(jobs.fails_on, range(4), [(2,)] * 4, chunksize=2)
    after_bad = q.submit(jobs.noop, "after", needs=bad, key=None)
    with pytest.raises(nbqueue.JobCancelled):
        after_bad.result(timeout=60)
    assert bad.map.state == "failed"


def test_check_and_salvage_know_maps(queue, queue_dir, tmp_path):
    from nbqueue.store.check import check_queue
    from nbqueue.store.salvage import salvage

    there, gate = tmp_path / "there", tmp_path / "gate"
    there.touch()
    hs = queue.map(jobs.wait_for_file, [there] * 4 + [gate] * 4, range(8), chunksize=2,
                   retries=1)
    wait_for(lambda: (hs.map.progress or {}).get("items_done") == 4 and
             any(state == "running" for state, _ in queue._store.map_chunks(hs.id)),
             message="half the items done, a chunk running")
    report = check_queue(queue_dir)  # a running map has no owner, its chunks no count
    assert report.healthy, report.problems
    gate.touch()
    hs.map.wait(timeout=60)
    report = salvage(queue_dir, tmp_path / "copy")
    assert report.copied == 1 and not report.changed
    copy = nbqueue.Queue(tmp_path / "copy", start=False)
    try:
        assert copy.job(hs.id).state == "done"
        assert [copy.job(f"{hs.id}#{i}").result() for i in range(8)] == list(range(8))
    finally:
        copy.close()


def test_options_apply_to_the_whole_map(stopped_queue, tmp_path):
    q, log, lock = stopped_queue, tmp_path / "log", tmp_path / "lock"
    later = q.map(jobs.square, range(3), chunksize="auto", after="in 1h")
    assert later.map.state == "waiting" and later[1].state == "waiting"
    assert "not before" in later.map.reason
    # each chunk holds the resource while it runs: with a capacity of 1, never two at once
    exclusive = q.map(jobs.exclusive_ticks, [log] * 8, [lock] * 8, range(8), [0.05] * 8,
                      chunksize=2, resources=["db"], priority=3)
    q.start()
    assert exclusive.results(timeout=120) == list(range(8))
    lines = log.read_text().splitlines()
    assert not [line for line in lines if line.startswith("clash")]
    assert later.map.state == "waiting"


def test_a_map_and_a_stream_of_short_jobs_share_the_workers(queue):
    stream = queue.map(jobs.square, range(2000), key=None)  # one job per call: short jobs
    hs = queue.map(jobs.square, range(5000), chunksize="auto", key=None)
    more = queue.map(jobs.add, range(1000), range(1000), chunksize=64, key=None, priority=1)
    assert hs.results(timeout=120) == [i * i for i in range(5000)]
    assert more.results(timeout=120) == [2 * i for i in range(1000)]
    assert [h.result(timeout=120) for h in stream] == [i * i for i in range(2000)]
    queue.join(timeout=60)
    assert queue.counts()["done"] == 2002
    assert queue._store._one("SELECT COUNT(*) FROM nbq_job WHERE kind = 'chunk'") == 0
