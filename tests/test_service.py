"""The detached service, run for real: ``python -m nbqueue worker DIR --detach`` and
``nbqueue stop`` in subprocesses, ``Queue(path, detach=True)`` here and in client
interpreters that are SIGKILLed, services SIGKILLed mid-job. Nothing is mocked; every
service a test starts is stopped (then SIGKILLed, if need be) by the ``qdir`` fixture."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jobs
import psutil
import pytest
from conftest import pid_alive, python_env, run_python, start_python, wait_for, wait_gone

import nbqueue


def nbq(*args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nbqueue ARGS`` to its end."""
    return subprocess.run([sys.executable, "-m", "nbqueue", *map(str, args)], cwd=cwd,
                          env=python_env(), text=True, capture_output=True, timeout=timeout)


def ok(*args: object, cwd: Path) -> str:
    proc = nbq(*args, cwd=cwd)
    assert proc.returncode == 0, f"nbqueue {args} exited {proc.returncode}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stdout


def services(path: Path) -> list[psutil.Process]:
    """The service processes (``python -m nbqueue.daemon PATH``) of this directory."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if ("nbqueue.daemon" in cmd and str(path) in cmd
                and p.info["status"] != psutil.STATUS_ZOMBIE):
            found.append(p)
    return found


def service_pid(path: Path) -> int:
    return int(json.loads((path / "service.json").read_text())["pid"])


def starts(log: Path) -> list[list[str]]:
    """The start lines ``jobs.hang`` wrote: ``[value, pid, time]`` each."""
    if not log.exists():
        return []
    return [line.split()[1:] for line in log.read_text().splitlines() if line.startswith("start")]


@pytest.fixture
def qdir(tmp_path: Path) -> Iterator[Path]:
    """A queue directory path; every service started on it is stopped at teardown
    (``nbqueue stop``, then SIGKILL for whatever is left, workers included)."""
    path = tmp_path / "q"
    yield path
    if path.exists():
        nbq("stop", path, cwd=tmp_path, timeout=120)
    left = services(path)
    workers = {c.pid for p in left for c in p.children(recursive=True)}
    for p in left:
        p.kill()
    wait_gone({p.pid for p in left} | workers, message="processes of the services left")


# -- nbqueue worker --detach, status, stop ---------------------------------------------------


def test_detach_serves_is_listed_and_a_second_one_attaches(qdir, tmp_path):
    out = ok("worker", qdir, "--detach", "-w", "1", cwd=tmp_path)
    pid = service_pid(qdir)
    assert f"serving {qdir} in the background: pid {pid}" in out
    assert f"log {qdir / 'service.log'}" in out and f"nbqueue stop {qdir}" in out
    assert pid_alive(pid) and [p.pid for p in services(qdir)] == [pid]
    # its own session, no terminal, not the child of the command that started it
    proc = psutil.Process(pid)
    assert os.getsid(pid) == pid and proc.terminal() is None
    assert proc.ppid() != os.getpid()

    q = nbqueue.Queue(qdir, start=False)
    try:
        assert q.submit(jobs.add, 2, 3).result(timeout=60) == 5

        status = json.loads(ok("status", qdir, "--json", cwd=tmp_path))
        service = status["service"]
        assert service["pid"] == pid and service["alive"] and service["detached"]
        assert service["workers"] == 1 and service["executor"] == "loky"
        assert service["log"] == str(qdir / "service.log") and service["running"] == 0
        assert [d["pid"] for d in status["dispatchers"]] == [pid]
        text = ok("status", qdir, cwd=tmp_path)
        assert f"service: pid {pid}, detached" in text and "1 loky workers" in text

        # the log: private, never a symlink, with the serving line and the job's end
        log = qdir / "service.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        for name in ("service.lock", "service.json", "service.err"):
            assert stat.S_IMODE((qdir / name).stat().st_mode) == 0o600
        assert f"serving {qdir} with 1 local worker processes (pid {pid})" in log.read_text()
        wait_for(lambda: "(add) done" in log.read_text(), message="the job's end in the log")

        again = ok("worker", qdir, "--detach", cwd=tmp_path)
        assert f"already serving {qdir}: the service pid {pid}" in again
        assert service_pid(qdir) == pid and [p.pid for p in services(qdir)] == [pid]
    finally:
        q.close()


def test_three_started_at_the_same_moment_make_one_service(qdir, tmp_path):
    nbqueue.Queue(qdir, start=False).close()  # the directory exists, with no service
    procs = [subprocess.Popen([sys.executable, "-m", "nbqueue", "worker", str(qdir), "--detach",
                               "-w", "1"], cwd=tmp_path, env=python_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    pid = service_pid(qdir)
    assert all(f"pid {pid}" in out for out, _ in outs), outs
    assert sum("in the background" in out for out, _ in outs) >= 1
    # the losers leave by themselves; one service stays
    wait_for(lambda: [p.pid for p in services(qdir)] == [pid], timeout=30,
             message="exactly one service")
    assert json.loads(ok("status", qdir, "--json", cwd=tmp_path))["service"]["pid"] == pid


def test_stop_hands_a_running_job_back_and_it_runs_again(qdir, tmp_path):
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    ok("worker", qdir, "--detach", "-w", "1", cwd=tmp_path)
    pid = service_pid(qdir)
    q = nbqueue.Queue(qdir, start=False)
    try:
        h = q.submit(jobs.hang, str(log), "long", str(gate))
        wait_for(lambda: starts(log), message="the job started in the service")
        worker = int(starts(log)[0][1])

        out = ok("stop", qdir, cwd=tmp_path)
        assert f"stopped the service of {qdir} (pid {pid})" in out
        assert not pid_alive(pid) and services(qdir) == []
        wait_gone({worker}, message="the job's worker process")
        record = h.record()
        assert record.state == "ready", record  # handed back, not failed
        assert not (qdir / "service.json").exists()
        assert json.loads(ok("status", qdir, "--json", cwd=tmp_path))["service"] is None
        assert "no service serves" in ok("stop", qdir, cwd=tmp_path)

        again = nbqueue.Queue(qdir, detach=True, workers=1)  # a new service picks it up
        assert again.service is not None and again.service.pid != pid
        wait_for(lambda: len(starts(log)) == 2, message="the job started again")
        gate.touch()
        assert h.result(timeout=60) == "long"
        again.close()
    finally:
        q.close()
    assert "stopping; running jobs go back to the queue" in (qdir / "service.log").read_text()


def test_stop_with_no_service_and_no_queue(tmp_path):
    q = nbqueue.Queue(tmp_path / "q", start=False)
    q.close()
    assert ok("stop", tmp_path / "q", cwd=tmp_path).strip() == \
        f"nbqueue stop: no service serves {tmp_path / 'q'}"
    missing = nbq("stop", tmp_path / "nope", cwd=tmp_path)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not (tmp_path / "nope").exists()


def test_idle_exit_leaves_by_itself(qdir, tmp_path):
    q = nbqueue.Queue(qdir, start=False)
    try:
        later = q.submit(jobs.add, 1, 1, after="in 1h")  # a far time does not keep it up
        gate = q.review("Someone decides")  # nor a person
        ok("worker", qdir, "--detach", "-w", "1", "--idle-exit", "1", cwd=tmp_path)
        pid = service_pid(qdir)
        assert json.loads(ok("status", qdir, "--json", cwd=tmp_path))["service"][
            "idle_exit"] == 1.0
        wait_for(lambda: not pid_alive(pid), timeout=30, message="the idle service to exit")
        assert not (qdir / "service.json").exists()  # a clean exit
        assert later.state == "waiting" and gate.state == "review"
        assert "(--idle-exit): exiting" in (qdir / "service.log").read_text()
    finally:
        q.close()


def test_a_submit_revives_a_service_that_left(qdir, tmp_path):
    """A detached queue whose service has gone (here: it left by --idle-exit) starts a new
    one at its next submit, instead of queueing work nobody runs."""
    q = nbqueue.Queue(qdir, detach=True, workers=1)
    try:
        first = q.service.pid
        ok("stop", qdir, cwd=tmp_path)
        wait_for(lambda: not pid_alive(first), timeout=30, message="the service to stop")
        time.sleep(nbqueue.queue.SERVICE_CHECK_EVERY)  # the last check is older than that
        h = q.submit(jobs.add, 2, 3, key=None)
        assert h.result(timeout=60) == 5
        assert q.service.alive and q.service.pid != first
    finally:
        q.close()


# -- Queue(path, detach=True) -----------------------------------------------------------------


def test_queue_detach_starts_a_service_or_reuses_it(qdir):
    q = nbqueue.Queue(qdir, detach=True, workers=1)
    try:
        assert q.dispatcher is None  # nothing runs in this process
        service = q.service
        assert service is not None and service.alive and service.workers == 1
        assert q.submit(jobs.square, 7).result(timeout=60) == 49
        q.join(timeout=60)
        q.close()  # leaves the service running
        assert pid_alive(service.pid)

        q = nbqueue.Queue(qdir, detach=True)
        assert q.service.pid == service.pid and q.workers == 1
        assert q.status()["service"]["pid"] == service.pid
        h = q.submit(jobs.add, 20, 22)
        assert h.wait(timeout=60).state == "done" and h.result() == 42
    finally:
        q.close()
    with pytest.raises(ValueError, match="--detach --dask ADDRESS"):
        nbqueue.Queue(qdir, detach=True, executor=object())


def test_a_killed_client_leaves_its_job_running_in_the_service(qdir, tmp_path):
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    # the client leads a process group of its own, as a kernel does; killing the whole
    # group (what jupyter_client does to a kernel) must not reach the service
    client = start_python(f"""
        import sys, time, jobs, nbqueue
        q = nbqueue.Queue({str(qdir)!r}, detach=True, workers=1)
        h = q.submit(jobs.hang, {str(log)!r}, "long", {str(gate)!r})
        print(h.id, q.service.pid, flush=True)
        time.sleep(300)
        """, cwd=tmp_path, start_new_session=True)
    line = client.stdout.readline()  # type: ignore[union-attr]
    assert line, client.communicate()[1]
    job_id, pid = line.split()
    wait_for(lambda: starts(log), message="the job started in the service")
    worker = int(starts(log)[0][1])
    os.killpg(client.pid, signal.SIGKILL)
    client.communicate(timeout=60)

    time.sleep(1.0)  # a worker would notice a dead parent within 0.5 s
    assert pid_alive(int(pid)) and pid_alive(worker)
    gate.touch()
    out = run_python(f"""
        import nbqueue
        q = nbqueue.Queue({str(qdir)!r}, detach=True)
        print(q.service.pid, q.job({job_id!r}).result(timeout=60))
        q.close()
        """, cwd=tmp_path).stdout.split()
    assert out == [pid, "long"]
    assert starts(log) == [["long", str(worker), starts(log)[0][2]]]  # started once


def test_a_service_killed_mid_job_is_replaced_and_the_job_finishes(qdir, tmp_path):
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    q = nbqueue.Queue(qdir, detach=True, workers=1)
    try:
        old = q.service
        assert old is not None
        h = q.submit(jobs.hang, str(log), "long", str(gate))
        wait_for(lambda: starts(log), message="the job started in the service")
        worker = int(starts(log)[0][1])
        os.kill(old.pid, signal.SIGKILL)  # as a power cut would
        wait_gone({old.pid, worker}, message="the killed service and its worker")

        status = json.loads(ok("status", qdir, "--json", cwd=tmp_path))
        assert status["service"]["pid"] == old.pid and not status["service"]["alive"]
        assert "!! SERVICE DIED" in ok("status", qdir, cwd=tmp_path)

        again = nbqueue.Queue(qdir, detach=True, workers=1)  # after the reboot
        new = again.service
        assert new is not None and new.alive and new.pid != old.pid
        wait_for(lambda: len(starts(log)) == 2, message="the job started again")
        gate.touch()
        assert h.result(timeout=60) == "long"
        again.close()
    finally:
        q.close()


# -- a real kernel, restarted --------------------------------------------------------------------


def test_a_kernel_restart_leaves_detached_cell_jobs_running_and_cells_attach(qdir, tmp_path):
    manager = pytest.importorskip("jupyter_client.manager")
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    cells = [
        f"%load_ext nbqueue\n%nbq use {qdir} --detach -w 1",
        "x = 21",
        # a cell job: logs its start and its worker's pid, waits for the gate
        f"%%enqueue double\nimport os, time\nwith open({str(log)!r}, 'a') as f:\n"
        f"    f.write(f'start x {{os.getpid()}} {{time.time()}}\\n')\n"
        f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.02)\ny = x * 2",
        "q = %nbq queue\nprint('service', q.service.pid, 'job', q.jobs(name='double')[-1].id)",
    ]
    km = manager.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path), env=python_env({"NBQUEUE_DIR": str(tmp_path / "mine")}))
    try:
        kc = km.client()
        kc.start_channels()

        def run(code: str) -> str:
            out: list[str] = []

            def hook(msg: dict) -> None:
                content = msg["content"]
                if msg["msg_type"] == "stream":
                    out.append(content["text"])
                elif msg["msg_type"] == "error":
                    out.append("\n".join(content["traceback"]))

            reply = kc.execute_interactive(code, timeout=120, output_hook=hook)
            assert reply["content"]["status"] == "ok", "".join(out)
            return "".join(out)

        kc.wait_for_ready(timeout=120)
        before = [run(cell) for cell in cells][-1].split()
        wait_for(lambda: starts(log), message="the cell job started in the service")
        worker = int(starts(log)[0][1])

        km.restart_kernel(now=False)  # a shutdown request, then the kernel's group is gone
        kc.wait_for_ready(timeout=120)
        time.sleep(1.0)  # a worker would notice a dead parent within 0.5 s
        assert pid_alive(int(before[1])) and pid_alive(worker)

        after = [run(cell) for cell in cells][-1].split()
        assert after == before  # the same service; the cell attached to the same job
        gate.touch()
        run("%nbq wait double")
        assert run("print(y)").strip() == "42"
        assert [s[:2] for s in starts(log)] == [["x", str(worker)]]  # started once
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=False)
