"""The command line, run for real: ``python -m nbqueue ...`` in subprocesses against
queue directories under tmp_path, with a headless ``nbqueue worker`` where jobs must run."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from pathlib import Path

import jobs
import pytest
from conftest import pid_alive, python_env, wait_for

import nbqueue

STATES = ["waiting", "ready", "running", "review", "done", "failed", "cancelled", "rejected"]


def nbq(*args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nbqueue ARGS`` to its end."""
    return subprocess.run([sys.executable, "-m", "nbqueue", *map(str, args)], cwd=cwd,
                          env=python_env(), text=True, capture_output=True, timeout=timeout)


def ok(*args: object, cwd: Path) -> str:
    proc = nbq(*args, cwd=cwd)
    assert proc.returncode == 0, f"nbqueue {args} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


def fails(code: int, *args: object, cwd: Path) -> str:
    """Run a command that must exit with ``code``; its one-line error, no traceback."""
    proc = nbq(*args, cwd=cwd)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stderr


def start_worker(path: Path, *args: object, cwd: Path) -> subprocess.Popen[str]:
    """Start ``nbqueue worker PATH`` and return once it says it serves the queue."""
    proc = subprocess.Popen([sys.executable, "-m", "nbqueue", "worker", str(path), *map(str, args)],
                            cwd=cwd, env=python_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if "serving" not in line:
        proc.kill()
        pytest.fail(f"nbqueue worker did not start: {line!r}\n{proc.communicate()[1]}")
    return proc


def stop_worker(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.fixture
def q(queue_dir):
    """The queue opened for submitting only: the CLI (or a worker process) does the rest."""
    queue = nbqueue.Queue(queue_dir, workers=2, start=False)
    yield queue
    queue.close()


# -- status ---------------------------------------------------------------------------------


def test_status_json_shape_and_counts(q, tmp_path):
    q.submit(jobs.add, 1, 2)
    q.map(jobs.square, [1, 2], after="in 1h")
    gate = q.review("Check it", payload="the numbers")
    status = json.loads(ok("status", q.path, "--json", cwd=tmp_path))
    assert set(status) == {"path", "format", "counts", "running", "reviews", "resources",
                           "dispatchers", "service"}
    assert status["service"] is None  # no service serves it (test_service.py)
    assert status["path"] == str(q.path)
    assert list(status["counts"]) == STATES
    assert status["counts"] == {**dict.fromkeys(STATES, 0), "ready": 1, "waiting": 2,
                                "review": 1}
    assert [r["id"] for r in status["reviews"]] == [gate.id]
    assert status["running"] == [] and status["dispatchers"] == []
    assert status == json.loads(json.dumps(q.status()))

    text = ok("status", q.path, cwd=tmp_path)
    assert "2 waiting, 1 ready, 1 review" in text
    assert gate.id in text and "Check it" in text
    assert "nothing runs these jobs" in text


def test_status_of_a_missing_path_exits_1_and_creates_nothing(tmp_path):
    missing = tmp_path / "nope"
    assert "does not exist" in fails(1, "status", missing, cwd=tmp_path)
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "empty" in fails(1, "status", empty, "--json", cwd=tmp_path)
    assert list(empty.iterdir()) == []
    # the default path ($NBQUEUE_DIR unset): ./.nbqueue of the working directory
    assert ".nbqueue" in fails(1, "status", cwd=tmp_path)
    assert not (tmp_path / ".nbqueue").exists()


def test_status_shows_a_dead_dispatcher_with_its_error(q, tmp_path):
    # what a dispatcher thread records when it dies (Dispatcher._run)
    owner = "elsewhere|boot|4242|1|abc"
    q.store.register_dispatcher(owner, workers=3, executor="loky")
    q.store.dispatcher_failed(owner, "Traceback (most recent call last):\nOSError: disk on fire")
    text = ok("status", q.path, cwd=tmp_path)
    assert "DISPATCHER DIED" in text and "OSError: disk on fire" in text
    (entry,) = json.loads(ok("status", q.path, "--json", cwd=tmp_path))["dispatchers"]
    assert entry["owner"] == owner and "disk on fire" in entry["error"]


def test_status_watch_redraws_until_interrupted(q, tmp_path):
    q.submit(jobs.add, 1, 2)
    proc = subprocess.Popen([sys.executable, "-m", "nbqueue", "status", str(q.path), "--json",
                             "--watch"], cwd=tmp_path, env=python_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    second = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert first["counts"]["ready"] == second["counts"]["ready"] == 1


# -- jobs and actions ---------------------------------------------------------------------------


def test_jobs_lists_by_state_with_children_under_parents(queue, tmp_path):
    parent = queue.submit(jobs.spawner, 2)
    child_ids = parent.result(timeout=60)
    for child in child_ids:
        queue.job(child).wait(timeout=60)
    later = queue.submit(jobs.add, 1, 1, after="in 1h", name="later")
    queue.stop()

    listed = json.loads(ok("jobs", queue.path, "--json", cwd=tmp_path))
    assert [j["id"] for j in listed] == [parent.id, *child_ids, later.id]
    assert [j["parent"] for j in listed] == [None, parent.id, parent.id, None]
    assert [j["state"] for j in listed] == ["done", "done", "done", "waiting"]
    assert {"id", "name", "state", "reason", "attempt", "elapsed"} <= set(listed[0])

    waiting = json.loads(ok("jobs", queue.path, "--state", "waiting", "--json", cwd=tmp_path))
    assert [(j["id"], j["name"]) for j in waiting] == [(later.id, "later")]
    assert "not before" in waiting[0]["reason"]

    lines = ok("jobs", queue.path, cwd=tmp_path).splitlines()
    assert lines[0].split()[:3] == ["NAME", "ID", "STATE"]
    assert lines[1].startswith("spawner ") and parent.id in lines[1]
    assert lines[2].startswith("  square ") and child_ids[0] in lines[2]
    assert ok("jobs", queue.path, "--state", "failed", cwd=tmp_path).strip() == \
        "no jobs in state failed"


def test_cancel_and_retry(q, tmp_path):
    h = q.submit(jobs.add, 2, 2, after="in 1h")
    assert h.state == "waiting"
    assert "cancelled" in ok("cancel", q.path, h.id, cwd=tmp_path)
    assert h.state == "cancelled"
    assert "already ended (cancelled)" in fails(1, "cancel", q.path, h.id, cwd=tmp_path)

    assert "will run again" in ok("retry", q.path, h.key, cwd=tmp_path)  # a key works too
    assert h.state == "ready"
    assert "only a failed or cancelled job" in fails(1, "retry", q.path, h.id, cwd=tmp_path)
    assert "no job with id or key 'nope'" in fails(1, "cancel", q.path, "nope", cwd=tmp_path)
    assert h.state == "ready"


def test_approve_from_the_cli_releases_a_job_served_by_a_headless_worker(q, tmp_path):
    gate = q.review("Publish?", payload="42 rows, all green")
    after_gate = q.submit(jobs.add, 20, 22, needs=[gate])
    other_gate = q.review("Second opinion?")
    after_other = q.submit(jobs.add, 1, 1, needs=[other_gate])
    reviews = json.loads(ok("reviews", q.path, "--json", cwd=tmp_path))
    assert [(r["id"], r["payload"]) for r in reviews] == [(gate.id, "42 rows, all green"),
                                                        (other_gate.id, None)]
    assert "42 rows, all green" in ok("reviews", q.path, cwd=tmp_path)

    worker = start_worker(q.path, "-w", "2", cwd=tmp_path)
    try:
        out = ok("approve", q.path, gate.id, "-m", "looks right", cwd=tmp_path)
        assert f"approved gate {gate.id}" in out and "now done" in out
        assert after_gate.result(timeout=120) == 42
        decision = gate.result()
        assert decision.approved and decision.comment == "looks right"

        out = ok("reject", q.path, other_gate.id, "-m", "no", cwd=tmp_path)
        assert f"rejected gate {other_gate.id}" in out and "now rejected" in out
        assert after_other.wait(timeout=120).state == "cancelled"
        assert other_gate.state == "rejected"

        # deciding what is not in review changes nothing: exit 1, one line
        err = fails(1, "approve", q.path, gate.id, cwd=tmp_path)
        assert "only a gate in review" in err and len(err.strip().splitlines()) == 1
        assert "not a review gate" in fails(1, "reject", q.path, after_gate.id, cwd=tmp_path)
        assert gate.state == "done" and after_gate.state == "done"
        assert ok("reviews", q.path, cwd=tmp_path).strip() == "no review gates waiting"
    finally:
        code, out, err = stop_worker(worker)
    assert code == 0, err
    assert "stopped" in out
    assert f"({after_gate.name}) done" in err  # job ends are logged at INFO


def test_a_worker_stops_on_sigterm_and_hands_its_running_job_back(q, tmp_path):
    log = tmp_path / "runs.log"
    h = q.submit(jobs.record, str(log), "long", 120)
    worker = start_worker(q.path, "-w", "1", cwd=tmp_path)
    try:
        wait_for(lambda: log.exists() and "start long" in log.read_text(), timeout=120,
                 message="the job started in the worker")
        job_pid = int(log.read_text().split()[2])
        assert h.state == "running"
    finally:
        code, out, err = stop_worker(worker)
    assert code == 0, err
    assert "running jobs go back to the queue" in err
    record = h.record()
    # put back: the attempt stays on record, counts against no retry, and says why
    assert (record.state, record.attempt, record.deaths) == ("ready", 1, 0)
    assert record.why == "its dispatcher stopped while attempt 1 ran"
    wait_for(lambda: not pid_alive(job_pid), message="the job's worker process exited")
    assert "end long" not in log.read_text()


def test_resources_set_and_list(q, tmp_path):
    out = ok("resources", q.path, "--set", "gpu", "--capacity", "2", "--available", "no",
             cwd=tmp_path)
    assert "gpu" in out and "UNAVAILABLE" in out
    assert q.resources()["gpu"]["capacity"] == 2
    assert q.resources()["gpu"]["available"] is False
    ok("resources", q.path, "--set", "gpu", "--available", "yes", cwd=tmp_path)
    listed = json.loads(ok("resources", q.path, "--json", cwd=tmp_path))
    assert listed["gpu"]["capacity"] == 2 and listed["gpu"]["available"] is True
    fails(2, "resources", q.path, "--capacity", "3", cwd=tmp_path)
    fails(2, "resources", q.path, "--set", "gpu", "--capacity", "0", cwd=tmp_path)
    assert q.resources()["gpu"]["capacity"] == 2


def test_bad_usage_exits_2(tmp_path):
    fails(2, cwd=tmp_path)
    fails(2, "frobnicate", cwd=tmp_path)
    fails(2, "jobs", "--state", "sleeping", cwd=tmp_path)
    fails(2, "worker", "-w", "0", cwd=tmp_path)
    fails(2, "approve", tmp_path, cwd=tmp_path)  # no ID
    fails(2, "export", tmp_path / "q", cwd=tmp_path)  # neither --jsonl nor --notebook
    assert "worker" in ok("--help", cwd=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_export_writes_the_file_or_says_it_is_not_available(queue, tmp_path):
    queue.submit(jobs.add, 3, 4).result(timeout=60)
    queue.stop()
    target = tmp_path / "out.jsonl"
    proc = nbq("export", queue.path, "--jsonl", target, cwd=tmp_path)
    available = importlib.util.find_spec("nbqueue.outputs") is not None and hasattr(
        importlib.import_module("nbqueue.outputs"), "export_jsonl")
    if available:
        assert proc.returncode == 0, proc.stderr
        assert "add" in target.read_text()
    else:
        assert proc.returncode == 1
        assert "export is not available" in proc.stderr and "Traceback" not in proc.stderr
        assert not target.exists()


# -- demo -------------------------------------------------------------------------------------


def test_demo_runs_end_to_end_and_a_rerun_attaches(tmp_path):
    out = ok("demo", cwd=tmp_path)
    assert f"queue directory {tmp_path / '.nbqueue'}" in out
    assert "675 words (expected 675)" in out
    assert "downloaded on attempt 2" in out
    assert "sum = 385" in out
    assert "approved by" in out
    assert "spawned a child job: 'archived 59 chars" in out
    q = nbqueue.Queue(tmp_path / ".nbqueue", start=False)
    try:
        counts = q.status()["counts"]
        assert counts["done"] == 22 and sum(counts.values()) == 22
        again = ok("demo", cwd=tmp_path)
        assert "11 of 11 jobs already existed" in again and "sum = 385" in again
        assert q.status()["counts"]["done"] == 22  # nothing new ran
        fresh = ok("demo", "--fresh", cwd=tmp_path)
        assert "submitted 11 jobs" in fresh and "downloaded on attempt 2" in fresh
        assert q.status()["counts"]["done"] == 44
    finally:
        q.close()
