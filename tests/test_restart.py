"""The notebook's promise under kernel restarts, with real kernels and nothing mocked.

Each test starts real IPython kernels with jupyter_client, runs cells as a user writes
them (``%load_ext nbqueue``, ``%nbq use DIR``, an ``%%enqueue fit`` job of a dozen
seconds with progress and prints, ``forecast`` reading its variables, ``report
--review``), disrupts the kernel while ``fit`` runs (Kernel > Restart, Shut Down, a
SIGKILL), and checks what the queue directory and the next kernel say:

- the running job is handed back, not failed and not poisoned (``deaths`` 0), with a
  record saying why; nothing downstream is cancelled;
- running the same cells again in the next kernel attaches to the same jobs (same ids,
  by key) and finishes them; the variables come back into that kernel;
- the job ran once per attempt (a side-effect file has one ``start`` line each), the
  last record says which attempt it is and why, and its log has a header line between
  the attempts' output;
- no process of a stopped or killed kernel survives.

``fit`` runs up to 20 s, but ends after a second once the test creates the ``go`` file:
so the disruption surely lands mid-job, and the attempt that finishes takes a second.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import python_env, wait_for

import nbqueue

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

from jupyter_client import KernelManager  # noqa: E402

FIT = '''%%enqueue fit
import os, time
import nbqueue
with open({side!r}, "a") as f:
    f.write(f"start {{os.getpid()}}\\n")
print("fit: loading data")
steps = 80
for i in range(steps):
    time.sleep(0.25)
    nbqueue.progress(i + 1, steps)
    if i % 4 == 0:
        print(f"epoch {{i}}")
    if i >= 3 and os.path.exists({go!r}):
        break
coef = [1.5, -2.0]
score = 0.93
'''
FORECAST = '''%%enqueue forecast
forecast = [c * 2 for c in coef]
print("forecast", forecast)
'''
REPORT = '''%%enqueue report --review
summary = f"score {score}: forecast {forecast}"
summary
'''
NAMES = ("fit", "forecast", "report", "Review report")
VALUES = {"coef": [1.5, -2.0], "score": 0.93, "forecast": [3.0, -4.0],
          "summary": "score 0.93: forecast [3.0, -4.0]"}
GONE_WITHIN = 10.0  # seconds for the processes of a stopped or killed kernel to end


def tree(pid: int) -> list[psutil.Process]:
    """A process and every process under it (empty if it is gone)."""
    try:
        top = psutil.Process(pid)
        return [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def running(procs: list[psutil.Process]) -> list[int]:
    """The pids of ``procs`` still running (that very process, not a later one with its
    pid; a zombie does not count)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return sorted(out)


def gone(procs: list[psutil.Process], what: str, timeout: float = GONE_WITHIN,
         ) -> None:
    wait_for(lambda: not running(procs), timeout=timeout, interval=0.05,
             message=f"{what} ({running(procs)} still running)")


def kill(procs: list[psutil.Process]) -> None:
    """SIGKILL whichever of ``procs`` still runs (after a failure: leave nothing behind)."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running():
                p.kill()


class Kernel:
    """A real ipykernel, started by jupyter_client, and a client on it."""

    def __init__(self, cwd: Path, env: dict[str, str], connection_file: Path) -> None:
        self.km = KernelManager(kernel_name="python3", connection_file=str(connection_file))
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    @property
    def pid(self) -> int:
        return self.km.provisioner.process.pid

    def processes(self) -> list[psutil.Process]:
        """The kernel's process and every process under it (its workers, ...)."""
        return tree(self.pid)

    def run(self, code: str, timeout: float = 60) -> str:
        """Execute ``code``; the text it printed and displayed. An error fails the test."""
        out: list[str] = []

        def hook(msg: dict) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind in ("display_data", "execute_result"):
                out.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                out.append("\n".join(content["traceback"]))

        reply = self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        text = "".join(out)
        assert reply["content"]["status"] == "ok", f"{code!r} failed in the kernel:\n{text}"
        return text

    def values(self, *names: str) -> dict[str, object]:
        """The values of notebook variables, read in the kernel (``user_expressions``)."""
        reply = self.kc.execute_interactive(
            "", timeout=30, user_expressions={n: n for n in names})
        found = {}
        for name, result in reply["content"]["user_expressions"].items():
            assert result["status"] == "ok", f"{name} is not defined in the kernel: {result}"
            found[name] = ast.literal_eval(result["data"]["text/plain"])
        return found

    def restart(self) -> None:
        """Kernel > Restart: a shutdown request with restart, then a new kernel process."""
        self.km.restart_kernel(now=False)
        self.kc.wait_for_ready(timeout=60)

    def stop(self, now: bool = False) -> None:
        """Kernel > Shut Down (``now``: kill it)."""
        self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(now=now)


class Kernels:
    """The kernels a test starts, all shut down at its end; every process that ever ran
    under one of them must then be gone."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = python_env({"IPYTHONDIR": str(tmp / "ipython")})
        self.started: list[Kernel] = []
        self.seen: list[psutil.Process] = []

    def start(self) -> Kernel:
        kernel = Kernel(self.tmp, self.env, self.tmp / f"kernel-{len(self.started)}.json")
        self.started.append(kernel)
        self.note(kernel)
        return kernel

    def note(self, kernel: Kernel) -> list[psutil.Process]:
        """The kernel's processes now, remembered: the end checks that they are gone."""
        found = kernel.processes()
        self.seen += found
        return found

    def close(self) -> None:
        for kernel in self.started:
            try:
                kernel.stop(now=True)
            except Exception as exc:  # keep shutting down the others
                print(f"shutting down a kernel failed: {exc!r}")
        try:
            gone(self.seen, "every kernel process and worker to end", timeout=30)
        finally:
            kill(self.seen)


@pytest.fixture
def kernels(tmp_path: Path) -> Iterator[Kernels]:
    pool = Kernels(tmp_path)
    try:
        yield pool
    finally:
        pool.close()


class Notebook:
    """The notebook's cells, on a queue directory, side-effect and go files in ``tmp``."""

    def __init__(self, tmp: Path, detach: bool = False) -> None:
        self.q = tmp / "q"
        self.side = tmp / "fit-starts.txt"
        self.go = tmp / "go"
        use = f"%nbq use {self.q} --detach -w 1" if detach else f"%nbq use {self.q} -w 1"
        self.cells = ["%load_ext nbqueue", use,
                      FIT.format(side=str(self.side), go=str(self.go)), FORECAST, REPORT]

    def run_all(self, kernel: Kernel) -> str:
        return "".join(kernel.run(cell) for cell in self.cells)

    def starts(self) -> list[int]:
        """The worker pids of the ``fit`` runs that started, in order."""
        if not self.side.exists():
            return []
        return [int(line.split()[1]) for line in self.side.read_text().splitlines()
                if line.startswith("start ")]

    @contextlib.contextmanager
    def queue(self) -> Iterator[nbqueue.Queue]:
        """The queue directory opened from the test (no dispatcher), closed after."""
        q = nbqueue.Queue(self.q, start=False)
        try:
            yield q
        finally:
            q.close()

    def records(self) -> dict[str, nbqueue.job.JobRecord]:
        with self.queue() as q:
            found = {}
            for name in NAMES:
                jobs = q.jobs(name=name)
                assert len(jobs) == 1, f"{len(jobs)} jobs named {name!r}: {jobs}"
                found[name] = jobs[0].record()
            return found

    def fit_log(self) -> str:
        with self.queue() as q:
            return q.jobs(name="fit")[0].logs

    def wait_running(self, attempt: int) -> None:
        """Until attempt ``attempt`` of fit has started and its output reached the store."""
        wait_for(lambda: len(self.starts()) == attempt, timeout=60,
                 message=f"attempt {attempt} of fit to start")
        wait_for(lambda: self.fit_log().count("epoch 0") == attempt, timeout=30,
                 interval=0.1, message=f"the output of attempt {attempt} to reach the log")
        assert not self.go.exists()

    def check_handed_back(self, cause: str, attempt: int) -> dict[str, nbqueue.job.JobRecord]:
        """fit went back to ready, its attempt on record and charged nothing; nothing
        downstream was cancelled."""
        records = self.records()
        fit = records["fit"]
        assert (fit.state, fit.attempt, fit.deaths) == ("ready", attempt, 0), fit
        assert fit.reason == f"{cause} while attempt {attempt} ran; attempt {attempt + 1} " \
                             "comes next", fit
        assert fit.why == f"{cause} while attempt {attempt} ran"
        assert fit.error is None
        for name in NAMES[1:]:
            assert records[name].state == "waiting", records[name]
        return records

    def finish(self, kernel: Kernel) -> None:
        """Let fit end, approve the report's gate, and wait for everything in ``kernel``."""
        self.go.touch()
        said = kernel.run("%nbq wait report", timeout=120)
        assert "waiting for a person" in said, said
        records = self.records()
        assert records["Review report"].state == "review", records
        with self.queue() as q:
            q.approve(records["Review report"].id, comment="fine")
        said = kernel.run("%nbq wait report", timeout=120)
        assert "back in the notebook" in said and "summary" in said, said
        assert kernel.values(*VALUES) == VALUES

    def check_finished(self, attempts: int, causes: list[str]) -> None:
        """fit ran ``attempts`` times, one start line each; its record and log say why."""
        records = self.records()
        assert [r.state for r in records.values()] == ["done"] * len(NAMES), records
        fit = records["fit"]
        assert (fit.attempt, fit.deaths) == (attempts, 0), fit
        assert fit.attempt_note == f"attempt {attempts}: {causes[-1]} while attempt " \
                                   f"{attempts - 1} ran", fit
        assert len(self.starts()) == attempts, self.side.read_text()
        log = self.fit_log()
        headers = [f"--- attempt {n + 1}: {cause} while attempt {n} ran ---"
                   for n, cause in enumerate(causes, start=1)]
        assert [line for line in log.splitlines() if line.startswith("--- ")] == headers, log
        rest = log
        for header in headers:  # each header comes between two attempts' output
            before, found, rest = rest.partition(header + "\n")
            assert found and "fit: loading data\nepoch 0\n" in before, log
        assert rest.startswith("fit: loading data\nepoch 0\n"), log


def test_restart_mid_job_hands_it_back_and_the_cells_attach_and_finish(kernels, tmp_path):
    nb = Notebook(tmp_path)
    kernel = kernels.start()
    nb.run_all(kernel)
    nb.wait_running(1)
    ids = {name: r.id for name, r in nb.records().items()}
    before = kernels.note(kernel)
    old_pid = kernel.pid

    kernel.restart()

    assert kernel.pid != old_pid
    gone(before, "the processes of the kernel before the restart to end")
    nb.check_handed_back("the kernel restarted", 1)
    with nb.queue() as q:
        assert q.jobs(name="fit")[0].record().attempt_note == ""  # it waits to run again

    said = nb.run_all(kernel)  # the same cells in the restarted kernel: they attach
    assert {name: r.id for name, r in nb.records().items()} == ids, said
    nb.wait_running(2)
    kernels.note(kernel)
    nb.finish(kernel)
    nb.check_finished(2, ["the kernel restarted"])


def test_shutdown_mid_job_hands_it_back_and_a_new_kernel_finishes(kernels, tmp_path):
    nb = Notebook(tmp_path)
    kernel = kernels.start()
    nb.run_all(kernel)
    nb.wait_running(1)
    ids = {name: r.id for name, r in nb.records().items()}
    before = kernels.note(kernel)

    busy = kernel.kc.execute("%nbq wait fit")  # a cell is running when the request comes
    wait_for(lambda: (msg := kernel.kc.get_iopub_msg(timeout=30))["parent_header"].get("msg_id")
             == busy and msg["content"].get("execution_state") == "busy",
             timeout=30, message="the %nbq wait cell to start")
    kernel.stop()  # shutdown_kernel(now=False): a shutdown request, no restart

    gone(before, "the processes of the shut-down kernel to end")
    nb.check_handed_back("the kernel shut down", 1)

    kernel = kernels.start()
    nb.run_all(kernel)
    assert {name: r.id for name, r in nb.records().items()} == ids
    nb.wait_running(2)
    kernels.note(kernel)
    nb.finish(kernel)
    nb.check_finished(2, ["the kernel shut down"])


def test_three_sigkills_in_a_row_cost_no_attempt_and_no_death(kernels, tmp_path):
    nb = Notebook(tmp_path)
    ids: dict[str, str] = {}
    cause = "its dispatcher's process died"
    for attempt in (1, 2, 3):
        kernel = kernels.start()
        nb.run_all(kernel)
        if ids:
            assert {name: r.id for name, r in nb.records().items()} == ids
        nb.wait_running(attempt)
        ids = {name: r.id for name, r in nb.records().items()}
        before = kernels.note(kernel)
        worker = nb.starts()[-1]
        assert worker in {p.pid for p in before}  # the job runs in a process under this kernel

        os.kill(kernel.pid, signal.SIGKILL)
        kernel.km.provisioner.process.wait(timeout=30)  # reaped: its pid is gone for good
        gone(before, f"the worker processes of the kernel killed during attempt {attempt}")
        kernel.stop(now=True)

        with nb.queue() as q:  # opened to read, a queue recovers at its first write
            q._store.recover()
        nb.check_handed_back(cause, attempt)

    kernel = kernels.start()
    nb.run_all(kernel)
    assert {name: r.id for name, r in nb.records().items()} == ids
    nb.wait_running(4)
    kernels.note(kernel)
    nb.finish(kernel)
    nb.check_finished(4, [cause] * 3)
    assert len(set(nb.starts())) == 4  # a new worker each time


def nbqueue_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbqueue", *map(str, args)], cwd=cwd,
                          env=python_env(), text=True, capture_output=True, timeout=120)


def service_processes(q: Path) -> list[psutil.Process]:
    """The directory's service process (from its record) and its workers, if it runs."""
    record = q / "service.json"
    if not record.exists():
        return []
    return tree(int(json.loads(record.read_text())["pid"]))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[list[psutil.Process]]:
    """The processes of the detached service of ``tmp_path / "q"``, as the test notes them;
    at the end the service is stopped and they must be gone (else they are SIGKILLed)."""
    procs: list[psutil.Process] = []
    yield procs
    q = tmp_path / "q"
    procs += service_processes(q)
    try:
        if (q / "service.json").exists() or running(procs):
            stopped = nbqueue_cli("stop", q, cwd=tmp_path)
            assert stopped.returncode == 0, stopped.stderr
        gone(procs, "the service and its workers to end", timeout=30)
    finally:
        kill(procs)


def test_detached_service_keeps_running_the_job_through_a_restart(kernels, service, tmp_path):
    nb = Notebook(tmp_path, detach=True)
    kernel = kernels.start()
    said = nb.run_all(kernel)
    assert "served by its detached service" in said, said
    nb.wait_running(1)
    ids = {name: r.id for name, r in nb.records().items()}
    worker = nb.starts()[0]
    service += service_processes(nb.q)
    assert worker in {p.pid for p in service[1:]}  # a worker of the service's
    before = kernels.note(kernel)
    assert worker not in {p.pid for p in before}  # not of the kernel's
    old_pid = kernel.pid

    kernel.restart()

    assert kernel.pid != old_pid
    gone(before, "the processes of the kernel before the restart to end")
    records = nb.records()
    assert (records["fit"].state, records["fit"].attempt) == ("running", 1), records["fit"]
    assert running(service) == sorted(p.pid for p in service)  # the service and its workers
    assert service_processes(nb.q)[0].pid == service[0].pid

    said = nb.run_all(kernel)  # attaches to the job the service still runs
    assert {name: r.id for name, r in nb.records().items()} == ids, said
    nb.finish(kernel)
    assert nb.starts() == [worker]  # it ran once, in the same worker, start to end
    fit = nb.records()["fit"]
    assert (fit.attempt, fit.deaths, fit.attempt_note) == (1, 0, ""), fit
    assert "---" not in nb.fit_log()

    stopped = nbqueue_cli("stop", nb.q, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    gone(service, "the service and its workers to end after nbqueue stop")
    assert not (nb.q / "service.json").exists()
