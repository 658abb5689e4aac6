"""``%%enqueue`` and ``%nbq`` in a real in-process IPython shell with a real queue.

The shell is IPython's singleton (``InteractiveShell.instance()``): every test loads
the extension on its own queue directory and unloads it, clearing the namespace.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("IPython")

from conftest import wait_for  # noqa: E402
from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.cellrun import CellOutputs  # noqa: E402
from nbqueue.cellview import RESULT_REF_MIME  # noqa: E402
from nbqueue.errors import InputNotDefined  # noqa: E402
from nbqueue.widgets import payload_html  # noqa: E402

FLAG_WAIT = "import os, time\nwhile not os.path.exists({flag!r}):\n    time.sleep(0.02)\n"


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shell = InteractiveShell.instance()
    monkeypatch.setenv("NBQUEUE_DIR", str(tmp_path / "q"))
    shell.reset(new_session=False)
    shell.extension_manager.load_extension("nbqueue")
    try:
        yield shell
    finally:
        shell.extension_manager.unload_extension("nbqueue")
        shell.reset(new_session=False)


def queue_of(ip) -> nbqueue.Queue:
    return ip.run_line_magic("nbq", "queue")


def enqueue(ip, line: str, cell: str) -> None:
    ip.run_cell_magic("enqueue", line, cell)


def test_load_opens_default_queue_and_twice_is_harmless(ip, tmp_path):
    q = queue_of(ip)
    assert q.path == tmp_path / "q"
    assert q.dispatcher is not None and q.dispatcher.alive
    nbqueue.load_ipython_extension(ip)  # a second load finds the magics registered
    assert queue_of(ip) is q


def test_inputs_captured_at_submit_and_outputs_come_back(ip):
    ip.run_cell("import math\nbase = 3")
    enqueue(ip, "sq", "root = math.sqrt(base)\nsq = base ** 2\nsq")
    ip.user_ns["base"] = 100  # changed after submit: the job has its own copy
    assert "sq" not in ip.user_ns
    ip.run_line_magic("nbq", "wait sq")
    assert ip.user_ns["sq"] == 9
    assert ip.user_ns["root"] == pytest.approx(3 ** 0.5)
    result = ip.run_line_magic("nbq", "result sq")
    assert isinstance(result, CellOutputs) and dict(result) == {"root": 3 ** 0.5, "sq": 9}
    assert result.display == {"text/plain": "9"}
    assert [j.name for j in queue_of(ip).jobs(state="done")] == ["sq"]


def test_outputs_come_back_at_the_next_cell(ip):
    enqueue(ip, "later", "answer = 6 * 7")
    job = queue_of(ip).jobs(name="later")[0]
    job.result(timeout=60)
    assert "answer" not in ip.user_ns
    ip.run_cell("pass")  # the pre_run_cell hook brings it back
    assert ip.user_ns["answer"] == 42


@pytest.mark.parametrize("line", [
    "--bogus", "--priority high", "--after 'next blue moon'", "--out 1x", "--out a,class",
    "--needs nosuchjob", "--resources gpu=two", "--timeout -1", "--retries -2", "a b",
])
def test_bad_flags_raise_usage_error_and_create_nothing(ip, line):
    ip.user_ns["x"] = 1
    with pytest.raises(UsageError):
        enqueue(ip, line, "y = x + 1")
    assert sum(queue_of(ip).counts().values()) == 0


def test_magics_inside_the_cell_are_refused(ip):
    with pytest.raises(UsageError, match="worker"):
        enqueue(ip, "m", "%time y = 1")
    assert sum(queue_of(ip).counts().values()) == 0


def test_unpicklable_input_is_a_usage_error_naming_it(ip):
    ip.run_cell("import threading\nlock = threading.Lock()")
    with pytest.raises(UsageError, match="lock"):
        enqueue(ip, "u", "held = lock.locked()")
    assert sum(queue_of(ip).counts().values()) == 0


def test_out_names_only_those(ip):
    enqueue(ip, "--out b outs", "a = 1\nb = a + 1")
    ip.run_line_magic("nbq", "wait outs")
    assert ip.user_ns["b"] == 2 and "a" not in ip.user_ns
    assert dict(queue_of(ip).jobs(name="outs")[0].result()) == {"b": 2}


def test_out_name_not_assigned_fails_the_job(ip):
    enqueue(ip, "--out nope missing", "a = 1")
    with pytest.raises(nbqueue.JobFailed, match="nope"):
        ip.run_line_magic("nbq", "wait missing")


def test_unpicklable_output_is_left_out_with_a_warning(ip):
    enqueue(ip, "locky", "import threading\nlock = threading.Lock()\nn = 1")
    with pytest.warns(UserWarning, match="lock"):
        ip.run_line_magic("nbq", "wait locky")
    assert ip.user_ns["n"] == 1 and "lock" not in ip.user_ns
    job = queue_of(ip).jobs(name="locky")[0]
    assert job.state == "done"
    assert set(job.result().dropped) == {"lock"}
    assert "cannot be pickled" in job.logs


def test_a_name_a_pending_cell_assigns_becomes_a_need(ip, tmp_path):
    flag = tmp_path / "go"
    enqueue(ip, "first", FLAG_WAIT.format(flag=str(flag)) + "x = 5")
    q = queue_of(ip)
    first = q.jobs(name="first")[0]
    ip.user_ns["x"] = -1  # assigned after first's submit: second reads the pending cell's x
    enqueue(ip, "second", "y = x * 2")
    second = q.jobs(name="second")[0]
    assert second.state == "waiting" and first.id in second.reason
    flag.touch()
    ip.run_line_magic("nbq", "wait second")
    assert ip.user_ns["y"] == 10
    ip.run_line_magic("nbq", "wait first")
    assert ip.user_ns["x"] == -1  # ...but the notebook keeps its own, newer x
    assert ip.run_line_magic("nbq", "result first x") == 5


def test_same_cell_same_inputs_attaches_and_force_runs_anew(ip, tmp_path):
    side = tmp_path / "runs.txt"
    cell = f"open({str(side)!r}, 'a').write('ran\\n')\nvalue = k * 10"
    ip.user_ns["k"] = 1
    enqueue(ip, "side", cell)
    ip.run_line_magic("nbq", "wait side")
    enqueue(ip, "side", cell)  # attaches: finished, so the variables are back at once
    ip.run_line_magic("nbq", "wait side")
    assert side.read_text() == "ran\n"
    assert len(queue_of(ip).jobs(name="side")) == 1

    # a kernel restart: a new queue object on the same directory, an empty namespace
    ip.extension_manager.unload_extension("nbqueue")
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("nbqueue")
    ip.user_ns["k"] = 1
    enqueue(ip, "side", cell)
    assert ip.user_ns["value"] == 10  # came straight back, nothing ran
    assert side.read_text() == "ran\n"

    ip.user_ns["k"] = 2  # another input: another job
    enqueue(ip, "side", cell)
    ip.run_line_magic("nbq", "wait side")
    assert ip.user_ns["value"] == 20
    enqueue(ip, "side --force", cell)
    ip.run_line_magic("nbq", "wait side")
    assert side.read_text() == "ran\n" * 3
    assert len(queue_of(ip).jobs(name="side")) == 3


def test_chain_keys_are_stable_across_a_restart(ip, tmp_path):
    side = tmp_path / "b.txt"
    enqueue(ip, "a", "x = 21")
    enqueue(ip, "b", f"open({str(side)!r}, 'a').write('b\\n')\ny = x * 2")  # a pending
    ip.run_line_magic("nbq", "wait b")
    assert ip.user_ns["y"] == 42
    ip.extension_manager.unload_extension("nbqueue")
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("nbqueue")
    enqueue(ip, "a", "x = 21")  # done: x comes back from job a
    enqueue(ip, "b", f"open({str(side)!r}, 'a').write('b\\n')\ny = x * 2")
    assert ip.user_ns["y"] == 42
    assert side.read_text() == "b\n"
    assert len(queue_of(ip).jobs(name="b")) == 1


def test_review_gate_holds_the_variables_until_approved(ip, capsys):
    enqueue(ip, "report --review", "total = 40 + 2")
    q = queue_of(ip)
    ip.run_line_magic("nbq", "wait report")  # returns at once once the gate is in review
    assert "waiting for a person" in capsys.readouterr().out
    assert "total" not in ip.user_ns
    gate, = q.reviews()
    assert gate.name == "Review report"
    assert RESULT_REF_MIME in json.loads(q._store.payload(gate.id))
    assert "42" in payload_html(q, gate.id)  # the panel shows the cell's outputs
    ip.run_cell("pass")
    assert "total" not in ip.user_ns
    q.approve(gate.id, comment="fine")
    ip.run_line_magic("nbq", "wait report")
    assert ip.user_ns["total"] == 42
    assert gate.result().comment == "fine"


def test_rejected_review_never_binds(ip):
    enqueue(ip, "bad --review", "verdict = 'no'")
    q = queue_of(ip)
    ip.run_line_magic("nbq", "wait bad")
    q.reject(q.reviews()[0].id, comment="wrong")
    with pytest.raises(nbqueue.JobCancelled):
        ip.run_line_magic("nbq", "wait bad")
    assert "verdict" not in ip.user_ns


def test_cancel_retry_result(ip, capsys):
    q = queue_of(ip)
    enqueue(ip, "later --after 'in 2h'", "z = 1")
    job = q.jobs(name="later")[0]
    assert job.state == "waiting"
    ip.run_line_magic("nbq", "result later")
    assert "is waiting" in capsys.readouterr().out
    ip.run_line_magic("nbq", "cancel later")
    assert job.state == "cancelled"
    ip.run_line_magic("nbq", f"retry {job.id}")
    assert job.state != "cancelled"
    ip.run_line_magic("nbq", "wait later")
    assert ip.user_ns["z"] == 1
    with pytest.raises(UsageError):
        ip.run_line_magic("nbq", "cancel nothing-by-that-name")
    with pytest.raises(UsageError):
        ip.run_line_magic("nbq", "frobnicate")


def test_a_name_nothing_defines_is_a_name_error_at_submit(ip, tmp_path):
    with pytest.raises(NameError, match="'zero' is not defined") as info:
        enqueue(ip, "oops", "ratio = 1 / zero")
    assert isinstance(info.value, InputNotDefined)
    assert not (tmp_path / "q").exists()  # nothing submitted, nothing created
    # names the cell defines itself (in any order), builtins and pending cells are fine
    enqueue(ip, "defs", "def f():\n    return g()\ndef g():\n    return len('ab')\nr = f()")
    enqueue(ip, "uses", "s = r + 1")
    ip.run_line_magic("nbq", "wait uses")
    assert ip.user_ns["s"] == 3
    assert [j.name for j in queue_of(ip).jobs()] == ["defs", "uses"]


def test_failed_cell_shows_remote_traceback_and_retry_after_fix(ip):
    ip.user_ns["zero"] = 0
    enqueue(ip, "oops", "ratio = 1 / zero")
    with pytest.raises(nbqueue.JobFailed, match="ZeroDivisionError") as info:
        ip.run_line_magic("nbq", "wait oops")
    assert "1 / zero" in str(info.value)  # the remote traceback shows the cell's line
    ip.user_ns["zero"] = 0.5
    enqueue(ip, "oops", "ratio = 1 / zero")  # new inputs, new job
    ip.run_line_magic("nbq", "wait oops")
    assert ip.user_ns["ratio"] == 2


def test_interrupt_stops_the_wait_not_the_job(ip, tmp_path, capsys):
    flag = tmp_path / "go"
    enqueue(ip, "slow", FLAG_WAIT.format(flag=str(flag)) + "done = True")
    job = queue_of(ip).jobs(name="slow")[0]
    main = threading.main_thread().ident

    def interrupt() -> None:
        def waiting() -> bool:
            frame = sys._current_frames().get(main)
            while frame is not None:
                if frame.f_code.co_name == "_wait_one":
                    return True
                frame = frame.f_back
            return False
        wait_for(waiting, message="the wait to start")
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    ip.run_line_magic("nbq", "wait slow")
    thread.join()
    assert "stopped waiting" in capsys.readouterr().out
    assert job.state in ("ready", "running")
    flag.touch()
    ip.run_line_magic("nbq", "wait slow")
    assert ip.user_ns["done"] is True


def test_wait_after_restart_brings_back_a_cell_it_did_not_submit(ip):
    enqueue(ip, "old", "kept = [1, 2]")
    queue_of(ip).jobs(name="old")[0].result(timeout=60)
    ip.extension_manager.unload_extension("nbqueue")
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("nbqueue")
    ip.run_line_magic("nbq", "wait old")
    assert ip.user_ns["kept"] == [1, 2]


def test_use_switches_queue(ip, tmp_path):
    other = tmp_path / "other"
    ip.run_line_magic("nbq", f"use {other}")
    assert queue_of(ip).path == other
    enqueue(ip, "there", "w = 1")
    ip.run_line_magic("nbq", "wait there")
    assert nbqueue.Queue(other, start=False).jobs(name="there")[0].state == "done"


def test_a_dead_dispatcher_is_reported_by_the_next_magic(ip, capsys):
    from nbqueue import job as J
    from nbqueue.store.ids import new_id

    q = queue_of(ip)
    # a job row without a function: claiming it breaks the dispatcher thread for real
    q._store.submit_many([J.NewJob(id=new_id(), name="corrupt", options=J.Options())])
    q.dispatcher.wake()
    wait_for(lambda: not q.dispatcher.alive, message="the dispatcher to die")
    capsys.readouterr()
    ip.run_line_magic("nbq", "queue")
    out = capsys.readouterr().out
    assert "dispatcher thread" in out and "died" in out and "Error" in out


def test_a_job_handle_read_by_the_cell_arrives_as_its_result(ip):
    import jobs

    ip.user_ns["h"] = queue_of(ip).submit(jobs.add, 1, 2)
    enqueue(ip, "usesh", "v = h + 1")
    ip.run_line_magic("nbq", "wait usesh")
    assert ip.user_ns["v"] == 4


def test_a_cell_reading_a_reviewed_cell_waits_for_the_review(ip):
    enqueue(ip, "a --review", "x = 1")
    enqueue(ip, "b", "y = x + 1")
    q = queue_of(ip)
    ip.run_line_magic("nbq", "wait a")  # returns once a's gate is in review
    gate, = q.reviews()
    b = q.jobs(name="b")[0]
    assert b.state == "waiting" and gate.id in b.reason
    q.approve(gate.id)
    ip.run_line_magic("nbq", "wait b")
    assert ip.user_ns["y"] == 2 and ip.user_ns["x"] == 1


def refreshers() -> int:
    return sum(t.name == "nbqueue-refresher" and t.is_alive() for t in threading.enumerate())


def test_nbq_shows_the_panel_and_keeps_only_the_newest_live(ip, capsys):
    queue_of(ip)  # the directory exists: %nbq shows its panel
    before = refreshers()
    for _ in range(6):
        ip.run_line_magic("nbq", "")
    assert "<nbqueue panel" in capsys.readouterr().out
    assert refreshers() == before + 4
    ip.run_line_magic("nbq", "reviews")
    assert refreshers() == before + 4
    ip.extension_manager.unload_extension("nbqueue")
    assert refreshers() == before
    ip.extension_manager.load_extension("nbqueue")


def test_rerunning_a_failed_reviewed_chain_runs_it_again_under_the_same_ids(ip, tmp_path):
    source = tmp_path / "input.txt"
    a_cell = f"text = open({str(source)!r}).read()"
    enqueue(ip, "a --review", a_cell)  # fails: the file is missing
    enqueue(ip, "b", "size = len(text)")
    q = queue_of(ip)
    with pytest.raises(nbqueue.JobFailed, match="FileNotFoundError"):
        ip.run_line_magic("nbq", "wait a")
    gate, = q.jobs(name="Review a")
    b = q.jobs(name="b")[0]
    assert gate.state == "cancelled" and b.state == "cancelled"

    source.write_text("hello")
    enqueue(ip, "a --review", a_cell)  # same cell, same inputs: the same jobs, run again
    enqueue(ip, "b", "size = len(text)")
    assert [j.id for j in q.jobs(name="Review a")] == [gate.id]
    assert [j.id for j in q.jobs(name="b")] == [b.id]
    ip.run_line_magic("nbq", "wait a")  # returns at the review
    assert gate.state == "review" and b.state == "waiting"
    q.approve(gate.id)
    ip.run_line_magic("nbq", "wait b")
    assert ip.user_ns["size"] == 5 and ip.user_ns["text"] == "hello"


def magics_of(ip):
    return ip.magics_manager.registry["NbqueueMagics"]


def entry_named(ip, name: str):
    entry, = [e for e in magics_of(ip)._cells.values() if e.name == name]
    return entry


def test_load_creates_nothing_until_the_first_submit(ip, tmp_path, capsys):
    qdir = tmp_path / "q"
    assert not qdir.exists()
    ip.run_line_magic("nbq", "")
    ip.run_line_magic("nbq", "reviews")
    assert "nothing is queued yet" in capsys.readouterr().out
    with pytest.raises(UsageError, match="nothing was queued yet"):
        ip.run_line_magic("nbq", "wait fit")
    ip.run_line_magic("nbq", "wait")  # nothing pending: returns
    ip.run_cell("pass")
    assert not qdir.exists()
    enqueue(ip, "first", "a = 1")
    assert qdir.is_dir()
    ip.run_line_magic("nbq", "wait first")
    assert ip.user_ns["a"] == 1


def test_a_name_rebound_after_the_submit_is_kept(ip, tmp_path):
    flag = tmp_path / "go"
    enqueue(ip, "loop", FLAG_WAIT.format(flag=str(flag)) + "for y in range(3):\n    pass\nz = y")
    ip.user_ns["y"] = "mine"  # the user's y, assigned after the submit
    flag.touch()
    ip.run_line_magic("nbq", "wait loop")
    assert ip.user_ns["y"] == "mine" and ip.user_ns["z"] == 2
    entry = entry_named(ip, "loop")
    assert entry.kept == ["y"] and "z" in entry.bound
    text = entry.status.state and "\n".join(entry.status.state.notes)
    assert "kept the notebook's y" in text and "%nbq result loop y" in text
    assert ip.run_line_magic("nbq", "result loop y") == 2
    assert ip.run_line_magic("nbq", "result loop z") == 2
    with pytest.raises(UsageError, match="no 'w'.*y, z|no 'w'"):
        ip.run_line_magic("nbq", "result loop w")
    with pytest.raises(UsageError, match="third word"):
        ip.run_line_magic("nbq", "wait loop y")


def test_the_newer_of_two_cells_assigning_a_name_wins(ip, tmp_path):
    flag = tmp_path / "go"
    enqueue(ip, "older", FLAG_WAIT.format(flag=str(flag)) + "v = 'older'")
    enqueue(ip, "newer", "v = 'newer'")
    ip.run_line_magic("nbq", "wait newer")  # the newer one ends first
    assert ip.user_ns["v"] == "newer"
    flag.touch()
    ip.run_line_magic("nbq", "wait older")
    assert ip.user_ns["v"] == "newer" and entry_named(ip, "older").kept == ["v"]

    flag2 = tmp_path / "go2"
    enqueue(ip, "first", "w = 'first'")
    enqueue(ip, "second", FLAG_WAIT.format(flag=str(flag2)) + "w = 'second'")
    ip.run_line_magic("nbq", "wait first")  # the older one ends first: the newer overwrites
    assert ip.user_ns["w"] == "first"
    flag2.touch()
    ip.run_line_magic("nbq", "wait second")
    assert ip.user_ns["w"] == "second" and entry_named(ip, "second").kept == []


def test_the_cell_follows_a_cancel_and_a_retry_made_by_another_process(ip, tmp_path):
    from conftest import run_python

    flag = tmp_path / "go"
    enqueue(ip, "slow", FLAG_WAIT.format(flag=str(flag)) + "back = 'after the retry'")
    q = queue_of(ip)
    job = q.jobs(name="slow")[0]
    status = entry_named(ip, "slow").status
    wait_for(lambda: job.state == "running", message="the job to run")
    act = "import nbqueue\nq = nbqueue.Queue({path!r}, start=False)\nq.job({id!r}).{verb}()"
    run_python(act.format(path=str(q.path), id=job.id, verb="cancel"))
    wait_for(lambda: status.state.record.state == "cancelled", timeout=60,
             message="the cell's status to say cancelled")
    ip.run_cell("pass")
    assert "back" not in ip.user_ns
    flag.touch()
    run_python(act.format(path=str(q.path), id=job.id, verb="retry"))
    wait_for(lambda: status.state.record.state == "done", timeout=60,
             message="the cell's status to follow the retried job to done")
    assert status.state.record.attempt == 2
    assert "attempt 2: run again after attempt 1 ended cancelled" in status.state.record.note
    ip.run_cell("pass")  # the variables of the retried job come back
    assert ip.user_ns["back"] == "after the retry"
    note, = status.state.notes
    assert note.startswith("back in the notebook: ") and note.endswith(", back")
