"""Collecting results: ``q.gather``, ``nbqueue.as_completed`` and the cheap ``h.result()``.

Real queues and real workers. What the store is asked is seen through SQLite's own
statement trace on the reading thread's connection; the dispatcher's hand-over at commit
through a ticket opened on its ``waiters``; waiting across processes with a second
interpreter that runs the dispatcher (or that waits for this one's jobs).
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jobs
import pytest
from conftest import start_python, wait_for

import nbqueue
from nbqueue import JobCancelled, JobFailed, NoSuchJob
from nbqueue import waiters as waiters_module
from nbqueue.job import Outcome, RemoteError
from nbqueue.waiters import AHEAD_FOR, Waiters


@contextmanager
def job_reads(q: nbqueue.Queue) -> Iterator[list[str]]:
    """The statements this thread runs on the store that read the jobs table."""
    statements: list[str] = []
    con = q._store.cache.connection  # this thread's connection (the store writes: it reads there)
    con.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        con.set_trace_callback(None)
        statements[:] = [s for s in statements if "FROM nbq_job" in s]


def _same_error(a: BaseException, b: BaseException) -> bool:
    return type(a) is type(b) and str(a) == str(b)


def _raised(h: nbqueue.Job) -> BaseException:
    try:
        h.result()
    except Exception as exc:  # noqa: BLE001 - whatever result() raises
        return exc
    raise AssertionError(f"{h} did not fail")


# -- gather ----------------------------------------------------------------------------------


def test_gather_returns_results_in_the_handles_order(queue, tmp_path):
    a_gate, b_gate = tmp_path / "a", tmp_path / "b"
    a = queue.submit(jobs.wait_for_file, str(a_gate), "a", key=None)
    b = queue.submit(jobs.wait_for_file, str(b_gate), "b", key=None)
    b_gate.touch()
    b.wait(timeout=120)  # b ends first
    a_gate.touch()
    quick = queue.map(jobs.square, range(6), key=None)
    assert queue.gather([a, b] + quick, timeout=120) == ["a", "b"] + [i * i for i in range(6)]
    # any iterable: a generator, a job given twice, none
    assert queue.gather((h for h in quick[:3]), timeout=60) == [0, 1, 4]
    assert queue.gather([quick[2], quick[1], quick[2]]) == [4, 1, 4]
    assert queue.gather([]) == []


def test_gather_waits_for_jobs_that_end_meanwhile(queue, tmp_path):
    gate = tmp_path / "gate"
    hs = queue.map(jobs.wait_for_file, [str(gate)] * 3, ["a", "b", "c"], key=None)
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(queue.gather(hs, timeout=120)))
    thread.start()
    gate.touch()
    thread.join(150)
    assert result == [["a", "b", "c"]]


def test_return_exceptions_puts_each_failure_in_its_place(queue):
    ok = queue.submit(jobs.add, 1, 2, key=None)
    boom = queue.submit(jobs.boom, "bad", key=None)
    later = queue.submit(jobs.noop, after="in 1h", key=None)
    later.cancel()
    dependent = queue.submit(jobs.add, boom, 1, key=None)  # cancelled: its need fails
    gate = queue.review("Check it", key=None)
    queue.reject(gate, comment="no")
    hs = [ok, boom, later, dependent, gate, ok]
    out = queue.gather(hs, return_exceptions=True, timeout=120)
    assert out[0] == 3 and out[5] == 3
    assert isinstance(out[1], JobFailed) and not isinstance(out[1], JobCancelled)
    assert (out[1].exc_type, out[1].exc_value, out[1].job_id) == ("ValueError", "bad", boom.id)
    for i in (2, 3, 4):
        assert isinstance(out[i], JobCancelled), out[i]
    assert f"needs job {boom.id}, which ended failed" in str(out[3])
    assert "rejected" in str(out[4])
    # the very exception h.result() raises
    for i in (1, 2, 3, 4):
        assert _same_error(out[i], _raised(hs[i]))
    # without return_exceptions: the failure is raised
    with pytest.raises(JobFailed) as info:
        queue.gather([ok, boom], timeout=60)
    assert info.value.job_id == boom.id and info.value.exc_type == "ValueError"
    with pytest.raises(JobCancelled):
        queue.gather([ok, later])


def test_gather_of_forgotten_jobs_says_they_were_forgotten(queue):
    hs = queue.map(jobs.square, range(3), key=None)
    assert queue.gather(hs, timeout=60) == [0, 1, 4]
    assert queue.forget(state="done") == 3
    with pytest.raises(NoSuchJob, match="forgotten") as info:
        queue.gather(hs)
    assert hs[0].id in str(info.value)
    out = queue.gather(hs, return_exceptions=True)
    assert all(isinstance(e, NoSuchJob) and "forgotten" in str(e) for e in out)
    assert _same_error(out[1], _raised(hs[1]))


def test_gather_timeout_raises_the_builtin_timeout_and_the_jobs_go_on(stopped_queue):
    q = stopped_queue
    hs = q.map(jobs.square, range(3), key=None)
    with pytest.raises(TimeoutError, match=r"3 jobs have not ended after 0.1s") as info:
        q.gather(hs, timeout=0.1)
    assert hs[0].id in str(info.value)
    with pytest.raises(TimeoutError):  # a wait that ran out is no job's outcome
        q.gather(hs, return_exceptions=True, timeout=0)
    assert [h.state for h in hs] == ["ready"] * 3
    q.start()
    assert q.gather(hs, timeout=120) == [0, 1, 4]


def test_gather_reads_the_jobs_in_bulk(queue):
    hs = queue.map(jobs.square, range(1200), key=None)
    queue.join(timeout=300)
    with job_reads(queue) as reads:
        assert queue.gather(hs) == [i * i for i in range(1200)]
    assert len(reads) == 3  # 500 jobs per query


def test_result_of_an_ended_job_is_one_read(queue):
    h = queue.submit(jobs.square, 7, key=None)
    queue.join(timeout=120)  # the dispatcher committed it before result() is called
    assert h.state == "done"
    with job_reads(queue) as reads:
        assert h.result() == 49
    assert len(reads) == 1
    f = queue.submit(jobs.boom, key=None)
    queue.join(timeout=120)
    with job_reads(queue) as reads:
        with pytest.raises(JobFailed):
            f.result()
    assert len(reads) == 1


def test_the_dispatcher_hands_outcomes_to_waiters_at_commit(queue, tmp_path):
    gate = tmp_path / "gate"
    ok = queue.submit(jobs.wait_for_file, str(gate), {"v": 1}, key=None)
    bad = queue.submit(jobs.boom, key=None)
    event = threading.Event()
    waiters = queue.dispatcher.waiters
    ticket, _ = waiters.open([ok.id, bad.id], event, each=True)
    try:
        gate.touch()
        handed: dict[str, bytes | None] = {}
        touched: set[str] = set()
        while ok.id not in handed or bad.id not in touched:
            assert event.wait(120), "the dispatcher told the ticket nothing"
            event.clear()
            more, also = waiters.take(ticket)
            handed.update(more)
            touched |= also
    finally:
        waiters.close(ticket)
    # a done job comes with its result: nothing to read; a failure is only told
    assert pickle.loads(handed[ok.id]) == {"v": 1}
    assert bad.id not in handed
    assert ok.result() == {"v": 1}


def test_waiters_keep_ahead_the_done_jobs_of_a_commit_that_handed_one():
    clock = [1000.0]  # a fake monotonic clock, stepped below
    waiters = Waiters(clock=lambda: clock[0])
    event = threading.Event()
    one, _ = waiters.open(["a"], event, each=True)
    many, _ = waiters.open(["c", "d"], threading.Event(), each=False)
    blob = pickle.dumps("b's result")
    committed = [Outcome("a", 1, "done", result=pickle.dumps(1)),
                 Outcome("b", 1, "done", result=blob),
                 Outcome("c", 1, "failed", error=RemoteError("ValueError", "x")),
                 Outcome("e", 1, "done", spawned=(None,)),  # type: ignore[arg-type]
                 Outcome("f", 2, "done", result=pickle.dumps(2))]
    waiters.committed(committed, [True, True, True, True, False])
    assert event.is_set()
    assert waiters.take(one) == ({"a": pickle.dumps(1)}, set())
    assert waiters.take(many) == ({}, {"c"})  # a failure is only told, to be read
    # kept ahead: what the store settled as done alone (not a spawner, not fenced out)
    assert waiters.take_ahead("b") == (True, blob)
    assert waiters.take_ahead("b") == (False, None)  # taken once
    assert waiters.take_ahead("e") == (False, None)
    assert waiters.take_ahead("f") == (False, None)
    assert waiters.take_ahead("a")[0]
    # while a reader keeps taking them, the commits that follow are kept ahead too
    waiters.committed([Outcome("d", 1, "done"), Outcome("g", 1, "done")], [True, True])
    assert waiters.take(many) == ({"d": None}, set())
    waiters.close(one)
    waiters.close(many)
    waiters.committed([Outcome("h", 1, "done")], [True])  # no thread waits at this commit
    assert waiters.take_ahead("g") == (True, None)
    assert waiters.take_ahead("h") == (True, None)
    # once nobody took any for AHEAD_FOR, nothing more is kept, and what was is dropped
    waiters.committed([Outcome("i", 1, "done")], [True])
    clock[0] += AHEAD_FOR + 0.1
    waiters.committed([Outcome("j", 1, "done")], [True])
    assert waiters.take_ahead("i") == (False, None)
    assert waiters.take_ahead("j") == (False, None)


def test_what_is_kept_ahead_is_bounded(monkeypatch):
    monkeypatch.setattr(waiters_module, "AHEAD_MAX", 3)
    waiters = Waiters()
    one, _ = waiters.open(["a"], threading.Event(), each=True)
    waiters.committed([Outcome(x, 1, "done") for x in "abcde"], [True] * 5)
    assert [x for x in "abcde" if waiters.take_ahead(x)[0]] == ["c", "d", "e"]  # the newest
    monkeypatch.setattr(waiters_module, "AHEAD_BYTES", 100_000)
    big = b"x" * 30_000
    waiters.committed([Outcome(x, 1, "done", result=big) for x in "fghij"], [True] * 5)
    assert [x for x in "fghij" if waiters.take_ahead(x)[0]] == ["h", "i", "j"]
    waiters.close(one)


def test_forget_drops_what_was_kept_ahead(queue, tmp_path):
    gate = tmp_path / "gate"
    h = queue.submit(jobs.wait_for_file, str(gate), "v", key=None)
    waiters = queue.dispatcher.waiters
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(h.result(timeout=120)))
    thread.start()
    wait_for(lambda: waiters._tickets, message="result() to open its ticket")
    gate.touch()
    thread.join(150)
    assert out == ["v"]
    assert h.id in waiters._ahead  # handed at commit, and kept ahead
    assert queue.forget() == 1
    with pytest.raises(NoSuchJob, match="forgotten"):
        h.result()


def test_result_waits_for_a_job_this_process_runs(queue, tmp_path):
    gate = tmp_path / "gate"
    h = queue.submit(jobs.wait_for_file, str(gate), "late", key=None)
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(h.result(timeout=120)))
    thread.start()
    gate.touch()
    thread.join(150)
    assert out == ["late"]
    assert h.exception() is None


# -- as_completed ----------------------------------------------------------------------------


def test_as_completed_yields_jobs_in_the_order_they_end(queue, tmp_path):
    first = queue.submit(jobs.square, 5, key=None)
    first.result(timeout=60)
    a_gate, b_gate = tmp_path / "a", tmp_path / "b"
    a = queue.submit(jobs.wait_for_file, str(a_gate), "a", key=None)
    b = queue.submit(jobs.wait_for_file, str(b_gate), "b", key=None)
    bad = queue.submit(jobs.boom, after="in 1h", key=None)
    it = nbqueue.as_completed([a, b, first, bad, a], timeout=120)
    assert next(it) == first  # ended already
    b_gate.touch()
    assert next(it) == b
    bad.cancel()
    assert next(it) == bad
    a_gate.touch()
    assert next(it) == a  # once, though given twice
    assert list(it) == []
    assert [h.result() for h in (a, b)] == ["a", "b"]


def test_as_completed_timeout_raises_builtin_timeout_after_yielding_what_ended(queue):
    done = queue.submit(jobs.square, 3, key=None)
    done.result(timeout=60)
    never = queue.submit(jobs.noop, after="in 1h", key=None)
    it = nbqueue.as_completed((h for h in [never, done]), timeout=0.2)
    assert next(it) == done
    with pytest.raises(TimeoutError, match=f"job {never.id} \\(noop\\) is still waiting"):
        next(it)
    assert never.state == "waiting"


def test_as_completed_takes_handles_of_several_queues(queue, tmp_path):
    with nbqueue.Queue(tmp_path / "other", workers=1) as other:
        hs = queue.map(jobs.square, range(3), key=None) + other.map(jobs.add, [1], [1], key=None)
        seen = list(nbqueue.as_completed(hs, timeout=120))
        assert sorted(h.id for h in seen) == sorted(h.id for h in hs)
        assert sorted(h.result() for h in seen) == [0, 1, 2, 4]
        with pytest.raises(nbqueue.InvalidArgument, match="belongs to queue"):
            queue.gather(hs)


# -- across processes ------------------------------------------------------------------------


def _dispatcher_process(path: Path, stop: Path):
    return start_python(f"""
        import jobs, nbqueue
        with nbqueue.Queue({str(path)!r}, workers=2) as q:
            print("serving", flush=True)
            jobs.wait_for_file({str(stop)!r}, timeout=300)
    """)


def test_gather_jobs_another_process_runs(stopped_queue, queue_dir, tmp_path):
    q = stopped_queue  # no dispatcher in this process
    gate, stop = tmp_path / "gate", tmp_path / "stop"
    quick = q.map(jobs.square, range(20), key=None)
    slow = q.map(jobs.wait_for_file, [str(gate)] * 2, ["x", "y"], key=None)
    bad = q.submit(jobs.boom, key=None)
    child = _dispatcher_process(queue_dir, stop)
    try:
        assert child.stdout.readline().strip() == "serving"
        assert q.gather(quick, timeout=120) == [i * i for i in range(20)]
        gate.touch()
        out = q.gather(slow + [bad], return_exceptions=True, timeout=120)
        assert out[:2] == ["x", "y"] and isinstance(out[2], JobFailed)
        assert sorted(h.id for h in nbqueue.as_completed(slow, timeout=60)) == sorted(
            h.id for h in slow)
    finally:
        stop.touch()
        child.wait(120)
    assert child.returncode == 0, child.stderr.read()


def test_another_process_gathers_jobs_this_process_runs(queue, queue_dir, tmp_path):
    gate = tmp_path / "gate"
    hs = queue.map(jobs.wait_for_file, [str(gate)] * 3, [1, 2, 3], key=None)
    child = start_python(f"""
        import json, nbqueue
        q = nbqueue.Queue({str(queue_dir)!r}, start=False)
        hs = [q.job(i) for i in {[h.id for h in hs]!r}]
        print("gathering", flush=True)
        print(json.dumps(q.gather(hs, timeout=120)), flush=True)
        print(json.dumps([h.result() for h in hs]), flush=True)
    """)
    try:
        assert child.stdout.readline().strip() == "gathering"
        gate.touch()
        out, err = child.communicate(timeout=150)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [[1, 2, 3], [1, 2, 3]]


# -- items of chunked maps ---------------------------------------------------------------------


def test_gather_and_as_completed_take_items_of_a_chunked_map(queue):
    """Item handles mix with job handles: results in order, failures in place, and each
    handle yielded once by as_completed; the dispatcher's commit of a chunk wakes the wait."""
    items = queue.map(jobs.fails_on, range(40), [(7, 30)] * 40, chunksize=5)
    plain = queue.submit(jobs.square, 6, key=None)
    mixed = [items[3], plain, *items]
    got = queue.gather(mixed, return_exceptions=True, timeout=120)
    assert got[0] == 30 and got[1] == 36
    for i, value in enumerate(got[2:]):
        if i in (7, 30):
            assert isinstance(value, JobFailed) and f"bad item {i}" in str(value)
            assert _same_error(value, _raised(items[i]))
        else:
            assert value == i * 10
    with pytest.raises(JobFailed, match="bad item 7"):
        queue.gather(items, timeout=60)
    seen = [h.id for h in nbqueue.as_completed([*items, plain, items[0]], timeout=60)]
    assert sorted(seen) == sorted({h.id for h in items} | {plain.id})


def test_an_item_result_waits_for_its_chunk(queue, tmp_path):
    flag = tmp_path / "go"
    items = queue.map(jobs.wait_for_file, [str(flag)] * 4, ["v"] * 4, chunksize=2)
    with pytest.raises(TimeoutError):
        items[3].result(timeout=0.5)
    threading.Timer(0.5, flag.touch).start()
    assert items[3].result(timeout=120) == "v"
    assert queue.gather(items, timeout=60) == ["v"] * 4


def test_a_reader_that_caught_up_waits_for_its_job_among_those_kept_ahead():
    waiters = Waiters()
    one, _ = waiters.open(["a"], threading.Event(), each=True)
    waiters.committed([Outcome("a", 1, "done")], [True])  # a reader took one: keep ahead
    waiters.close(one)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(waiters.wait_ahead("c", 3600)))
    reader.start()
    wait_for(lambda: waiters._streaming, message="the reader to wait")
    waiters.committed([Outcome("b", 1, "done"), Outcome("c", 1, "done", result=b"r")],
                      [True, True])
    reader.join(60)
    assert got == [(True, b"r")]
    # a job of those commits that did not end done is named at once: the reader reads it
    waiters.committed([Outcome("d", 1, "failed", error=RemoteError("ValueError", "x")),
                       Outcome("e", 1, "done", result=b"x" * 40_000)], [True, True])
    assert waiters.wait_ahead("d", 3600) == (False, None)  # (would wait an hour otherwise)
    assert waiters.wait_ahead("e", 3600) == (False, None)  # too big to keep: read
    assert waiters.take_ahead("b") == (True, None)
    # the dispatcher stopped: a waiting reader goes on to read the store
    reader = threading.Thread(target=lambda: got.append(waiters.wait_ahead("f", 3600)))
    reader.start()
    wait_for(lambda: waiters._streaming, message="the reader to wait")
    waiters.wake_all()
    reader.join(60)
    assert got[-1] == (False, None) and not reader.is_alive()
    assert waiters.wait_ahead("g", 3600) == (False, None)  # nothing kept any more: at once
