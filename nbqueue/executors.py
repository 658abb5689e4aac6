"""Where jobs run: local worker slots (loky) or a dask cluster.

Local: one single-worker ``loky.ProcessPoolExecutor`` per slot. A worker that dies
breaks every future of its executor, so one worker per executor keeps a crash, a
timeout kill or a cancel to its own job. Workers ignore SIGINT (Interrupt in a
notebook signals the whole process group) and exit when their parent dies. The
process-wide ``get_reusable_executor()`` is not used: the user's own joblib calls
share it.
"""

from __future__ import annotations

import abc
import logging
import os
import signal
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

    Submitted with ``pure=False`` (dask would merge identical calls) and no dask
    retries (nbqueue owns retries). Killing cancels the dask future; dask cannot
    interrupt a task that runs Python code in a worker thread, so a cancelled or
    timed-out task keeps its worker thread busy until it returns.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._futures: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        dask_future = self._client.submit(fn, *args, pure=False, retries=0)
        self._futures = [f for f in self._futures if not f.done()] + [dask_future]
        return _as_concurrent(dask_future)

    def kill(self) -> None:
        for future in self._futures:
            future.cancel()
        self._futures = []

    def shutdown(self) -> None:
        self.kill()


def _as_concurrent(dask_future: Any) -> Future[Any]:
    out: Future[Any] = Future()
    out.set_running_or_notify_cancel()

    def done(f: Any) -> None:
        try:
            if f.status == "cancelled":
                out.set_exception(RuntimeError("the dask task was cancelled"))
            else:
                out.set_result(f.result())
        except BaseException as exc:  # noqa: B036 - a dead worker, a lost task: data for the store
            out.set_exception(exc)

    dask_future.add_done_callback(done)
    return out


def make_slots(n: int, executor: Any = None) -> list[Slot]:
    if executor is None:
        return [LokySlot() for _ in range(n)]
    return [DaskSlot(executor) for _ in range(n)]
