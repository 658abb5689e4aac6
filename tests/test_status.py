"""q.status(): its shape, its counts, and a dispatcher that died saying so."""

from __future__ import annotations

import sqlite3
import time

import jobs
import pytest

import nbqueue


def test_status_shape_and_counts(queue: nbqueue.Queue) -> None:
    done = queue.map(jobs.square, range(3), key=None)
    assert [h.result(timeout=60) for h in done] == [0, 1, 4]
    gate = queue.review("look at this", payload="a table")
    status = queue.status()
    assert set(status) == {"path", "format", "counts", "running", "reviews", "resources",
                           "schedules", "paused", "dispatchers", "service"}
    assert status["service"] is None  # a kernel's dispatcher is no service (test_service.py)
    assert status["path"] == str(queue.path)
    assert status["counts"]["done"] == 3
    assert status["counts"]["review"] == 1
    assert set(status["counts"]) == {"waiting", "ready", "running", "review", "done", "failed",
                                     "cancelled", "rejected"}
    assert [r["id"] for r in status["reviews"]] == [gate.id]
    [me] = [d for d in status["dispatchers"] if d.get("this_process")]
    assert me["alive"] and me["error"] is None and me["workers"] == 2


def test_counts_match_the_jobs(queue: nbqueue.Queue) -> None:
    handles = queue.map(jobs.add, range(20), range(20), key=None)
    failing = queue.submit(jobs.boom, key=None)
    for h in handles:
        h.result(timeout=60)
    with pytest.raises(nbqueue.JobFailed):
        failing.result(timeout=60)
    counts = queue.status()["counts"]
    by_state: dict[str, int] = {}
    for h in queue.jobs():
        by_state[h.state] = by_state.get(h.state, 0) + 1
    assert {k: v for k, v in counts.items() if v} == by_state == {"done": 20, "failed": 1}


def test_a_dead_dispatcher_says_so(queue: nbqueue.Queue) -> None:
    assert queue.submit(jobs.add, 1, 1).result(timeout=60) == 2
    # Break the store under the running dispatcher for real: its next statement fails.
    con = sqlite3.connect(queue.path / "cache.db")
    con.execute("ALTER TABLE nbq_job RENAME TO nbq_job_gone")
    con.commit()
    con.close()
    dispatcher = queue.dispatcher
    assert dispatcher is not None
    dispatcher.wake()
    deadline = time.monotonic() + 60
    while dispatcher.alive and time.monotonic() < deadline:
        dispatcher.join(0.1)
    assert not dispatcher.alive
    assert dispatcher.error and "nbq_job" in dispatcher.error
    con = sqlite3.connect(queue.path / "cache.db")
    con.execute("ALTER TABLE nbq_job_gone RENAME TO nbq_job")
    con.commit()
    con.close()
    status = queue.status()
    [me] = [d for d in status["dispatchers"] if d.get("this_process")]
    assert me["alive"] is False
    assert "nbq_job" in me["error"]
    assert "dispatcher died" in queue._repr_html_()
