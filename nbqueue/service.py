"""The service of a queue directory: the one process that serves it for as long as it
runs, whoever opens or leaves the queue meanwhile (``nbqueue worker DIR --detach``,
``Queue(path, detach=True)``, ``%nbq use DIR --detach``, or ``nbqueue worker DIR`` in
the foreground, say under systemd).

Its files in the queue directory (created mode 0600, never through a symbolic link):

- ``service.lock``: the service holds an exclusive ``flock`` on it for its lifetime,
  so there is at most one per directory. The lock is the truth about liveness: a probe
  takes a shared lock without waiting, on an open file description of its own; if it
  cannot, a service is alive. The record below is never trusted alone.
- ``service.json``: the service's record (``ServiceRecord``), replaced atomically, and
  removed when it stops cleanly; left behind, it tells that a service died.
- ``service.log`` (rotated, ``LOG_BYTES`` x ``LOG_BACKUPS``): a detached service's log;
  ``service.err``: whatever reaches its fd 2 (the traceback of a crash).

This module is the clients' side (find, start, stop) and what the service itself
needs to take its place; the serving loop is ``nbqueue.daemon``. A detached service is
started in a session of its own (``setsid``) through an intermediate process that exits
at once (a double fork): the process that asked for it (perhaps a long-lived kernel)
never keeps a child, nor a zombie, and a kernel's shutdown, which signals its own
process group, never reaches it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import site
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from . import job as J
from .errors import ServiceError, UnsafeQueue
from .store.directory import Owner
from .store.files import open_private

LOCK = "service.lock"
RECORD = "service.json"
LOG = "service.log"
CRASH = "service.err"
LOG_BYTES = 1_000_000
LOG_BACKUPS = 3
CRASH_BYTES = 256_000  # service.err is emptied when a service starts with more in it
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
IDLE_HORIZON = 60.0  # a job due within this keeps an idle-exit service alive (as for join)

STARTING, SERVING, FAILED = "starting", "serving", "failed"


@dataclass(frozen=True)
class ServiceRecord:
    """What ``service.json`` says about a directory's service, and whether it lives."""

    path: str
    pid: int
    owner: str  # host|boot|pid|start|nonce (``Owner``): this very process, not its pid alone
    since: float
    workers: int
    executor: str  # "loky" or "dask"
    address: str | None  # the dask scheduler's address
    log: str | None  # its log file; None: a foreground worker (its terminal, its journal)
    detached: bool
    state: str  # STARTING, SERVING, FAILED
    idle_exit: float | None = None
    error: str | None = None
    alive: bool = False  # not stored: whether it holds the lock now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceRecord:
        names = {f.name for f in fields(cls)} - {"alive"}
        return cls(**{k: v for k, v in data.items() if k in names})

    def identity(self) -> Owner | None:
        return Owner.parse(self.owner)


# -- files --------------------------------------------------------------------------------


def write_record(record: ServiceRecord) -> None:
    """Replace ``service.json`` atomically (a temporary file renamed over it)."""
    path = Path(record.path) / RECORD
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    data = {k: v for k, v in record.to_dict().items() if k != "alive"}
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_record(path: Path) -> ServiceRecord | None:
    """The record in ``service.json`` as it is (alive=False), or None if none is readable."""
    try:
        fd = open_private(path / RECORD, os.O_RDONLY)
    except (OSError, UnsafeQueue):
        return None
    try:
        with os.fdopen(fd) as f:
            return ServiceRecord.from_dict(json.load(f))
    except (ValueError, TypeError):
        return None


def remove_record(path: Path, owner: str) -> None:
    """Remove ``service.json`` if it is this owner's (a clean stop)."""
    record = read_record(path)
    if record is not None and record.owner == owner:
        with contextlib.suppress(FileNotFoundError):
            (path / RECORD).unlink()


def lock_held(path: Path) -> bool:
    """Whether a service holds ``service.lock`` now (a shared lock, tried and let go)."""
    try:
        fd = os.open(path / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # missing (never served), or a symlink: no service holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the shared lock if it was taken
    return False


class ServiceLock:
    """The exclusive ``flock`` on ``service.lock`` a service holds while it lives."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, wait: float = 0.0) -> ServiceLock | None:
        """The lock, or None if another service holds it. ``wait``: keep trying this long
        (a probe holds it for microseconds at a time)."""
        fd = open_private(path / LOCK, os.O_RDWR | os.O_CREAT)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.01)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- finding ----------------------------------------------------------------------------------


def find_service(path: str | os.PathLike[str]) -> ServiceRecord | None:
    """The directory's service: its record with ``alive=True`` while it holds the lock
    and its dispatcher runs; a record with ``alive=False`` if one was left behind by a
    service that did not stop cleanly (killed, crashed, the machine restarted) or whose
    dispatcher died (``state == FAILED``, with its ``error``); None if no service serves
    it (or one is starting and has not written its record yet)."""
    path = Path(path)
    record, holder = _holder(path)
    if record is None:
        return None
    if holder:
        return replace(record, alive=record.state != FAILED)
    if lock_held(path):
        return None  # a stale record; the holder is starting and will replace it
    identity = record.identity()
    if identity is not None and identity.is_alive() and record.state != FAILED:
        return None  # it let the lock go just now: it is stopping cleanly
    return record


def _holder(path: Path) -> tuple[ServiceRecord | None, bool]:
    """The record, and whether its process is alive and holds the lock now."""
    held = lock_held(path)
    record = read_record(path)
    if record is None or not held:
        return record, False
    identity = record.identity()
    return record, identity is not None and identity.is_alive()


def _serving(path: Path) -> ServiceRecord | None:
    record = find_service(path)
    return record if record is not None and record.alive and record.state == SERVING else None


def has_work(store: Any, now: float | None = None, horizon: float = IDLE_HORIZON) -> bool:
    """Whether a job is ready, running, or waiting for a time within ``horizon`` seconds
    (a retry's backoff, a near ``after``), or a schedule fires within it; jobs waiting for
    a person or a far time are not work to stay up for."""
    counts = store.counts()
    if counts.get(J.READY) or counts.get(J.RUNNING):
        return True
    limit = (time.time() if now is None else now) + horizon
    return any(due is not None and due < limit for due in (store.next_due(),
                                                             store.next_firing()))


def running_jobs(store: Any, record: ServiceRecord) -> int:
    """How many jobs the service's dispatcher runs now (their owner is its process)."""
    identity = record.identity()
    if identity is None or not record.alive:
        return 0
    prefix = str(identity).rsplit("|", 1)[0] + "|"
    return sum(1 for owner in store.running_owners() if owner.startswith(prefix))


# -- starting ---------------------------------------------------------------------------------

# The intermediate process of the double fork: starts the service in a new session with
# no terminal and stdin/stdout on /dev/null (stderr: service.err, inherited), prints its
# pid and exits, so the service is reparented away from whoever asked for it.
_SPAWN = (
    "import subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, "
    "start_new_session=True)\n"
    "print(p.pid, flush=True)\n"
)


def ensure_service(path: str | os.PathLike[str], *, workers: int | None = None,
                   address: str | None = None, idle_exit: float | None = None,
                   timeout: float = START_TIMEOUT) -> tuple[ServiceRecord, bool]:
    """Make sure a service serves the (existing) queue directory ``path``: start one if
    none is alive, else use it. Returns once it serves: its record, and whether this
    call started it. ``ServiceError`` (with the end of its log) if it could not start."""
    path = Path(path)
    found = _serving(path)
    if found is not None:
        return found, False
    crash = path / CRASH
    crash_from = crash.stat().st_size if crash.exists() else 0
    pid = _spawn(path, service_command(path, workers=workers, address=address,
                                       idle_exit=idle_exit))
    deadline = time.monotonic() + timeout
    while True:
        found = _serving(path)
        if found is not None:
            return found, found.pid == pid
        if not _running(pid):
            record, holder = _holder(path)
            if holder and record is not None and record.state == FAILED:
                raise ServiceError(
                    f"the service of {path} (pid {record.pid}) still holds {path / LOCK} but "
                    f"its dispatcher died; stop it (nbqueue stop {path}, or kill "
                    f"{record.pid}), then start it again.\n" + tail_text(path, crash_from))
            if not lock_held(path):
                raise ServiceError(f"the service of {path} did not start (pid {pid} "
                                   "exited).\n" + tail_text(path, crash_from))
        if time.monotonic() > deadline:
            raise ServiceError(
                f"the service of {path} (pid {pid}) did not confirm it serves within "
                f"{timeout:g}s; stop it with `nbqueue stop {path}` or `kill {pid}`.\n"
                + tail_text(path, crash_from))
        time.sleep(0.02)


def service_command(path: Path, *, workers: int | None = None, address: str | None = None,
                    idle_exit: float | None = None) -> list[str]:
    """The command line of a detached service's process."""
    argv = [sys.executable, "-m", "nbqueue.daemon", str(path)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if address:
        argv += ["--dask", address]
    if idle_exit is not None:
        argv += ["--idle-exit", repr(float(idle_exit))]
    return argv


def service_env() -> dict[str, str]:
    """The environment of a service started from here: this process's, with its
    ``sys.path`` as ``PYTHONPATH``, so that the functions this process imports (from its
    working directory, from a path a notebook added) import in the service's workers too,
    as they do in the workers of an in-process dispatcher."""
    env = dict(os.environ)
    # what a new interpreter finds by itself (the standard library, site-packages) stays
    # where it belongs, after PYTHONPATH
    own = {os.path.abspath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix,
                                         sys.base_exec_prefix, site.getuserbase())}
    paths = [os.path.abspath(p or os.curdir) for p in sys.path]
    paths = [p for p in paths if os.path.isdir(p)
             and not any(p == o or p.startswith(o + os.sep) for o in own)]
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _spawn(path: Path, argv: list[str]) -> int:
    """Start ``argv`` detached (see ``_SPAWN``); its pid."""
    crash = open_private(path / CRASH, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        done = subprocess.run([sys.executable, "-I", "-S", "-c", _SPAWN, *argv],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=crash,
                              env=service_env(), text=True, timeout=60, check=False)
    finally:
        os.close(crash)
    try:
        return int(done.stdout.split()[0])
    except (IndexError, ValueError):
        raise ServiceError(f"could not start the service of {path}: its launcher exited "
                           f"{done.returncode}; see {path / CRASH}") from None


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
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


def tail_text(path: Path, crash_from: int = 0, lines: int = 20) -> str:
    """The last lines of the service's log, and what reached its fd 2 since ``crash_from``."""
    parts = []
    log_lines = _tail(path / LOG, 0, lines)
    if log_lines:
        parts.append(f"the end of {path / LOG}:\n" + "\n".join(log_lines))
    crash_lines = _tail(path / CRASH, crash_from, lines)
    if crash_lines:
        parts.append(f"the end of {path / CRASH}:\n" + "\n".join(crash_lines))
    return "\n".join(parts) or f"{path / LOG} and {path / CRASH} say nothing."


def _tail(file: Path, start: int, lines: int) -> list[str]:
    try:
        fd = open_private(file, os.O_RDONLY)
    except (OSError, UnsafeQueue):
        return []
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(start if start <= size else 0, size - 64_000))
        text = f.read().decode("utf-8", "replace")
    return text.rstrip().splitlines()[-lines:] if text.strip() else []


# -- stopping -----------------------------------------------------------------------------------


def stop_service(path: str | os.PathLike[str], *,
                 timeout: float = STOP_TIMEOUT) -> ServiceRecord | None:
    """Stop the directory's service gracefully: SIGTERM to it (once its pid and start time
    are checked), then wait until it is gone. Its dispatcher stops as ``Queue.close``
    does: running jobs go back to the queue without using an attempt. Returns the record
    of the service stopped, None if none was alive; ``ServiceError`` after ``timeout``."""
    path = Path(path)
    record = _alive_record(path)
    if record is None:
        return None
    identity = record.identity()
    if identity is None or not identity.is_alive():
        return None  # it ended by itself in between
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lock_held(path) or (identity.is_alive() and _running(record.pid)):
        if time.monotonic() > deadline:
            where = f"its log: {record.log}" if record.log else "see its terminal or journal"
            raise ServiceError(
                f"the service of {path} (pid {record.pid}) did not stop within {timeout:g}s "
                f"of SIGTERM ({where}). To end it at once: kill -9 {record.pid} (the next "
                "process that serves or writes to the queue then puts its running jobs back)")
        time.sleep(0.05)
    return record


def _alive_record(path: Path, wait: float = 10.0) -> ServiceRecord | None:
    """The record of the process that holds the lock (serving, or failed and not gone
    yet); while a service holds the lock but has not written its record yet (it is
    starting), wait up to ``wait`` for it."""
    deadline = time.monotonic() + wait
    while True:
        record, holder = _holder(path)
        if holder:
            return record
        if not lock_held(path) or time.monotonic() > deadline:
            return None
        time.sleep(0.05)
