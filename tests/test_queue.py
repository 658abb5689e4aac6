"""The queue API on a real directory with real loky workers: submit, map, needs,
priorities, retries, timeouts, dead workers, cancel, keys, logs, progress, spawn."""

from __future__ import annotations

import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path

import jobs
import pytest
from conftest import pid_alive, run_python, wait_for

import nbqueue
from nbqueue.dispatcher import Dispatcher

# -- submit, result, failure ----------------------------------------------------------------


def test_submit_and_result(queue):
    h = queue.submit(jobs.add, 2, 3)
    assert h.result(timeout=60) == 5
    assert h.state == "done"
    assert h.done()
    assert h.exception() is None
    assert h.reason == ""
    assert h.name == "add"
    assert h.key.startswith("auto:")
    assert h.record().attempt == 1


def test_keyword_arguments_go_to_the_function(queue):
    h = queue.submit(jobs.sleepy, 0, value="kw", name="labelled")
    assert h.result(timeout=60) == "kw"
    assert h.name == "labelled"


def test_exception_is_data(queue):
    h = queue.submit(jobs.boom, "bad input")
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=60)
    err = info.value
    assert not isinstance(err, nbqueue.JobCancelled)
    assert err.exc_type == "ValueError"
    assert err.exc_value == "bad input"
    assert "in boom" in err.traceback
    assert err.job_id == h.id
    assert h.state == "failed"
    assert h.done()
    assert "ValueError" in h.reason
    exc = h.exception()
    assert isinstance(exc, nbqueue.JobFailed) and exc.exc_type == "ValueError"


def test_result_timeout_raises_builtin_timeout(stopped_queue, tmp_path):
    h = stopped_queue.submit(jobs.noop)
    with pytest.raises(TimeoutError):
        h.result(timeout=0.1)
    assert h.state == "ready"


def test_with_closes_the_queue_and_a_closed_queue_reopens_lazily(queue_dir):
    with nbqueue.Queue(queue_dir, workers=1) as q:
        h = q.submit(jobs.square, 7)
        assert h.result(timeout=60) == 49
        reading = q._store._reader.connection()
    assert not q.dispatcher.alive
    with pytest.raises(sqlite3.ProgrammingError):  # the reader's connection was closed
        reading.execute("SELECT 1")
    assert [j.state for j in q.jobs()] == ["done"]  # reads open the files again
    assert q.submit(jobs.square, 8).state == "ready"  # and so do writes
    q.close()


def test_the_public_read_api(stopped_queue):
    q = stopped_queue
    before = q.changes()
    a = q.submit(jobs.square, 2, name="first")
    gate = q.review("Check it", "look", needs=[a])
    assert q.changes() > before
    assert q.counts()["ready"] == 1 and q.counts()["waiting"] == 1
    assert q.find("first") == a and q.find(a.id[:6]) == a and q.find(a.key) == a
    with pytest.raises(nbqueue.errors.NoSuchJob):
        q.find("no-such-job")
    assert [r.id for r in q.records(state="waiting", limit=5)] == [gate.id]
    assert gate.payload["text/plain"] == "look" and a.payload == {}
    assert a.details().record.id == a.id
    page = q.tree().top_jobs(offset=0, limit=10)
    assert {r.id for r in page.records} == {a.id, gate.id}
    assert q.tree().names_of([a.id, "gone"]) == {a.id: "first"}
    assert q.dispatchers() == []  # started none


def test_map_zips_like_map(queue):
    hs = queue.map(jobs.add, [1, 2, 3], [10, 20])
    assert len(hs) == 2
    assert [h.result(timeout=60) for h in hs] == [11, 22]
    hs = queue.map(jobs.square, range(5), priority=3)
    assert [h.result(timeout=60) for h in hs] == [0, 1, 4, 9, 16]
    assert {h.record().priority for h in hs} == {3}


def test_map_is_one_transaction(stopped_queue):
    before = stopped_queue.changes()
    stopped_queue.map(jobs.square, range(20))
    assert stopped_queue.changes() == before + 1
    assert len(stopped_queue.jobs()) == 20


def test_a_map_takes_consecutive_ids_from_a_random_start(stopped_queue):
    """One batch's rows sit side by side in the id index (see ``new_ids``); two batches
    start at unrelated places."""
    first = [int(h.id, 16) for h in stopped_queue.map(jobs.square, range(300), key=None)]
    second = [int(h.id, 16) for h in stopped_queue.map(jobs.square, range(300), key=None)]
    for ids in (first, second):
        assert ids == list(range(ids[0], ids[0] + 300))
    assert abs(first[0] - second[0]) > 2**32
    assert all(len(h.id) == 16 for h in stopped_queue.jobs())


# -- needs ------------------------------------------------------------------------------------


def test_handle_argument_is_a_need_and_is_replaced_by_its_result(stopped_queue):
    q = stopped_queue
    a = q.submit(jobs.square, 3)
    b = q.submit(jobs.add, a, 1)
    c = q.submit(jobs.add, a, b)
    assert b.state == "waiting"
    assert a.id in b.reason
    q.start()
    assert b.result(timeout=60) == 10
    assert c.result(timeout=60) == 19


def test_needs_option_orders_jobs(stopped_queue, tmp_path):
    q = stopped_queue
    log = tmp_path / "log"
    a = q.submit(jobs.record, log, "a", 0.2)
    b = q.submit(jobs.record, log, "b", needs=[a])
    c = q.submit(jobs.record, log, "c", needs=a.id)  # an id works too
    assert (b.state, c.state) == ("waiting", "waiting")
    assert b.reason == f"needs job {a.id}"
    q.start()
    assert b.result(timeout=60) == "b" and c.result(timeout=60) == "c"
    events = [line.split()[:2] for line in log.read_text().splitlines()]
    assert events.index(["end", "a"]) < events.index(["start", "b"])
    assert events.index(["end", "a"]) < events.index(["start", "c"])


def test_failed_need_cancels_dependents_transitively(stopped_queue):
    q = stopped_queue
    a = q.submit(jobs.boom)
    b = q.submit(jobs.add, a, 1)
    c = q.submit(jobs.noop, needs=[b])
    unrelated = q.submit(jobs.square, 4)
    q.start()
    with pytest.raises(nbqueue.JobFailed):
        a.result(timeout=60)
    assert unrelated.result(timeout=60) == 16
    b.wait(timeout=60)
    c.wait(timeout=60)
    assert (b.state, c.state) == ("cancelled", "cancelled")
    assert b.reason == f"needs job {a.id}, which ended failed"
    assert c.reason == f"needs job {b.id}, which ended cancelled"
    with pytest.raises(nbqueue.JobCancelled):
        c.result()
    # a job submitted later with an ended-failed need is cancelled at once
    d = q.submit(jobs.noop, needs=[a], key=None)
    assert d.state == "cancelled"
    assert a.id in d.reason


def test_priority_order(queue_dir, tmp_path):
    log = tmp_path / "log"
    q = nbqueue.Queue(queue_dir, workers=1, start=False)
    try:
        plan = [(0, "p0-first"), (5, "p5-first"), (1, "p1"), (5, "p5-second"), (0, "p0-second"),
                (9, "p9")]
        hs = [q.submit(jobs.record, log, name, priority=p) for p, name in plan]
        q.start()
        for h in hs:
            h.result(timeout=60)
    finally:
        q.stop()
    started = [line.split()[1] for line in log.read_text().splitlines()
               if line.startswith("start")]
    assert started == ["p9", "p5-first", "p5-second", "p1", "p0-first", "p0-second"]


# -- retries --------------------------------------------------------------------------------


def test_retries_until_success(queue, tmp_path):
    counter = tmp_path / "count"
    h = queue.submit(jobs.flaky, counter, 2, retries=3, retry_delay=0.05)
    assert h.result(timeout=60) == 3
    assert h.record().attempt == 3
    assert counter.read_text() == "3"


def test_retries_exhausted_raise_the_last_error(queue, tmp_path):
    counter = tmp_path / "count"
    h = queue.submit(jobs.flaky, counter, 5, retries=1, retry_delay=0.05)
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=60)
    assert info.value.exc_type == "RuntimeError"
    assert info.value.exc_value == "failure 2"
    assert h.record().attempt == 2
    assert counter.read_text() == "2"


def _step_until(d: Dispatcher, h: nbqueue.Job, now: float, state: str) -> None:
    wait_for(lambda: (d.step(now=now), h.state == state)[1], message=f"{h.id} {state}")


def test_retry_backoff_doubles(stopped_queue, tmp_path):
    """Driven with step(now): each retry is scheduled base * 2**(n-1) after the failure."""
    q = stopped_queue
    h = q.submit(jobs.flaky, tmp_path / "count", 2, retries=3, retry_delay=10)
    d = Dispatcher(q._store, workers=1)
    try:
        t0 = time.time()
        _step_until(d, h, t0, "waiting")
        first = h.record()
        assert first.not_before == pytest.approx(t0 + 10)
        assert first.error.exc_value == "failure 1"
        assert first.reason.startswith("retry 1 of 3 after RuntimeError")
        d.step(now=t0 + 9.9)  # not due yet: nothing is claimed
        assert h.state == "waiting" and h.record().attempt == 1
        _step_until(d, h, t0 + 10, "waiting")
        second = h.record()
        assert second.attempt == 2
        assert second.not_before == pytest.approx(t0 + 10 + 20)
        d.step(now=t0 + 29.9)
        assert h.state == "waiting"
        _step_until(d, h, t0 + 30, "done")
        assert h.result() == 3 and h.record().attempt == 3
    finally:
        d.stop()


# -- timeouts, dead workers, cancel -----------------------------------------------------------


def test_timeout_kills_only_that_job(queue, tmp_path):
    gate = tmp_path / "gate"
    slow = queue.submit(jobs.sleepy, 600, timeout=1)
    beside = queue.submit(jobs.wait_for_file, gate, "beside")
    exc = slow.exception(timeout=120)
    assert isinstance(exc, nbqueue.JobFailed)
    assert exc.exc_type == "TimeoutError"
    assert "TimeoutError" in str(exc)
    assert slow.state == "failed"
    assert beside.state == "running"
    gate.touch()
    assert beside.result(timeout=60) == "beside"
    assert queue.submit(jobs.add, 1, 2).result(timeout=60) == 3


def test_worker_that_dies_fails_alone(queue, tmp_path):
    gate = tmp_path / "gate"
    dying = queue.submit(jobs.suicide)
    beside = queue.submit(jobs.wait_for_file, gate, "beside")
    with pytest.raises(nbqueue.JobFailed) as info:
        dying.result(timeout=60)
    assert "worker process died" in info.value.exc_value
    assert dying.state == "failed"
    assert beside.state == "running"
    after = queue.submit(jobs.square, 5)
    assert after.result(timeout=60) == 25
    gate.touch()
    assert beside.result(timeout=60) == "beside"


def test_cancel_running_job_kills_its_worker(queue, tmp_path):
    pid_file, gate, other_gate = tmp_path / "pid", tmp_path / "gate", tmp_path / "gate2"
    victim = queue.submit(jobs.pid_then_wait, pid_file, gate)
    neighbour = queue.submit(jobs.wait_for_file, other_gate, "neighbour")
    wait_for(pid_file.exists, message="the job to start")
    pid = int(pid_file.read_text())
    assert victim.state == "running"
    assert victim.cancel() is True
    victim.wait(timeout=60)
    assert victim.state == "cancelled"
    wait_for(lambda: not pid_alive(pid), message=f"worker {pid} to be killed")
    with pytest.raises(nbqueue.JobCancelled):
        victim.result()
    assert neighbour.state == "running"
    other_gate.touch()
    assert neighbour.result(timeout=60) == "neighbour"
    assert not gate.exists()


def test_cancel_waiting_job(stopped_queue):
    q = stopped_queue
    a = q.submit(jobs.noop)
    b = q.submit(jobs.noop, needs=[a], key=None)
    assert b.cancel() is True
    assert b.state == "cancelled" and b.reason == "cancelled"
    assert a.cancel() is True
    assert a.state == "cancelled"
    with pytest.raises(nbqueue.JobCancelled):
        a.result(timeout=5)
    assert b.cancel() is False  # already ended


def test_retry_runs_a_failed_job_again_under_its_id(queue, tmp_path):
    counter = tmp_path / "count"
    h = queue.submit(jobs.flaky, counter, 1)
    with pytest.raises(nbqueue.JobFailed):
        h.result(timeout=60)
    assert h.retry() is h
    assert h.result(timeout=60) == 2
    assert h.record().attempt == 2
    assert [j.id for j in queue.jobs()] == [h.id]
    with pytest.raises(ValueError):
        h.retry()  # a done job cannot be retried


# -- keys -------------------------------------------------------------------------------------


def test_auto_key_returns_the_same_job(stopped_queue):
    q = stopped_queue
    a = q.submit(jobs.add, 1, 2)
    b = q.submit(jobs.add, 1, 2)
    c = q.submit(jobs.add, 2, 1)
    d = q.submit(jobs.add, 1, 2, priority=4)  # options are not part of the key
    assert a.id == b.id == d.id
    assert c.id != a.id
    assert len(q.jobs()) == 2


def _main_function(source: str, **globals_: object):
    namespace: dict[str, object] = {"__name__": "__main__", **globals_}
    exec(source, namespace)
    return namespace["f"]


def test_editing_a_function_makes_a_new_key(queue):
    f1 = _main_function("def f(x):\n    return x + 1\n")
    f1_again = _main_function("def f(x):\n    return x + 1\n")
    f2 = _main_function("def f(x):\n    return x + 2\n")
    assert f1.__module__ == "__main__"
    h1 = queue.submit(f1, 10)
    assert queue.submit(f1_again, 10).id == h1.id
    h2 = queue.submit(f2, 10)
    assert h2.id != h1.id
    assert (h1.result(timeout=60), h2.result(timeout=60)) == (11, 12)


def test_changing_a_global_the_function_reads_makes_a_new_key(stopped_queue):
    source = "def f(x):\n    return x * FACTOR\n"
    a = stopped_queue.submit(_main_function(source, FACTOR=2), 1)
    b = stopped_queue.submit(_main_function(source, FACTOR=2), 1)
    c = stopped_queue.submit(_main_function(source, FACTOR=3), 1)
    assert a.id == b.id
    assert c.id != a.id


def test_closures_with_other_values_make_new_keys(queue):
    def make_adder(n):
        def adder(x):
            return x + n
        return adder

    h1 = queue.submit(make_adder(1), 1)
    h2 = queue.submit(make_adder(2), 1)
    assert queue.submit(make_adder(1), 1).id == h1.id
    assert h2.id != h1.id
    assert (h1.result(timeout=60), h2.result(timeout=60)) == (2, 3)


def test_key_none_is_always_new(stopped_queue):
    a = stopped_queue.submit(jobs.add, 1, 2, key=None)
    b = stopped_queue.submit(jobs.add, 1, 2, key=None)
    assert a.id != b.id
    assert a.key is None
    assert len(stopped_queue.jobs()) == 2


def test_custom_string_key(stopped_queue):
    a = stopped_queue.submit(jobs.add, 1, 2, key="mine")
    b = stopped_queue.submit(jobs.add, 5, 5, key="mine")
    assert a.id == b.id
    assert a.key == "mine"
    assert stopped_queue.job("mine") == a
    assert len(stopped_queue.jobs()) == 1


def test_resubmitting_the_key_of_a_failed_job_reruns_it(queue, tmp_path):
    counter = tmp_path / "count"
    h = queue.submit(jobs.flaky, counter, 1, key="flaky-once")
    with pytest.raises(nbqueue.JobFailed):
        h.result(timeout=60)
    again = queue.submit(jobs.flaky, counter, 1, key="flaky-once")
    assert again.id == h.id
    assert again.result(timeout=60) == 2
    assert again.record().attempt == 2
    # resubmitting a done job's key changes nothing
    assert queue.submit(jobs.flaky, counter, 1, key="flaky-once").result() == 2
    assert again.record().attempt == 2


# -- finding and forgetting -----------------------------------------------------------------


def test_job_jobs_and_forget(queue):
    a = queue.submit(jobs.add, 1, 1, key="one-plus-one")
    b = queue.submit(jobs.square, 3)
    c = queue.submit(jobs.boom)
    assert a.result(timeout=60) == 2 and b.result(timeout=60) == 9
    c.wait(timeout=60)
    assert queue.job(a.id) == a
    assert queue.job("one-plus-one") == a
    assert queue.job(b.key) == b
    assert [j.id for j in queue.jobs()] == [a.id, b.id, c.id]
    assert [j.id for j in queue.jobs(state="done")] == [a.id, b.id]
    assert [j.id for j in queue.jobs(state="failed")] == [c.id]
    assert [j.id for j in queue.jobs(name="square")] == [b.id]
    assert queue.jobs(state="done", name="boom") == []
    with pytest.raises(ValueError):
        queue.jobs(state="finished")
    with pytest.raises(ValueError):
        queue.forget(state="running")
    assert queue.forget(state="failed") == 1
    assert [j.id for j in queue.jobs()] == [a.id, b.id]
    with pytest.raises(nbqueue.NoSuchJob):
        queue.job(c.id)
    assert queue.forget(older_than=3600) == 0
    assert queue.forget() == 2
    assert queue.jobs() == []
    assert queue.counts()["done"] == 0


def _value_files(queue_dir):
    return sorted(p for p in queue_dir.rglob("*.val"))


def test_a_large_result_is_a_file_synced_before_its_commit(queue, queue_dir, monkeypatch):
    """A result of 32 KiB or more goes to a diskcache value file, which is fsynced with
    the directories leading to it before the commit that names it (diskcache itself
    never syncs it: a power cut could have left a committed job without its result)."""
    synced = set()
    fsync = os.fsync

    def recording(fd):
        synced.add(os.fstat(fd).st_ino)
        return fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    small, large = queue.submit(jobs.sized, 1000), queue.submit(jobs.sized, 200_000, b"y")
    assert small.result(timeout=60) == b"x" * 1000
    assert large.result(timeout=60) == b"y" * 200_000
    [file] = _value_files(queue_dir)
    assert pickle.loads(file.read_bytes()) == b"y" * 200_000  # the result, pickled
    for path in (file, file.parent, file.parent.parent, queue_dir):
        assert path.stat().st_ino in synced, path
    # reopened elsewhere: still there; forgotten: its file goes too
    with nbqueue.Queue(queue_dir, start=False) as other:
        assert other.job(large.id).result(timeout=0) == b"y" * 200_000
    assert queue.forget(state="done") == 2
    assert _value_files(queue_dir) == []


# -- logs, progress -----------------------------------------------------------------------------


def test_logs_are_visible_while_the_job_runs(queue, tmp_path):
    gate = tmp_path / "gate"
    h = queue.submit(jobs.print_then_wait, gate)
    wait_for(lambda: "first line" in h.logs, message="the first line in h.logs")
    assert h.state == "running"
    wait_for(lambda: "to stderr" in h.logs, message="stderr in h.logs")
    assert "last line" not in h.logs
    gate.touch()
    assert h.result(timeout=60) == "printed"
    logs = h.logs
    assert logs.count("first line") == 1
    assert "to stderr" in logs and "last line" in logs


def test_logs_of_a_short_job(queue):
    h = queue.submit(jobs.chatty, 3)
    assert h.result(timeout=60) == 3
    assert h.logs == "line 0\nline 1\nline 2\n"


def test_progress_is_updated_live(queue, tmp_path):
    gate = tmp_path / "gate"
    h = queue.submit(jobs.progress_then_wait, gate)
    wait_for(lambda: h.progress is not None, message="progress to appear")
    assert h.state == "running"
    progress = h.progress
    assert (progress["done"], progress["total"], progress["message"]) == (1, 4, "a quarter")
    gate.touch()
    assert h.result(timeout=60) == "progressed"


# -- spawn --------------------------------------------------------------------------------------


def test_spawned_children_and_parent(queue):
    parent = queue.submit(jobs.spawner, 3)
    ids = parent.result(timeout=60)
    children = parent.children
    assert [c.id for c in children] == ids
    assert [c.result(timeout=60) for c in children] == [0, 1, 4]
    for child in children:
        assert child.parent == parent
    assert parent.parent is None


def test_spawned_children_exist_only_after_the_parent_completes(queue, tmp_path):
    log, gate = tmp_path / "log", tmp_path / "gate"
    parent = queue.submit(jobs.spawn_then_wait, log, gate, 2)
    wait_for(lambda: log.exists() and "spawned parent" in log.read_text(),
             message="the parent to spawn")
    assert parent.state == "running"
    assert parent.children == []
    assert [j.id for j in queue.jobs()] == [parent.id]
    gate.touch()
    ids = parent.result(timeout=60)
    assert [c.id for c in parent.children] == ids
    assert [c.result(timeout=60) for c in parent.children] == ["child0", "child1"]


# -- messages -------------------------------------------------------------------------------------


def test_a_main_function_travels_in_the_message(queue_dir, tmp_path):
    """A function defined at the top of a script that has exited runs in another process."""
    script = f"""
        import nbqueue

        def triple(x):
            return 3 * x

        q = nbqueue.Queue({str(queue_dir)!r}, start=False)
        print(q.submit(triple, 7).id)
    """
    job_id = run_python(script, cwd=tmp_path).stdout.strip()
    q = nbqueue.Queue(queue_dir, workers=1)
    try:
        h = q.job(job_id)
        assert h.name == "triple"
        assert h.result(timeout=60) == 21
    finally:
        q.stop()


def test_python_version_mismatch_fails_that_job_only(stopped_queue):
    q = stopped_queue
    f = _main_function("def f(x):\n    return -x\n")
    bad = q.submit(f, 1)
    good = q.submit(jobs.square, 6)
    con = sqlite3.connect(q.path / "cache.db")
    with con:
        changed = con.execute("UPDATE nbq_fn SET python = '2.7' WHERE by_value = 1").rowcount
    con.close()
    assert changed == 1
    q.start()
    assert good.result(timeout=60) == 36
    with pytest.raises(nbqueue.JobFailed) as info:
        bad.result(timeout=60)
    assert "Python 2.7" in info.value.exc_value
    assert "same versions" in info.value.exc_value
    assert q.submit(jobs.add, 2, 2).result(timeout=60) == 4


def test_submit_from_another_thread_while_running(queue):
    out: list[nbqueue.Job] = []
    t = threading.Thread(target=lambda: out.append(queue.submit(jobs.square, 7)))
    t.start()
    t.join(60)
    assert out[0].result(timeout=60) == 49


def test_queue_path_is_a_directory(queue, queue_dir):
    assert queue.path == Path(queue_dir).absolute()
    assert (queue_dir / "cache.db").is_file()


def test_retry_of_a_dependent_needs_its_input_done_first(queue, tmp_path):
    counter = tmp_path / "count"
    a = queue.submit(jobs.flaky, counter, 1)
    b = queue.submit(jobs.add, a, 1)
    b.wait(timeout=60)
    assert b.state == "cancelled"
    before = queue.changes()
    with pytest.raises(ValueError, match=f"retry job {a.id} first"):
        b.retry()
    assert queue.changes() == before and b.state == "cancelled"
    a.retry()
    assert a.result(timeout=60) == 2
    b.retry()
    assert b.result(timeout=60) == 3


def test_retry_of_a_job_whose_need_failed_does_not_run_it(queue, tmp_path):
    log = tmp_path / "log"
    a = queue.submit(jobs.boom)
    b = queue.submit(jobs.record, log, "b", needs=[a])
    b.wait(timeout=60)
    assert b.state == "cancelled"
    with pytest.raises(ValueError, match=f"needs job {a.id}, which is failed; retry job {a.id}"):
        b.retry()
    queue.join(timeout=60)
    assert b.state == "cancelled"
    assert not log.exists()


def test_each_attempt_has_a_header_in_the_log_and_says_why_it_runs(queue, tmp_path):
    """A retried job keeps every attempt's output, each after a header saying why it ran
    again; its record says so while it runs and once it has ended."""
    h = queue.submit(jobs.flaky_loud, tmp_path / "count", 2, retries=2, retry_delay=0)
    assert h.result(timeout=60) == 3
    record = h.record()
    assert (record.attempt, record.deaths) == (3, 0)
    assert record.why == "attempt 2 failed with RuntimeError"
    assert record.attempt_note == "attempt 3: attempt 2 failed with RuntimeError"
    assert h.logs.splitlines() == [
        "run 1",
        "--- attempt 2: attempt 1 failed with RuntimeError ---",
        "run 2",
        "--- attempt 3: attempt 2 failed with RuntimeError ---",
        "run 3",
    ]


def test_a_retry_by_hand_keeps_the_earlier_output_after_a_header(queue, tmp_path):
    h = queue.submit(jobs.flaky_loud, tmp_path / "count", 1)
    with pytest.raises(nbqueue.JobFailed):
        h.result(timeout=60)
    h.retry()
    assert h.result(timeout=60) == 2
    assert h.record().attempt_note == "attempt 2: run again after attempt 1 ended failed"
    assert h.logs.splitlines() == ["run 1", "--- attempt 2: run again after attempt 1 ended "
                                   "failed ---", "run 2"]
