"""Rate limits of resources: at most N jobs holding one start per period, across every
process. Claims on a fake clock (``store.claim(now=...)``) for the rules and reasons; two
serving processes measured from the jobs' own time logs (``jobs.span``) for the limit."""

from __future__ import annotations

import json
import time

import jobs
import pytest
from conftest import start_python
from test_resources import spans

import nbqueue
from nbqueue.store import Owner
from nbqueue.times import format_local_time

OWNER = str(Owner.current())


def claim(q: nbqueue.Queue, now: float, n: int = 10, handed: int = 0) -> list[str]:
    """Claim as a dispatcher would at ``now`` (no worker runs them); the ids claimed."""
    return [c.id for c in q._store.claim(OWNER, n, lease=3600, ahead=handed, now=now)]


@pytest.fixture
def fake_now() -> float:
    """A moment well after the clock: the claims' times, not the clock, count."""
    return round(time.time()) + 10_000.0


def test_at_most_n_start_per_period_and_the_reason_says_when(stopped_queue, fake_now) -> None:
    q, t = stopped_queue, fake_now
    q.set_resource("api", rate="2/min")
    assert q.resources()["api"] == {"capacity": 2 ** 53, "available": True, "holders": [],
                                    "waiting": 0, "rate": "2/min", "next_start": None}
    handles = [q.submit(jobs.noop, i, resources=["api"], key=None) for i in range(5)]
    free = q.submit(jobs.noop, "free", key=None)
    assert sorted(claim(q, t)) == sorted([handles[0].id, handles[1].id, free.id])
    waiting = handles[2]
    assert waiting.state == "waiting"
    assert waiting.reason == (f"rate limit of api (2 per minute): the next may start at "
                              f"{format_local_time(t + 60)}")
    info = q.resources()["api"]
    assert (info["next_start"], info["waiting"], len(info["holders"])) == (t + 60, 3, 2)
    assert q._store.next_due() == t + 60  # a dispatcher claims again then
    assert claim(q, t + 59.9) == []
    assert sorted(claim(q, t + 60)) == sorted([handles[2].id, handles[3].id])  # two freed
    assert handles[4].state == "waiting"
    assert claim(q, t + 119) == []
    assert claim(q, t + 120) == [handles[4].id]


def test_a_window_never_holds_more_than_n_starts(stopped_queue, fake_now) -> None:
    """Starts spread over time: any 60 s holds at most 3 of them."""
    q, t = stopped_queue, fake_now
    q.set_resource("api", rate="3/min")
    handles = [q.submit(jobs.noop, i, resources=["api"], key=None) for i in range(12)]
    started: dict[str, float] = {}
    for k in range(0, 300, 7):  # a claim every 7 s of the fake clock, 1 job at a time
        for job_id in claim(q, t + k, n=1):
            started[job_id] = t + k
    times = sorted(started.values())
    assert len(times) == len(handles)
    assert all(b - a >= 60 for a, b in zip(times, times[3:], strict=False))
    assert any(b - a < 60 for a, b in zip(times, times[1:], strict=False))  # bursts of 3


def test_rate_with_a_capacity_and_changing_the_rate(stopped_queue, fake_now) -> None:
    q, t = stopped_queue, fake_now
    q.set_resource("db", capacity=1, rate="3/min")
    a, b = (q.submit(jobs.noop, i, resources=["db"], key=None) for i in range(2))
    assert claim(q, t) == [a.id]
    assert b.reason.startswith(f"resource db held by job {a.id}")  # the capacity first
    assert q.resources()["db"]["capacity"] == 1
    more = [q.submit(jobs.noop, i, resources={"api": 1}, key=None) for i in range(6)]
    q.set_resource("api", rate="3/min")
    assert len(claim(q, t + 1)) == 3
    q.set_resource("api", rate="2/min")  # the three starts stay counted
    assert claim(q, t + 2) == []
    assert "2 per minute" in more[3].reason
    q.set_resource("api", rate="5/min")  # room for two more at once
    assert len(claim(q, t + 3)) == 2
    q.set_resource("api", rate=False)  # no limit
    assert q.resources()["api"]["rate"] is None
    assert claim(q, t + 4) == [more[5].id]


def test_rate_limited_jobs_are_not_handed_ahead(stopped_queue, fake_now) -> None:
    """A start counts when it is claimed: a job handed ahead starts later than that, so
    rate-limited jobs are only claimed to start at once."""
    q, t = stopped_queue, fake_now
    q.set_resource("api", rate="10/min")
    limited = [q.submit(jobs.noop, i, resources=["api"], key=None) for i in range(3)]
    assert claim(q, t, n=2, handed=1) == [limited[0].id]
    assert limited[1].state == "ready"
    q.set_resource("api", rate=False)
    assert len(claim(q, t, n=2, handed=1)) == 2


def test_two_processes_start_at_most_n_per_period(tmp_path) -> None:
    path, log = tmp_path / "q", tmp_path / "log"
    q = nbqueue.Queue(path, start=False)
    meet = tmp_path / "meet"
    warm = [q.submit(jobs.span, log, f"warm{i}", 0.0, group=str(meet), size=4, key=None)
            for i in range(4)]  # four at once: every worker of both processes is up
    stop = tmp_path / "stop"
    serve = f"""
        import time
        from pathlib import Path
        import nbqueue
        q = nbqueue.Queue({str(path)!r}, workers=2)
        while not Path({str(stop)!r}).exists():
            time.sleep(0.05)
        q.stop()
    """
    procs = [start_python(serve, cwd=tmp_path) for _ in range(2)]
    try:
        for h in warm:
            h.wait(timeout=120)
        q.set_resource("api", rate="3/2s")
        limited = q.map(jobs.span, [log] * 12, [f"api{i}" for i in range(12)], [0.01] * 12,
                        resources=["api"], key=None)
        for h in limited:
            h.wait(timeout=120)
    finally:
        stop.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    assert {h.state for h in limited} == {"done"}
    runs = spans(log, "api")
    assert sorted(v for v, *_ in runs) == sorted(f"api{i}" for i in range(12))  # each once
    starts = sorted(start for _, start, _, _ in runs)
    # any 2 s hold at most 3 starts (a start is logged by its worker a little after its
    # claim: a quarter of a second is allowed for that)
    gaps = [b - a for a, b in zip(starts, starts[3:], strict=False)]
    assert min(gaps) >= 2.0 - 0.25, gaps
    q.close()


def test_cli_and_panel_show_the_rate(tmp_path) -> None:
    from test_cli import fails, ok

    path = tmp_path / "q"
    q = nbqueue.Queue(path, start=False)
    out = ok("resources", path, "--set", "api", "--rate", "10/min", cwd=tmp_path)
    assert out.split()[:6] == ["api", "no", "capacity", "limit", "available", "free"]
    assert "rate 10/min" in out
    listed = json.loads(ok("resources", path, "--json", cwd=tmp_path))
    assert listed["api"]["rate"] == "10/min"
    assert "rate 5/10s" in ok("resources", path, "--set", "db", "--capacity", "2", "--rate",
                              "5/10s", cwd=tmp_path)
    assert "rate" not in ok("resources", path, "--set", "api", "--rate", "none",
                            cwd=tmp_path).splitlines()[0]
    assert "rate=" in fails(1, "resources", path, "--set", "api", "--rate", "often",
                            cwd=tmp_path)
    pytest.importorskip("ipywidgets")
    from nbqueue.widgets import QueuePanel

    panel = QueuePanel(q)
    try:
        texts = [row._info.value for row in panel._resource_rows if row.key]
        assert any("capacity 2; rate 5/10s" in text for text in texts), texts
    finally:
        panel.close()
    q.close()


def test_a_rate_survives_reopening(queue_dir, fake_now) -> None:
    t = fake_now
    with nbqueue.Queue(queue_dir, start=False) as q:
        q.set_resource("api", rate="1/h")
        first, second = (q.submit(jobs.noop, i, resources=["api"], key=None) for i in range(2))
        assert claim(q, t) == [first.id]
        q.close()
    with nbqueue.Queue(queue_dir, start=False) as q:
        assert claim(q, t + 1800) == []
        assert q.job(second.id).reason.endswith(format_local_time(t + 3600))
        assert claim(q, t + 3600) == [second.id]
        q.close()

