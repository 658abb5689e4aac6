"""Shared fixtures: real queue directories, real queues, real subprocesses.

Nothing here is a mock. ``queue`` is a started queue with two loky workers,
``stopped_queue`` the same directory opened for submitting only, and
``run_python`` / ``start_python`` run a snippet in a fresh interpreter that can
import ``nbqueue`` and the test job module ``jobs`` (``tests/jobs.py``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import configuration as hypothesis_configuration

import nbqueue

# Hypothesis keeps its example database and caches in ./.hypothesis by default: tests
# never write to the working directory, so give it a private temporary home instead.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="nbqueue-hypothesis-")
hypothesis_configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)

# Every Queue records its directory in a per-user registry (nbqueue/registry.py) for
# the review page: the tests' queues go to a private one, inherited by the children
# they start (kernels, JupyterLab, nbqueue serve), never to the user's own.
_REGISTRY_HOME = tempfile.mkdtemp(prefix="nbqueue-registry-")
os.environ["NBQUEUE_REGISTRY"] = os.path.join(_REGISTRY_HOME, "queues.json")
atexit.register(shutil.rmtree, _REGISTRY_HOME, ignore_errors=True)

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


@pytest.fixture
def queue_dir(tmp_path: Path) -> Path:
    """A path for a queue directory that does not exist yet (``tmp_path / "q"``)."""
    return tmp_path / "q"


@pytest.fixture
def queue(queue_dir: Path) -> Iterator[nbqueue.Queue]:
    """A started queue with ``workers=2``, stopped at teardown."""
    q = nbqueue.Queue(queue_dir, workers=2)
    try:
        yield q
    finally:
        q.stop()


@pytest.fixture
def stopped_queue(queue_dir: Path) -> Iterator[nbqueue.Queue]:
    """A queue opened with ``start=False`` and ``workers=2`` (call ``q.start()`` to run)."""
    q = nbqueue.Queue(queue_dir, workers=2, start=False)
    try:
        yield q
    finally:
        q.close()  # stops it, and closes its files


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child interpreter: the repo and ``tests/`` on ``sys.path``."""
    env = dict(os.environ)
    paths = [str(REPO), str(TESTS)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("NBQUEUE_DIR", None)
    env.update(extra or {})
    return env


def start_python(code: str, *, cwd: Path | str | None = None,
                 env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen[str]:
    """Start ``python -c code`` (dedented) in the background; stdout/stderr are pipes.

    ``cwd`` should be a ``tmp_path``: tests never run children in the working directory.
    """
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=python_env(env), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )


def run_python(code: str, *, cwd: Path | str | None = None, env: dict[str, str] | None = None,
               timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` (dedented) to its end and return the completed process.

    With ``check`` (the default) a non-zero exit fails the test, showing its stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=python_env(env), text=True,
        capture_output=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"child python exited {proc.returncode}\n--- stdout\n{proc.stdout}\n"
                    f"--- stderr\n{proc.stderr}")
    return proc


def wait_for(predicate: Callable[[], object], *, timeout: float = 60, interval: float = 0.02,
             message: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy (and return that).

    The timeout is a generous deadline, never a measurement: exceeding it fails the test.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{message} did not happen within {timeout}s")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_and_reap(proc: subprocess.Popen[str]) -> str:
    """SIGKILL a child and reap it; returns what it printed. Until reaped it is a zombie,
    whose /proc entry still looks alive to recovery."""
    proc.kill()
    out, _ = proc.communicate(timeout=60)
    return out


def wait_gone(pids: set[int], message: str = "worker processes of the killed dispatcher to exit",
              ) -> None:
    """Wait until none of ``pids`` runs (workers watch their parent and exit with it)."""
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=120,
             message=f"{message} ({sorted(pids)})")


CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextmanager
def local_dask_client(local_directory: Path, *, n_workers: int,
                      threads_per_worker: int) -> Iterator[object]:
    """A real dask ``LocalCluster`` of worker processes on 127.0.0.1, and its client.

    Its workers are spawned processes: they inherit ``sys.path`` (so ``tests/jobs.py``
    imports there as ``jobs``), and PYTHONPATH is set as well for their own children.
    Without ``distributed`` the test is skipped, except under ``CI=true``, where it fails."""
    try:
        import distributed
    except ImportError:  # pragma: no cover - the dask extra is not installed
        if CI:
            pytest.fail("distributed is not installed; under CI=true the dask executor must "
                        "be tested (pip install -e '.[test]')")
        pytest.skip("distributed is not installed")
    # IPython's shell (the magics' tests) puts a module without __spec__ in
    # sys.modules["__main__"], which multiprocessing's spawn (the nannies) then reads
    main = sys.modules["__main__"]
    if not hasattr(main, "__spec__"):
        main.__spec__ = None
    tests = str(Path(__file__).parent)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(
            p for p in (tests, os.environ.get("PYTHONPATH")) if p))
        cluster = distributed.LocalCluster(n_workers=n_workers,
                                           threads_per_worker=threads_per_worker,
                                           processes=True, host="127.0.0.1",
                                           # a port of its own: None means 8787, and a
                                           # cluster of another run on it is a warning
                                           dashboard_address=":0",
                                           local_directory=local_directory)
        client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
