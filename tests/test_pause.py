"""Pausing the queue, or the jobs of a name: nothing new starts, running jobs finish,
waiting ones say "paused"; resume lets them run. Two serving processes, measured from
the jobs' own time logs (``jobs.span``), and the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jobs
import pytest
from conftest import start_python, wait_for
from test_resources import spans

import nbqueue
from nbqueue.dispatcher import Dispatcher

SERVE = """
    import time
    from pathlib import Path
    import nbqueue
    q = nbqueue.Queue({path!r}, workers=2)
    stop = Path({stop!r})
    while not stop.exists():
        time.sleep(0.05)
    q.stop()
"""


def serve_twice(path: Path, tmp_path: Path) -> tuple[list, Path]:
    stop = tmp_path / "stop"
    procs = [start_python(SERVE.format(path=str(path), stop=str(stop)), cwd=tmp_path)
             for _ in range(2)]
    return procs, stop


def stop_all(procs: list, stop: Path) -> None:
    stop.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


def starts(log: Path) -> list[tuple[str, float]]:
    """(value, time) of every start line logged by jobs.span."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, value, _pid, _ppid, at = line.split()
        if kind == "start":
            out.append((value, float(at)))
    return out


def test_pausing_the_queue_stops_new_starts_in_every_process(tmp_path) -> None:
    path, log = tmp_path / "q", tmp_path / "log"
    q = nbqueue.Queue(path, start=False)
    handles = q.map(jobs.span, [log] * 24, [f"j{i}" for i in range(24)], [0.2] * 24, key=None)
    procs, stop = serve_twice(path, tmp_path)
    try:
        wait_for(lambda: len(starts(log)) >= 4, message="four jobs to start")
        parked = q.pause()
        # running jobs finish; then nothing starts
        wait_for(lambda: q.counts()["running"] == 0, message="running jobs to finish")
        quiet = time.time()
        held = [h for h in handles if not h.done()]
        assert held and parked >= 1
        assert {(h.state, h.reason) for h in held} == {("waiting", "paused")}
        assert q.counts()["ready"] == 0
        # submitted while paused: it waits too
        late = q.submit(jobs.span, log, "late", 0.0, key=None)
        assert (late.state, late.reason) == ("waiting", "paused")
        q.join(timeout=60)  # returns: nothing runs, paused jobs are not work to wait for
        wait_for(lambda: time.time() > quiet + 1.5, message="a second and a half")
        assert not [v for v, t in starts(log) if t > quiet]  # no start while paused
        assert q.paused() == {"queue": True, "names": []}
        resumed = time.time()
        assert q.resume() == len(held) + 1
        for h in [*held, late]:
            h.wait(timeout=120)
    finally:
        stop_all(procs, stop)
    assert {h.state for h in [*handles, late]} == {"done"}
    logged = starts(log)
    assert sorted(v for v, _ in logged) == sorted({v for v, _ in logged})  # each ran once
    ran_after = {v for v, t in logged if t > resumed}
    assert ran_after == {h.result() for h in held} | {"late"}
    assert all(t <= quiet for v, t in logged if v not in ran_after)
    q.close()


def test_pausing_a_name_holds_its_jobs_while_others_run(tmp_path) -> None:
    path, log = tmp_path / "q", tmp_path / "log"
    q = nbqueue.Queue(path, start=False)
    q.pause(name="fetch")
    fetch = q.map(jobs.span, [log] * 6, [f"fetch{i}" for i in range(6)], [0.05] * 6,
                  name="fetch", key=None)
    crunch = q.map(jobs.span, [log] * 10, [f"crunch{i}" for i in range(10)], [0.05] * 10,
                   name="crunch", key=None)
    assert {(h.state, h.reason) for h in fetch} == {("waiting", "paused (jobs named fetch)")}
    procs, stop = serve_twice(path, tmp_path)
    try:
        for h in crunch:
            h.wait(timeout=120)
        assert {h.state for h in fetch} == {"waiting"}
        assert not [v for v, _ in starts(log) if v.startswith("fetch")]
        assert q.paused() == {"queue": False, "names": ["fetch"]}
        assert q.resume() == 0  # the queue was not paused: fetch stays paused
        assert {h.state for h in fetch} == {"waiting"}
        resumed = time.time()
        assert q.resume(name="fetch") == 6
        for h in fetch:
            assert h.result(timeout=120).startswith("fetch")
    finally:
        stop_all(procs, stop)
    fetch_starts = [t for v, t in starts(log) if v.startswith("fetch")]
    assert len(fetch_starts) == 6 and min(fetch_starts) > resumed
    assert len(spans(log)) == 16
    q.close()


def test_jobs_that_become_ready_while_paused_wait_and_a_pause_is_stored(queue_dir) -> None:
    q = nbqueue.Queue(queue_dir, workers=1, start=False)
    first = q.submit(jobs.add, 1, 1, key=None)
    after = q.submit(jobs.add, first, 1, name="after", key=None)  # needs first
    q.pause(name="after")
    d = Dispatcher(q._store, workers=1)
    try:
        wait_for(lambda: (d.step(), first.state == "done")[1], message="first to run")
        wait_for(lambda: (d.step(), after.state == "waiting" and after.reason.startswith(
            "paused"))[1], message="after to become ready, then be parked by the claim")
        assert after.reason == "paused (jobs named after)"
    finally:
        d.stop()
        q.close()
    with nbqueue.Queue(queue_dir, workers=1) as again:  # as a new process sees it
        assert again.paused() == {"queue": False, "names": ["after"]}
        assert again.job(after.id).state == "waiting"
        again.resume("after")
        assert again.job(after.id).result(timeout=120) == 3


def test_pausing_twice_and_resuming_what_is_not_paused(stopped_queue) -> None:
    q = stopped_queue
    h = q.submit(jobs.noop, key=None)
    assert q.pause() == 1
    assert q.pause() == 0 and h.state == "waiting"
    assert q.resume("nobody") == 0 and h.state == "waiting"
    assert q.resume() == 1 and h.state == "ready" and h.reason == ""
    assert q.resume() == 0


def test_a_large_pause_parks_and_releases_in_batches(stopped_queue) -> None:
    from nbqueue.store import pauses

    q = stopped_queue
    handles = q.map(jobs.noop, range(pauses.BATCH * 2 + 10), key=None)
    before = q.changes()
    assert q.pause() == len(handles)
    assert q.changes() - before == 3  # three transactions
    assert q.counts()["waiting"] == len(handles)
    assert q.resume() == len(handles)
    assert q.counts()["ready"] == len(handles)


# -- the command line and the panel ------------------------------------------------------------


def test_cli_pause_and_resume(tmp_path) -> None:
    from test_cli import ok

    path = tmp_path / "q"
    q = nbqueue.Queue(path, start=False)
    h = q.submit(jobs.noop, name="fetch", key=None)
    out = ok("pause", path, cwd=tmp_path)
    assert f"paused queue {path}" in out and "(1 job now wait)" in out
    assert h.reason == "paused"
    status = json.loads(ok("status", path, "--json", cwd=tmp_path))
    assert status["paused"] == {"queue": True, "names": []}
    assert f"PAUSED: nothing new starts until: nbqueue resume {path}" in ok("status", path,
                                                                            cwd=tmp_path)
    out = ok("pause", path, "fetch", cwd=tmp_path)
    assert "paused jobs named fetch" in out and "also paused: the whole queue" in out
    out = ok("resume", path, cwd=tmp_path)
    assert "resumed queue" in out and "1 job ready again" in out
    assert "still paused: jobs named fetch" in out
    assert h.reason == "paused (jobs named fetch)" or h.state == "ready"
    assert "resumed jobs named fetch" in ok("resume", path, "fetch", cwd=tmp_path)
    assert "was not paused" in ok("resume", path, "fetch", cwd=tmp_path)
    assert h.state == "ready"
    q.close()


def test_the_panel_switch_pauses_the_queue(stopped_queue) -> None:
    pytest.importorskip("ipywidgets")
    from nbqueue.widgets import QueuePanel

    q = stopped_queue
    h = q.submit(jobs.noop, key=None)
    panel = QueuePanel(q)
    try:
        switch = panel._running_switch
        assert (switch.value, switch.description) == (True, "queue running")
        switch.value = False
        assert q.paused()["queue"] and h.reason == "paused"
        assert switch.description == "queue paused" and "paused" in panel._paused_note.value
        q.pause(name="fetch")
        panel.refresh()
        assert "jobs named fetch" in panel._paused_note.value
        switch.value = True
        assert not q.paused()["queue"] and h.state == "ready"
    finally:
        panel.close()


def test_salvage_keeps_pauses(tmp_path) -> None:
    from test_cli import ok

    path, copy = tmp_path / "q", tmp_path / "copy"
    with nbqueue.Queue(path, start=False) as q:
        h = q.submit(jobs.noop, name="fetch", key=None)
        q.pause(name="fetch")
        q.close()
    ok("salvage", path, copy, cwd=tmp_path)
    with nbqueue.Queue(copy, start=False) as q:
        assert q.paused() == {"queue": False, "names": ["fetch"]}
        assert q.job(h.id).reason == "paused (jobs named fetch)"
        assert q.resume("fetch") == 1 and q.job(h.id).state == "ready"
        q.close()


def _settled_counts(q: nbqueue.Queue) -> dict[str, int]:
    counts = q.counts()
    assert all(n >= 0 for n in counts.values()), counts
    return counts


def test_a_pause_holds_a_chunked_map_and_counts_stay_true(queue_dir, tmp_path) -> None:
    """A paused name's map makes no chunk; a whole-queue pause stops a running map between
    chunks; chunks are parked and released without entering the counts per state."""
    log = tmp_path / "runs"
    with nbqueue.Queue(queue_dir, workers=2) as q:
        q.pause(name="mark_item")
        items = q.map(jobs.mark_item, [str(log)] * 60, range(60), [0.02] * 60, chunksize=5)
        time.sleep(1.0)
        assert not log.exists(), "a chunk of a paused map ran"
        q.resume(name="mark_item")
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 10, timeout=60,
                 message="the map to start once resumed")
        q.pause()
        time.sleep(1.0)  # the chunks running at the pause end; no other starts
        ran = len(log.read_text().splitlines())
        time.sleep(1.0)
        assert len(log.read_text().splitlines()) == ran < 60
        counts = _settled_counts(q)
        assert counts["running"] == 1 and counts["ready"] == 0  # the map itself runs on
        q.resume()
        assert q.gather(items, timeout=120) == list(range(60))
        q.join(timeout=60)
        counts = _settled_counts(q)
        assert counts["done"] == 1 and counts["waiting"] == counts["ready"] == 0
        assert counts["running"] == 0
        assert len(log.read_text().splitlines()) == 60  # each item ran once
