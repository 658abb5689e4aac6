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
                           "schedules", "paused", "dispatchers", "service"}
    assert status["schedules"] == []
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
    q._store.register_dispatcher(owner, workers=3, executor="loky")
    q._store.dispatcher_failed(owner, "Traceback (most recent call last):\nOSError: disk on fire")
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
    assert "no job named 'nope'" in fails(1, "cancel", q.path, "nope", cwd=tmp_path)
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


# -- naming a job: name, start of an id, key ---------------------------------------------------


class ResultOf:
    """A review payload that stands for a cell job's outputs (what ``%%enqueue --review``
    gives its gate)."""

    def __init__(self, job_id):
        self.job_id = job_id

    def _repr_mimebundle_(self, include=None, exclude=None):
        from nbqueue.cellview import RESULT_REF_MIME

        return {"text/plain": f"the outputs of job {self.job_id}",
                RESULT_REF_MIME: json.dumps({"job": self.job_id})}


class HtmlOnly:
    def _repr_html_(self):
        return "<h3>Q3 revenue</h3><table><tr><td>north</td><td>1.2M</td></tr></table>"


def test_commands_take_a_name_or_the_start_of_an_id(q, tmp_path):
    old = q.submit(jobs.add, 1, 1, after="in 1h", name="fit")
    new = q.submit(jobs.add, 2, 2, after="in 1h", name="fit")
    assert "cancelled: job " + new.id in ok("cancel", q.path, "fit", cwd=tmp_path)
    assert (old.state, new.state) == ("waiting", "cancelled")  # the newest of that name
    assert "will run again" in ok("retry", q.path, new.id[:6], cwd=tmp_path)  # 6 hex digits
    assert new.state == "ready"
    assert f"cancelled: job {old.id}" in ok("cancel", q.path, old.id[:10].upper(), cwd=tmp_path)

    # a map's jobs take consecutive ids: their first digits are the same
    a, b = q.map(jobs.square, [1, 2], after="in 1h", name="sq")
    shared = next(i for i in range(16) if a.id[i] != b.id[i])
    assert shared >= 4
    err = fails(1, "cancel", q.path, a.id[:shared], cwd=tmp_path)
    assert "start of several job ids" in err and len(err.strip().splitlines()) == 1
    assert f"{a.id} (sq)" in err and f"{b.id} (sq)" in err and "more digits" in err
    assert (a.state, b.state) == ("waiting", "waiting")  # nothing was changed
    assert f"cancelled: job {a.id}" in ok("cancel", q.path, a.id[:shared + 1], cwd=tmp_path)
    # three digits are not taken as the start of an id
    assert "no job named" in fails(1, "cancel", q.path, b.id[:3], cwd=tmp_path)
    assert b.state == "waiting"


def test_a_child_is_named_by_the_start_of_its_parent_id(queue, tmp_path):
    parent = queue.submit(jobs.fan_out, 3, name="fan")
    assert parent.result(timeout=60) == 5
    child = parent.children[2]
    queue.stop()
    out = ok("show", queue.path, parent.id[:8] + child.id[len(parent.id):], cwd=tmp_path)
    assert out.splitlines()[0] == f"square  (job {child.id})"
    assert facts(out)["parent"] == parent.id
    assert ok("show", queue.path, parent.id[:8], cwd=tmp_path).startswith(f"fan  (job {parent.id})")


# -- logs and show -----------------------------------------------------------------------------


def test_logs_prints_every_attempt_or_one(queue, tmp_path):
    h = queue.submit(jobs.flaky_loud, str(tmp_path / "count"), 1, retries=1, retry_delay=0.1,
                     name="flaky")
    assert h.result(timeout=60) == 2
    queue.stop()
    assert ok("logs", queue.path, "flaky", cwd=tmp_path) == (
        "run 1\n--- attempt 2: attempt 1 failed with RuntimeError ---\nrun 2\n")
    assert ok("logs", queue.path, "flaky", "--attempt", "1", cwd=tmp_path) == "run 1\n"
    assert ok("logs", queue.path, "flaky", "--attempt", "2", cwd=tmp_path) == "run 2\n"
    assert "no attempt 3" in fails(1, "logs", queue.path, "flaky", "--attempt", "3",
                                   cwd=tmp_path)
    fails(2, "logs", queue.path, "flaky", "--attempt", "1", "--follow", cwd=tmp_path)


def follow(path, job, cwd):
    return subprocess.Popen([sys.executable, "-m", "nbqueue", "logs", str(path), job, "--follow"],
                            cwd=cwd, env=python_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_logs_follow_prints_output_as_it_arrives_until_the_job_ends(queue, tmp_path):
    gate = tmp_path / "gate"
    h = queue.submit(jobs.print_then_wait, str(gate), name="talker")
    proc = follow(queue.path, "talker", tmp_path)
    try:
        # printed while the job still runs: it waits for the gate file
        assert proc.stdout.readline() == "first line\n"  # type: ignore[union-attr]
        assert proc.stdout.readline() == "to stderr\n"  # type: ignore[union-attr]
        assert h.state == "running"
        gate.touch()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out == "last line\n"
    assert f"job {h.id} (talker) is done" in err and "Traceback" not in err

    failing = queue.submit(jobs.boom, "kaput", name="failing")
    failing.wait(timeout=60)
    proc = follow(queue.path, "failing", tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "ended failed: ValueError: kaput" in err


def test_logs_follow_stops_quietly_on_ctrl_c(queue, tmp_path):
    gate = tmp_path / "never"
    h = queue.submit(jobs.print_then_wait, str(gate), name="forever")
    proc = follow(queue.path, h.id, tmp_path)
    try:
        assert proc.stdout.readline() == "first line\n"  # type: ignore[union-attr]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        gate.touch()
    assert proc.returncode == 130
    assert err == ""
    assert h.result(timeout=60) == "printed"


def facts(shown: str) -> dict[str, str]:
    """The ``key  value`` lines at the top of ``nbqueue show``."""
    out = {}
    for line in shown.splitlines()[1:]:
        if not line.strip():
            break
        key, value = line.split(None, 1)
        out[key] = value
    return out


def test_show_tells_everything_about_a_job(queue, tmp_path):
    queue.set_resource("gpu", capacity=2)
    prep = queue.submit(jobs.chatty, 3, name="prep")
    fit = queue.submit(jobs.boom, "bad input", needs=[prep], resources={"gpu": 2}, retries=1,
                       retry_delay=0.1, name="fit")
    with pytest.raises(nbqueue.JobFailed):
        fit.result(timeout=60)
    queue.stop()
    out = ok("show", queue.path, "fit", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0] == f"fit  (job {fit.id})"
    shown = facts(out)
    assert shown["state"] == "failed: ValueError: bad input"
    assert shown["attempts"] == "2 (attempt 2: attempt 1 failed with ValueError)"
    assert shown["needs"] == "prep (done)" and shown["resources"] == "gpu=2"
    assert shown["call"] == "boom('bad input')" and shown["options"] == "retries 1"
    assert shown["times"].startswith("created ") and "ended" in shown["times"]
    error = lines.index("error: ValueError: bad input")
    assert lines[error + 1].strip() == "Traceback (most recent call last):"
    assert "tests/jobs.py" in lines[error + 2] and "in boom" in lines[error + 2]
    assert "nbqueue/runtime.py" not in out
    assert lines[-1] == "output: none"

    out = ok("show", queue.path, prep.id[:8], cwd=tmp_path)
    assert "output:\n    line 0\n    line 1\n    line 2\n" in out
    assert out.endswith("result:\n    3\n")
    as_json = json.loads(ok("show", queue.path, "fit", "--json", cwd=tmp_path))
    assert as_json["needs"] == [{"id": prep.id, "name": "prep", "state": "done"}]
    assert [a["attempt"] for a in as_json["attempts"]] == [1, 2]
    assert "in boom" in as_json["error"]["traceback"] and as_json["result"] is None


def test_jobs_and_show_name_what_a_job_needs(q, tmp_path):
    prep = q.submit(jobs.add, 1, 1, after="in 1h", name="prep")
    fit = q.submit(jobs.add, 2, 2, needs=[prep], name="fit")
    row = next(line for line in ok("jobs", q.path, cwd=tmp_path).splitlines()
               if line.startswith("fit "))
    assert row.endswith("needs prep") and prep.id not in row
    assert fit.reason == f"needs job {prep.id}"  # as stored: others parse it
    assert facts(ok("show", q.path, "fit", cwd=tmp_path))["state"] == "waiting: needs prep"


def test_reviews_show_what_there_is_to_judge(queue, tmp_path):
    from nbqueue.cellrun import run_cell

    cell = queue.submit(run_cell, "print('hi')\ny = 2 * x", {"x": 21}, ["y"], label="calc",
                        name="calc")
    cell.result(timeout=60)
    queue.stop()
    q = queue
    text = q.review("Check the text", payload="Q3: revenue 1.2M (+8%)\nall regions up")
    table = q.review("Check the table", payload=HtmlOnly())
    outputs = q.review("Review calc", payload=ResultOf(cell.id), needs=[cell])
    long = q.review("Check the long one", payload="\n".join(f"row {i}" for i in range(100)))
    out = ok("reviews", q.path, cwd=tmp_path)
    blocks = {b.splitlines()[0].split("  ")[0]: b for b in out.strip().split("\n\n")}
    assert "    Q3: revenue 1.2M (+8%)\n    all regions up" in blocks[text.id]
    assert "    Q3 revenue\n    north 1.2M" in blocks[table.id]
    assert "    y = 42" in blocks[outputs.id] and "the outputs of job" not in blocks[outputs.id]
    assert "    row 19\n    … 80 more lines" in blocks[long.id]
    listed = json.loads(ok("reviews", q.path, "--json", cwd=tmp_path))
    by_id = {g["id"]: g for g in listed}
    assert by_id[outputs.id]["summary"] == "y = 42"
    assert by_id[text.id]["payload"] == "Q3: revenue 1.2M (+8%)\nall regions up"
