"""Generator handlers: fan out, wait, reduce; reviews and durable sleeps inside them;
replay, non-determinism, and crashes in the middle of it all.

The handlers live in ``tests/jobs.py`` so that worker processes can import them.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import jobs
import pytest
from conftest import run_python, start_python, wait_for

import nbqueue
from nbqueue.replay import fingerprint_of
from nbqueue.workflow import Call, Review, Sleep


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def starts(log: Path) -> Counter[str]:
    """How many times each value's run started (jobs.span logs one start line per run)."""
    return Counter(line.split()[1] for line in log.read_text().splitlines()
                   if line.startswith("start "))


def descendants(h: nbqueue.Job) -> list[nbqueue.Job]:
    out = []
    for child in h.children:
        out += [child, *descendants(child)]
    return out


def kill(proc) -> None:  # type: ignore[no-untyped-def]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()  # reaped: its pid is gone, so reopening recovers its jobs at once


def test_fan_out_and_reduce(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.fan_out, 20)
    assert h.result(timeout=120) == sum(i * i for i in range(20))
    children = h.children
    assert [c.id for c in children] == [f"{h.id}.0.{i}" for i in range(20)]
    assert [c.result() for c in children] == [i * i for i in range(20)]
    assert all(c.parent == h for c in children)
    assert h.state == "done"


def test_a_second_yield_after_the_first(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.two_steps, 5)
    assert h.result(timeout=120) == 30 + 1000
    assert [c.id for c in h.children] == [f"{h.id}.0.{i}" for i in range(5)] + [f"{h.id}.1.0"]
    assert [c.name for c in h.children] == ["square"] * 5 + ["add"]


def test_nested_generators(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.nested, 3)
    assert h.result(timeout=120) == 15
    tree = descendants(h)
    assert len(tree) == 14
    assert all(j.state == "done" for j in tree)
    assert len(queue.jobs()) == 15


def test_a_failing_child_is_caught_at_the_yield(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.catches, "bad input")
    assert h.result(timeout=120) == ("caught", "ValueError", "bad input")
    [child] = h.children
    assert child.state == "failed"
    assert child.exception().exc_type == "ValueError"


def test_an_uncaught_child_failure_fails_the_parent_with_both_tracebacks(
        queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.uncaught, "broken row")
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=120)
    error = info.value
    [child] = h.children
    assert error.exc_type == "JobFailed"
    assert f"job {child.id}" in error.exc_value and "broken row" in error.exc_value
    text = str(error)
    child_traceback = child.exception().traceback
    assert "raise ValueError(message)" in child_traceback
    assert child_traceback.strip() in text  # the child's remote traceback
    assert "in uncaught" in text  # the parent's own frame at the yield
    assert h.state == "failed" and child.state == "failed"


def test_a_review_in_a_handler_approved_from_another_process(queue: nbqueue.Queue,
                                                              tmp_path: Path) -> None:
    h = queue.submit(jobs.reviewed, "Check the counts")
    wait_for(lambda: queue.reviews(), message="the handler's gate")
    [gate] = queue.reviews()
    assert gate.parent == h and gate.name == "Check the counts"
    assert h.state == "waiting"
    run_python(f"""
        import nbqueue
        with nbqueue.Queue({str(queue.path)!r}, start=False) as q:
            [gate] = q.reviews()
            q.approve(gate, comment="fine by me")
    """, cwd=tmp_path)
    assert h.result(timeout=120) == (True, "fine by me", os_user())


def test_a_rejected_review_gives_the_handler_a_falsy_decision(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.reviewed, "Ship it?")
    wait_for(lambda: queue.reviews(), message="the handler's gate")
    [gate] = queue.reviews()
    queue.reject(gate, comment="not yet")
    assert h.result(timeout=120) == (False, "not yet", os_user())
    assert gate.state == "rejected"


def test_a_yielded_gate_takes_its_name_and_priority(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.reviewed_as, "Check the plot", "plot-check", 7)
    wait_for(lambda: queue.reviews(), message="the handler's gate")
    [gate] = queue.reviews()
    assert (gate.name, gate.record().priority, gate.parent) == ("plot-check", 7, h)
    queue.approve(gate)
    assert h.result(timeout=120) is True


def test_durable_sleep_survives_a_restart(tmp_path: Path) -> None:
    path, marker = tmp_path / "q", tmp_path / "sleeping"
    proc = start_python(f"""
        import time
        from pathlib import Path
        import jobs, nbqueue
        q = nbqueue.Queue({str(path)!r}, workers=1)
        h = q.submit(jobs.sleeps, "in 3s", key="sleeper")
        while not (h.state == "waiting" and h.children):
            time.sleep(0.01)
        Path({str(marker)!r}).touch()
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(marker.exists, timeout=120, message="the handler sleeping in the child")
    finally:
        kill(proc)
    with nbqueue.Queue(path, workers=1, start=False) as q:
        h = q.job("sleeper")
        [timer] = h.children
        assert (h.state, timer.state, timer.name) == ("waiting", "waiting", "sleep")
        assert timer.reason.startswith("not before ")
        not_before = timer.record().not_before
        q.start()
        assert h.result(timeout=60) == "woke"
        assert (timer.state, timer.reason) == ("done", "slept")
        assert h.record().ended >= not_before


def test_now_is_stable_across_replays(queue: nbqueue.Queue, tmp_path: Path) -> None:
    log = tmp_path / "clock"
    h = queue.submit(jobs.clock, log, key=None)
    first, second = h.result(timeout=120)
    seen = log.read_text().splitlines()
    assert len(seen) == 3  # the first run and two replays
    assert set(seen) == {repr(first)}
    assert first <= second


def test_a_waiting_parent_holds_no_worker_and_no_resource(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        h = q.submit(jobs.waits_on, flag, 2, resources=["db"], key=None)
        wait_for(lambda: len(h.children) == 2 and h.children[0].state == "running",
                 message="the first child running in the only worker")
        assert (h.state, h.reason) == ("waiting", "waiting for 2 child jobs (step 0)")
        assert q.resources().get("db", {"holders": []})["holders"] == []
        flag.touch()
        assert h.result(timeout=60) == [0, 1]
        # children needing the resource their parent holds while running: no deadlock
        h = q.submit(jobs.squares_on, 4, "db", resources=["db"], key=None)
        assert h.result(timeout=60) == 0 + 1 + 4 + 9


def test_cancelling_a_waiting_parent_cancels_its_children(tmp_path: Path) -> None:
    flag = tmp_path / "never"
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        h = q.submit(jobs.waits_on, flag, 3, key=None)
        wait_for(lambda: [c.state for c in h.children] == ["running", "running", "ready"],
                 message="two children running, one ready")
        assert h.cancel()
        assert h.state == "cancelled"
        wait_for(lambda: all(c.state == "cancelled" for c in h.children),
                 message="the children being cancelled")
        reasons = [c.reason for c in h.children]
        assert reasons == ["cancelled while running"] * 2 + [
            f"its parent job {h.id} ended cancelled"]
        # the whole tree: a waiting child generator takes its own children with it
        top = q.submit(jobs.waits_below, flag, key=None)
        wait_for(lambda: len(descendants(top)) == 3 and all(
            j.state == "running" for j in descendants(top)[1:]), message="grandchildren running")
        top.cancel()
        wait_for(lambda: all(j.state == "cancelled" for j in descendants(top)),
                 message="the tree being cancelled")
        assert q.counts()["running"] == 0


def test_yielding_something_else_fails_the_parent(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.yields_junk)
    with pytest.raises(nbqueue.JobFailed, match="yield #0 gave int"):
        h.result(timeout=60)


def test_sigkill_in_the_middle_of_a_fan_out(tmp_path: Path) -> None:
    path, log = tmp_path / "q", tmp_path / "log"
    proc = start_python(f"""
        import time
        import jobs, nbqueue
        q = nbqueue.Queue({str(path)!r}, workers=2)
        q.submit(jobs.slow_fan, {str(log)!r}, 12, 0.5, key="fan")
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(lambda: log.exists() and log.read_text().count("end ") >= 4, timeout=120,
                 message="a third of the children done")
    finally:
        kill(proc)
    with nbqueue.Queue(path, workers=2) as q:
        h = q.job("fan")
        assert h.result(timeout=120) == sum(range(12))
        children = h.children
        assert [c.id for c in children] == [f"{h.id}.0.{i}" for i in range(12)]
        assert len(q.jobs()) == 13
    runs = starts(log)
    assert set(runs) == {str(i) for i in range(12)}
    assert sum(runs.values()) - 12 <= 2 * 2  # at most two re-executions per worker


def test_sigkill_while_a_parent_is_replayed(tmp_path: Path) -> None:
    path, log, marker = tmp_path / "q", tmp_path / "log", tmp_path / "between"
    proc = start_python(f"""
        import time
        import jobs, nbqueue
        q = nbqueue.Queue({str(path)!r}, workers=2)
        q.submit(jobs.pause_between, {str(log)!r}, {str(marker)!r}, 3, 0.2, 120, key="twice")
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        wait_for(marker.exists, timeout=120, message="the parent replaying between its yields")
    finally:
        kill(proc)
    with nbqueue.Queue(path, workers=2) as q:
        h = q.job("twice")
        assert h.result(timeout=120) == (0 + 1 + 2) + (100 + 101 + 102)
        record = h.record()
        # its dispatcher's process was killed while it ran: not a death of the job
        assert record.deaths == 0
        assert record.why.startswith("its dispatcher's process died while attempt")
        assert [c.id for c in h.children] == [f"{h.id}.{s}.{i}" for s in (0, 1) for i in range(3)]
        assert len(q.jobs()) == 7
    runs = starts(log)
    assert runs == Counter({str(v): 1 for v in (0, 1, 2, 100, 101, 102)})
    # the first run reached the pause once; after the restart, two more replays passed it
    assert len(marker.read_text().splitlines()) == 3


def test_non_determinism_is_detected_and_names_the_step(queue: nbqueue.Queue,
                                                        tmp_path: Path) -> None:
    source = tmp_path / "n"
    source.write_text("3")
    h = queue.submit(jobs.drifting, str(source), key=None)
    wait_for(lambda: queue.reviews(), message="the handler reaching its second yield")
    assert h.children[0].result() == 9
    source.write_text("4")  # the handler's first yield will differ on the next replay
    queue.approve(queue.reviews()[0])
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=120)
    assert info.value.exc_type == "NonDeterminism"
    assert f"job {h.id}: at yield #0" in info.value.exc_value
    assert "call(square, ...)" in info.value.exc_value
    assert len(h.children) == 2  # nothing new was created


def test_a_cancelled_parent_retried_resumes_with_its_children(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        h = q.submit(jobs.waits_on, flag, 2, key=None)
        wait_for(lambda: len(h.children) == 2, message="the children")
        h.cancel()
        wait_for(lambda: all(c.state == "cancelled" for c in h.children),
                 message="the children being cancelled")
        flag.touch()
        h.retry()
        assert h.result(timeout=60) == [0, 1]
        assert [c.state for c in h.children] == ["done", "done"]  # the same two, run again


def test_a_failed_parent_retried_reruns_the_failed_child(queue: nbqueue.Queue,
                                                         tmp_path: Path) -> None:
    counter = tmp_path / "count"
    h = queue.submit(jobs.flaky_child, str(counter), key=None)
    with pytest.raises(nbqueue.JobFailed, match="failure 1"):
        h.result(timeout=60)
    [child] = h.children
    assert child.state == "failed"
    h.retry()
    assert h.result(timeout=60) == 2
    assert [c.id for c in h.children] == [child.id]
    assert child.state == "done"


def test_a_cancelled_review_in_a_handler_is_asked_again_on_retry(queue: nbqueue.Queue) -> None:
    h = queue.submit(jobs.reviewed, "Second look")
    wait_for(lambda: queue.reviews(), message="the handler's gate")
    [gate] = queue.reviews()
    h.cancel()
    assert (gate.state, gate.reason) == ("cancelled", f"its parent job {h.id} ended cancelled")
    h.retry()
    assert (h.state, gate.state) == ("waiting", "review")
    queue.approve(gate, comment="second time")
    assert h.result(timeout=60) == (True, "second time", os_user())


def test_a_yield_fingerprints_alike_in_every_process(tmp_path: Path) -> None:
    """A replay may run in another worker process, whose string hashes (and so the
    iteration order of sets) differ: the journal's fingerprint must not."""
    code = ("from nbqueue.replay import fingerprint_of\nfrom nbqueue.workflow import Call\n"
            "print(fingerprint_of([Call(sorted, ({'ab', 'cd', 'ef', 'gh', 'ij'},), "
            "{'key': str})]))")
    prints = {run_python(code, cwd=tmp_path, env={"PYTHONHASHSEED": str(seed)}).stdout
              for seed in range(6)}
    assert len(prints) == 1 and len(prints.pop().strip()) > 0


# What nbqueue stored for these yields before its records were typed, and must go on
# storing: a journal row keeps the fingerprint of its yield, and each replay compares
# its own with it (a change would fail every generator of an existing queue as
# NonDeterminism).
FINGERPRINTS = [
    ([Call(jobs.square, (3,))], "62d05b59c51511e1dee8086c"),
    ([Call(jobs.add, (1,), {"b": 2}), Review("Check the counts"), Sleep("in 2h")],
     "67c3908771f17bf0e2eb346d"),
    ([Review("Check the counts")], "0c3f1bc4560fc35c78df93cf"),
]


@pytest.mark.parametrize("items, fingerprint", FINGERPRINTS)
def test_a_yield_fingerprints_as_in_queues_written_before(items, fingerprint) -> None:
    assert fingerprint_of(items) == fingerprint


def test_a_journal_row_as_written_before_replays(tmp_path: Path) -> None:
    """The journal is rows of SQL, rebuilt into steps at each claim: a row as an earlier
    nbqueue wrote it (the same columns, the same fingerprint) replays in a new dispatcher's
    new worker, which has nothing but that row."""
    path = tmp_path / "q"
    with nbqueue.Queue(path, workers=1) as q:
        h = q.submit(jobs.reviewed, "Check the counts", key="asker")
        wait_for(lambda: q.reviews(), message="the handler's gate")
        [gate] = q.reviews()
        assert h.state == "waiting"
    con = sqlite3.connect(path / "cache.db")
    try:
        rows = con.execute("SELECT job, step, fingerprint, children, at FROM nbq_journal").fetchall()
    finally:
        con.close()
    [(job, step, fingerprint, children, at)] = rows
    assert (job, step, fingerprint) == (h.id, 0, FINGERPRINTS[2][1])
    assert json.loads(children) == [gate.id] and isinstance(at, float)
    with nbqueue.Queue(path, workers=1) as q:
        q.approve(gate.id, comment="replayed")
        assert q.job("asker").result(timeout=120) == (True, "replayed", os_user())
