"""Where jobs run: local worker slots (loky) or a dask cluster.

Local: one single-worker ``loky.ProcessPoolExecutor`` per slot. A worker that dies
breaks every future of its executor, so one worker per executor keeps a crash, a
timeout kill or a cancel to its own job. Workers ignore SIGINT (Interrupt in a
notebook signals the whole process group) and exit when their parent dies. The
process-wide ``get_reusable_executor()`` is not used: the user's own joblib calls
share it.

Dask: one ``DaskSlot`` per slot on a ``distributed.Client``, one task per job. The
scheduler's ``allowed-failures`` is set to 0 so that a worker that dies fails only its
own job, at once, and nbqueue decides about retries. ``distributed`` is imported only
when a client is given.
"""

from __future__ import annotations

import abc
import ipaddress
import logging
import os
import re
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from loky import ProcessPoolExecutor

from . import runtime

log = logging.getLogger(__name__)


class Slot(abc.ABC):
    """One place where a job runs at a time (plus one handed ahead)."""

    @abc.abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` here; futures complete in submission order."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop whatever runs here now; the slot is usable again afterwards."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop for good."""

    def pids(self) -> list[int]:
        return []


class LokySlot(Slot):
    """A single-worker loky executor of its own."""

    def __init__(self) -> None:
        self._executor = self._new()

    @staticmethod
    def _new() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, initializer=runtime.init_worker,
                                   initargs=(os.getpid(),))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        try:
            return self._executor.submit(fn, *args)
        except Exception:  # broken by a dead worker: replace it, try once more
            self._replace()
            return self._executor.submit(fn, *args)

    def pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return [p.pid for p in list(processes.values()) if p.pid]

    def kill(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._replace()

    def _replace(self) -> None:
        old = self._executor
        try:
            old.shutdown(wait=False, kill_workers=True)
        except Exception:
            log.debug("shutting down a broken slot failed", exc_info=True)
        self._executor = self._new()

    def shutdown(self) -> None:
        try:
            self._executor.shutdown(wait=True, kill_workers=True)
        except Exception:
            log.debug("slot shutdown failed", exc_info=True)


class DaskSlot(Slot):
    """A slot backed by a ``distributed.Client``: one job at a time per slot.

    Each job is one dask task (``key="nbqueue-<name>-<uuid>"``, so never merged with
    another, and ``retries=0``: nbqueue owns retries). ``kill`` cancels the dask
    future and interrupts the task's thread on its worker with an asynchronous
    exception: that stops Python code at its next bytecode, but not a call that
    stays in C (``time.sleep``, a socket read, a long numpy operation) until it
    returns; dask has no way to kill one task's thread. The job itself is recorded
    as failed or cancelled at once, whatever its thread still does.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._current: Any = None  # the dask future of the job handed here last

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        task = args[0] if args else None
        name = _KEY_UNSAFE.sub("_", str(getattr(task, "name", None) or _label(fn)))[:40]
        key = f"nbqueue-{name}-{uuid.uuid4().hex}"
        dask_future = self._client.submit(_run_interruptible, key, fn, *args, key=key,
                                          pure=False, retries=0)
        self._current = dask_future
        return _as_concurrent(dask_future)

    def kill(self) -> None:
        current, self._current = self._current, None
        if current is None or current.done():
            return
        try:
            current.cancel()
        except Exception:  # a closed client: nothing left to cancel
            log.debug("cancelling dask task %s failed", current.key, exc_info=True)
        # client.run waits for every worker's answer: never make the dispatcher wait
        threading.Thread(target=_interrupt_everywhere, args=(self._client, [current.key]),
                         name="nbqueue-dask-interrupt", daemon=True).start()

    def shutdown(self) -> None:
        self.kill()


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def _label(fn: Any) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def _as_concurrent(dask_future: Any) -> Future[Any]:
    """A concurrent Future mirroring a dask one; the dask future is released once read,
    so the cluster never keeps (or recomputes) a result nbqueue already has."""
    out: Future[Any] = Future()
    out.set_running_or_notify_cancel()

    def done(f: Any) -> None:
        try:
            if f.status == "cancelled":
                out.set_exception(RuntimeError(
                    "the dask cluster dropped the task (the client disconnected, or the "
                    "scheduler restarted)"))
            else:
                out.set_result(f.result())
        except BaseException as exc:  # noqa: B036 - a dead worker, a lost task: data for the store
            out.set_exception(exc)
        finally:
            try:
                f.release()
            except Exception:
                pass

    dask_future.add_done_callback(done)
    return out


# -- inside a dask worker: a registry of job threads, so that kill() can interrupt them ----


class JobInterrupted(BaseException):
    """Raised inside a job's thread on a dask worker when nbqueue stops it (timeout, cancel).

    A ``BaseException``, so that a job's ``except Exception`` does not swallow it."""


_threads: dict[str, int] = {}
_threads_lock = threading.Lock()


def _run_interruptible(key: str, fn: Callable[..., Any], *args: Any) -> Any:
    with _threads_lock:
        _threads[key] = threading.get_ident()
    try:
        return fn(*args)
    finally:
        with _threads_lock:
            _threads.pop(key, None)
            # an interrupt that arrived as the job ended must not hit dask's own code
            _set_async_exc(threading.get_ident(), None)


def _interrupt(keys: list[str]) -> int:
    """Raise ``JobInterrupted`` in the threads running these tasks on this worker."""
    hit = 0
    with _threads_lock:
        for key in keys:
            ident = _threads.get(key)
            if ident is not None:
                hit += _set_async_exc(ident, JobInterrupted)
    return hit


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> int:
    import ctypes

    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None))


def _interrupt_everywhere(client: Any, keys: list[str]) -> None:
    try:
        client.run(_interrupt, keys, on_error="ignore")
    except Exception:  # the cluster is gone or closing: nothing runs there any more
        log.debug("interrupting dask tasks %s failed", keys, exc_info=True)


# -- choosing and checking a dask client --------------------------------------------------


def check_executor(executor: Any) -> None:
    """``executor=`` takes None or a synchronous ``distributed.Client``."""
    if executor is None:
        return
    if not (hasattr(executor, "submit") and hasattr(executor, "nthreads")
            and hasattr(executor, "scheduler")):
        raise TypeError(f"executor={executor!r}: give None (local worker processes) or a "
                        "distributed.Client (a dask cluster)")
    if getattr(executor, "asynchronous", False):
        raise TypeError("executor= needs a synchronous distributed.Client, not one made with "
                        "asynchronous=True")


def cluster_threads(executor: Any) -> int | None:
    """The total threads of a dask cluster's workers now (None if it has none yet)."""
    try:
        total = sum(executor.nthreads().values())
    except Exception:
        log.debug("could not count the threads of %r", executor, exc_info=True)
        return None
    return total or None


def no_scheduler_retries(client: Any) -> bool:
    """Set the scheduler's ``allowed-failures`` to 0: a task whose worker dies fails at
    once with ``KilledWorker`` and nbqueue decides about retries. This is cluster-wide
    (the scheduler has one setting for every task). Returns whether it could be set."""

    def set_allowed_failures(dask_scheduler: Any = None) -> int:
        # nested so that it travels by value: the scheduler may not have nbqueue installed
        dask_scheduler.allowed_failures = 0
        return 0

    try:
        client.run_on_scheduler(set_allowed_failures)
    except Exception:
        log.warning("could not set distributed.scheduler.allowed-failures to 0 on %r; a job "
                    "whose dask worker dies may be re-run by dask before nbqueue sees it fail",
                    client, exc_info=True)
        return False
    return True


def channel_address(executor: Any) -> tuple[str, str]:
    """Where the live channel listens, and the host workers are told to connect to.

    Local workers: 127.0.0.1. A dask cluster whose scheduler is on a loopback address
    (a ``LocalCluster``): 127.0.0.1 as well. Otherwise the channel listens on every
    interface and tells workers this host's address on the route to the scheduler;
    ``$NBQUEUE_CHANNEL_HOST`` overrides that address (NAT, several interfaces).
    """
    if executor is None:
        return "127.0.0.1", "127.0.0.1"
    override = os.environ.get("NBQUEUE_CHANNEL_HOST")
    if override:
        return "0.0.0.0", override
    host = _scheduler_host(executor)
    if host is None or _is_loopback(host):
        return "127.0.0.1", "127.0.0.1"
    return "0.0.0.0", _route_to(host)


def _scheduler_host(executor: Any) -> str | None:
    try:
        from distributed.comm import get_address_host

        address = getattr(executor.scheduler, "address", None) or \
            executor.scheduler_info()["address"]
        return str(get_address_host(address))
    except Exception:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            return False


def _route_to(host: str) -> str:
    """This host's address on the route to ``host`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def make_slots(n: int, executor: Any = None) -> list[Slot]:
    if executor is None:
        return [LokySlot() for _ in range(n)]
    no_scheduler_retries(executor)
    return [DaskSlot(executor) for _ in range(n)]
