"""Resources: exclusive use, capacity, availability, across processes and crashes.

Jobs log their own start and end times (``jobs.span``); overlap is read from those
logs. Where a test needs jobs to run *at the same time*, they meet in a directory
(``span(..., group=...)``) instead of relying on timing.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import time
from pathlib import Path
from typing import Any

import jobs
from conftest import start_python, wait_for

import nbqueue
from nbqueue.job import Outcome
from nbqueue.store import Owner
from nbqueue.times import format_local


def spans(log: Path, prefix: str = "") -> list[tuple[str, float, float, int]]:
    """(value, start, end, dispatcher pid) of every finished run logged by jobs.span."""
    opened: dict[tuple[str, str], tuple[float, int]] = {}
    out = []
    for line in log.read_text().splitlines():
        kind, value, pid, ppid, at = line.split()
        if not value.startswith(prefix):
            continue
        if kind == "start":
            opened[(value, pid)] = (float(at), int(ppid))
        else:
            start, dispatcher = opened.pop((value, pid))
            out.append((value, start, float(at), dispatcher))
    return sorted(out, key=lambda s: s[1])


def peak(intervals: list[tuple[str, float, float, int]]) -> int:
    """The largest number of intervals open at one moment."""
    events = sorted([(s, 1) for _, s, _, _ in intervals] + [(e, -1) for _, _, e, _ in intervals])
    level = best = 0
    for _, delta in events:  # at equal times an end (-1) sorts before a start
        level += delta
        best = max(best, level)
    return best


def holders(q: nbqueue.Queue, name: str) -> list[str]:
    """Ids of a resource's holders (an undeclared resource nobody holds is not listed)."""
    return [h["job"] for h in q.resources().get(name, {"holders": []})["holders"]]


def assert_no_overlap(intervals: list[tuple[str, float, float, int]]) -> None:
    for before, after in zip(intervals, intervals[1:], strict=False):
        assert before[2] <= after[1], f"{before[0]} and {after[0]} overlap"


def test_exclusive_jobs_never_overlap_while_free_jobs_run_in_parallel(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with nbqueue.Queue(tmp_path / "q", workers=4) as q:
        db = q.map(jobs.span, [log] * 12, [f"db{i}" for i in range(12)], [0.05] * 12,
                   resources=["db"], key=None)
        free = [q.submit(jobs.span, log, f"free{i}", 0.1, group=str(tmp_path / "meet"),
                         key=None) for i in range(2)]
        assert [h.result(timeout=120) for h in db] == [f"db{i}" for i in range(12)]
        assert [h.result(timeout=120) for h in free] == ["free0", "free1"]
    db_spans = spans(log, "db")
    assert sorted(v for v, *_ in db_spans) == sorted(f"db{i}" for i in range(12))  # each once
    assert_no_overlap(db_spans)
    assert peak(spans(log, "free")) == 2
    assert peak(spans(log)) >= 2  # the workers did run side by side


def test_capacity_two_allows_exactly_two_holders(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with nbqueue.Queue(tmp_path / "q", workers=4) as q:
        q.set_resource("gpu", capacity=2)
        # the first two meet (so two at once is observed); the rest just take their turn
        handles = [q.submit(jobs.span, log, f"gpu{i}", 0.05, group=str(tmp_path / "meet"),
                            resources={"gpu": 1}, key=None) for i in range(2)]
        handles += [q.submit(jobs.span, log, f"gpu{i}", 0.1, resources={"gpu": 1}, key=None)
                    for i in range(2, 9)]
        assert [h.result(timeout=120) for h in handles] == [f"gpu{i}" for i in range(9)]
        assert q.resources()["gpu"] == {"capacity": 2, "available": True, "holders": [],
                                        "waiting": 0, "rate": None, "next_start": None}
    assert len(spans(log)) == 9
    assert peak(spans(log)) == 2


def test_two_processes_share_one_exclusive_resource(tmp_path: Path) -> None:
    """Two processes with one worker each take turns on ``db``, by construction: after
    ``db{k}`` a higher-priority job ``free{k}`` becomes ready in the same commit, so the
    process that ran ``db{k}`` takes it, and it only ends once ``db{k+1}`` has started,
    which therefore runs in the other process (which had parked it while ``db{k}`` held db).
    """
    path, log, n = tmp_path / "q", tmp_path / "log", 8
    with nbqueue.Queue(path, workers=1, start=False) as q:
        db = [q.submit(jobs.span, log, f"db{k}", 0.05, resources=["db"], key=None,
                       group=str(tmp_path / f"turn{k - 1}") if k else None) for k in range(n)]
        free = [q.submit(jobs.span, log, f"free{k}", 0.0, needs=[db[k]], priority=1, key=None,
                         group=str(tmp_path / f"turn{k}") if k < n - 1 else None)
                for k in range(n)]
        code = f"""
            import os, time
            from pathlib import Path
            import nbqueue
            q = nbqueue.Queue({str(path)!r}, workers=1, start=False)
            Path({str(tmp_path)!r}, f"ready-{{os.getpid()}}").touch()
            deadline = time.monotonic() + 120
            while not Path({str(tmp_path / "go")!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            q.start()
            for h in q.jobs():
                h.wait(timeout=120)
            q.stop()
        """
        procs = [start_python(code, cwd=tmp_path) for _ in range(2)]
        try:
            wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 2, timeout=120,
                     message="both processes opening the queue")
            (tmp_path / "go").touch()
            for proc in procs:
                _, err = proc.communicate(timeout=180)
                assert proc.returncode == 0, err
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        assert [h.result() for h in db + free] == [f"db{k}" for k in range(n)] + [
            f"free{k}" for k in range(n)]
    db_spans = spans(log, "db")
    assert [v for v, *_ in db_spans] == [f"db{k}" for k in range(n)]
    assert_no_overlap(db_spans)
    runners = [d for *_, d in db_spans]
    assert set(runners) == {p.pid for p in procs}
    assert all(a != b for a, b in zip(runners, runners[1:], strict=False))  # turns alternate


def test_unavailable_resource_holds_its_jobs_until_available(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        running = q.submit(jobs.wait_for_file, flag, "ran", resources=["db"], key=None)
        wait_for(lambda: running.state == "running", message="the db job starting")
        queued = q.submit(jobs.square, 3, resources=["db"], key=None)
        wait_for(lambda: queued.state == "waiting", message="the second db job parking")
        q.set_resource("db", available=False)
        assert queued.reason == "resource db is unavailable"
        flag.touch()
        assert running.result(timeout=60) == "ran"  # a running job finishes
        blocked = q.submit(jobs.square, 4, resources=["db"], key=None)
        free = q.submit(jobs.square, 5, key=None)
        assert free.result(timeout=60) == 25  # claimed after `blocked`, so that one parked
        for h in (queued, blocked):
            assert (h.state, h.reason) == ("waiting", "resource db is unavailable")
        assert q.resources()["db"] == {"capacity": 1, "available": False, "holders": [],
                                       "waiting": 2, "rate": None, "next_start": None}
        q.set_resource("db", available=True)
        assert queued.result(timeout=60) == 9
        assert blocked.result(timeout=60) == 16
        assert q.resources()["db"]["available"] is True


def test_holders_reasons_and_no_head_of_line_blocking(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        before = time.time()
        holder = q.submit(jobs.wait_for_file, flag, "held", resources=["db"], key=None)
        wait_for(lambda: holder.state == "running", message="the holder starting")
        after = time.time()
        # the waiters come first (higher priority) yet must not hold back the free job
        waiters = [q.submit(jobs.square, i, resources=["db"], priority=5, key=None)
                   for i in range(3)]
        free = q.submit(jobs.square, 7, key=None)
        assert free.result(timeout=60) == 49
        assert holder.state == "running"
        for w in waiters:
            assert w.state == "waiting"
            assert re.fullmatch(rf"resource db held by job {holder.id} since \d\d:\d\d",
                                w.reason), w.reason
        db = q.resources()["db"]
        assert (db["capacity"], db["available"], db["waiting"]) == (1, True, 3)
        [entry] = db["holders"]
        assert (entry["job"], entry["units"]) == (holder.id, 1)
        # the dispatcher's clock was read when its claim began: since may precede `before`
        assert before - 60 < entry["since"] <= after
        since = format_local(entry["since"])
        assert all(w.reason.endswith(f"since {since}") for w in waiters)
        flag.touch()
        assert [w.result(timeout=60) for w in waiters] == [0, 1, 4]
        assert holders(q, "db") == []


def test_a_job_wanting_two_resources_does_not_starve_the_next_waiter(tmp_path: Path) -> None:
    db_flag, gpu_flag = tmp_path / "db", tmp_path / "gpu"
    with nbqueue.Queue(tmp_path / "q", workers=3) as q:
        gpu = q.submit(jobs.wait_for_file, gpu_flag, "gpu", resources=["gpu"], key=None)
        db = q.submit(jobs.wait_for_file, db_flag, "db", resources=["db"], key=None)
        wait_for(lambda: gpu.state == db.state == "running", message="both holders starting")
        both = q.submit(jobs.square, 2, resources=["db", "gpu"], key=None)
        only_db = q.submit(jobs.square, 3, resources=["db"], key=None)
        wait_for(lambda: both.state == only_db.state == "waiting", message="waiters parking")
        db_flag.touch()
        # db is free: the job woken for it cannot run (gpu is busy) and must pass the turn on
        assert only_db.result(timeout=60) == 9
        assert gpu.state == "running"
        assert both.state == "waiting" and both.reason.startswith("resource gpu held by job")
        gpu_flag.touch()
        assert both.result(timeout=60) == 4


def test_cancelling_a_woken_waiter_wakes_the_next_one(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1, start=False) as q:
        holder, first, second = (q.submit(jobs.square, i, resources=["db"], key=None)
                                 for i in range(3))
        owner = str(Owner.current())
        [claimed] = q._store.claim(owner, 3, lease=30)
        assert claimed.id == holder.id
        assert first.state == second.state == "waiting"
        q._store.complete(owner, [Outcome(holder.id, claimed.claim, "done",
                                         result=pickle.dumps(0))])
        assert (first.state, second.state) == ("ready", "waiting")  # first woken
        first.cancel()
        assert second.state == "ready"
        assert holders(q, "db") == []


def _gpu_of_three(q: nbqueue.Queue, big_priority: int) -> tuple[Any, ...]:
    """Capacity 3: ``pair`` holds 2 units and ``single`` 1; ``big`` (2 units, submitted
    first) and ``small`` (1 unit, priority 0) wait. Returns a way to end a holder too."""
    q.set_resource("gpu", capacity=3)
    owner = str(Owner.current())
    pair = q.submit(jobs.square, 1, resources={"gpu": 2}, key=None)
    single = q.submit(jobs.square, 2, resources={"gpu": 1}, key=None)
    held = {c.id: c for c in q._store.claim(owner, 2, lease=30)}
    assert set(held) == {pair.id, single.id}
    big = q.submit(jobs.square, 3, resources={"gpu": 2}, priority=big_priority, key=None)
    small = q.submit(jobs.square, 4, resources={"gpu": 1}, key=None)
    assert q._store.claim(owner, 2, lease=30) == []
    assert big.state == small.state == "waiting"

    def claim() -> list[str]:
        claimed = q._store.claim(owner, 2, lease=30)
        held.update((c.id, c) for c in claimed)
        return [c.id for c in claimed]

    def end(job: nbqueue.Job) -> None:
        q._store.complete(owner, [Outcome(job.id, held[job.id].claim, "done",
                                         result=pickle.dumps(0))])

    return pair, single, big, small, claim, end


def test_a_waiter_too_big_for_the_free_units_lets_a_smaller_one_use_them(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1, start=False) as q:
        pair, single, big, small, claim, end = _gpu_of_three(q, big_priority=0)
        end(single)  # one unit free: too few for big, enough for small behind it
        assert (big.state, small.state) == ("waiting", "ready")
        assert big.reason.startswith(f"resource gpu held by job {pair.id}")
        assert claim() == [small.id]
        end(pair)  # two free (small holds one): big fits now
        assert big.state == "ready"
        assert claim() == [big.id]
        assert sorted(h["units"] for h in q.resources()["gpu"]["holders"]) == [1, 2]


def test_a_waiter_of_higher_priority_keeps_the_units_it_waits_for(tmp_path: Path) -> None:
    """Priority is precedence at a resource: a lower-priority job, waiting or new, does
    not take units a higher-priority waiter is waiting for."""
    with nbqueue.Queue(tmp_path / "q", workers=1, start=False) as q:
        pair, single, big, small, claim, end = _gpu_of_three(q, big_priority=5)
        end(single)
        assert (big.state, small.state) == ("waiting", "waiting")
        assert small.reason == f"resource gpu kept for job {big.id}, which has a higher priority"
        late = q.submit(jobs.square, 5, resources={"gpu": 1}, key=None)
        assert claim() == []
        assert late.state == "waiting" and late.reason == small.reason
        end(pair)  # all three free: big first, then one small one in the unit left
        assert (big.state, small.state, late.state) == ("ready", "ready", "waiting")
        assert claim() == [big.id, small.id]
        assert re.fullmatch(rf"resource gpu held by job ({big.id}|{small.id}) since [\d:]+",
                            late.reason), late.reason


def test_a_waiters_reason_names_the_holder_of_now(tmp_path: Path) -> None:
    """The reason was written when the waiter parked; read later, it names the resource's
    oldest holder at the time of reading, not one that has given it back."""
    with nbqueue.Queue(tmp_path / "q", workers=1, start=False) as q:
        owner = str(Owner.current())
        first, second, third = (q.submit(jobs.square, i, resources=["db"], key=None)
                                for i in range(3))
        [claimed] = q._store.claim(owner, 3, lease=30)
        assert third.reason.startswith(f"resource db held by job {first.id} since ")
        q._store.complete(owner, [Outcome(first.id, claimed.claim, "done", result=pickle.dumps(0))])
        [claimed] = q._store.claim(owner, 3, lease=30)
        assert claimed.id == second.id
        assert third.state == "waiting"
        assert third.reason.startswith(f"resource db held by job {second.id} since ")
        assert [r.reason for r in q.records(state="waiting")] == [third.reason]


def test_sigkill_of_a_dispatcher_frees_its_resource_and_the_job_reruns(tmp_path: Path) -> None:
    path, counter = tmp_path / "q", tmp_path / "runs"
    proc = start_python(f"""
        import time
        import jobs, nbqueue
        q = nbqueue.Queue({str(path)!r}, workers=1)
        q.submit(jobs.slow_first, {str(counter)!r}, 600, resources=["db"], key="held")
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: counter.exists() and counter.read_text(), timeout=120,
                 message="the job starting in the child process")
        with nbqueue.Queue(path, workers=1, start=False) as watcher:
            job_id = watcher.job("held").id
            assert holders(watcher, "db") == [job_id]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    with nbqueue.Queue(path, workers=1, start=False) as q:
        h = q.job("held")
        # opened to read, the queue recovers at its first write (here asked for at once)
        q._store.recover()
        assert holders(q, "db") == []
        assert h.state == "ready"
        assert h.reason == "its dispatcher's process died while attempt 1 ran; attempt 2 comes next"
        q.start()
        assert h.result(timeout=60) == 2
    assert len(counter.read_text().splitlines()) == 2
