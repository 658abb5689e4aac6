"""One job's run inside a worker: its context, its output, its function, its outcome.

``runtime.execute`` runs a plain job here (``in_job``, ``load_function``, ``finish``,
``failure``), a generator's replay (``replay``) and a chunk of a map (``chunkrun``) use
the same pieces. The context of the job running in a thread (``current``) is what
``spawn``, ``progress`` and ``now`` (``injob``) act on; its stdout and stderr are
captured (``_Router``) and sent live over the dispatcher's channel.
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle

from . import job as J
from .channel import ChannelClient
from .errors import NotInJob
from .job import LOG_CAP, NewJob, Outcome, RemoteError, Task, cap_log
from .message import Function, unpack_function

_FLUSH_EVERY = 0.5


class JobContext:
    """The running job, as seen by ``spawn`` and ``progress`` (one per thread)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.spawned: list[NewJob] = []
        self.spawn_prefix = f"{task.id}."
        self.replaying = False
        self.channel = ChannelClient.get(task.endpoint)
        self.output = _Capture(self.channel, task.id)
        self.now: float = time.time()
        self.in_chunk = task.kind == J.CHUNK  # an item of a chunked map: no spawn()

    def send(self, kind: str, value: Any) -> None:
        if self.channel is not None:
            self.channel.send(kind, self.task.id, value)

    def final_log(self) -> str:
        """The job's whole output (capped), flushed: what its outcome carries."""
        if not self.output.written:
            return ""
        self.output.flush()
        return self.output.text()

    def finish(self, value: Any, started: float) -> Outcome:
        """The outcome of the job that returned ``value`` (see ``finish``)."""
        return finish(self, value, started)


_local = threading.local()


def current() -> JobContext | None:
    """The context of the job running in this thread, or None outside a job."""
    return getattr(_local, "context", None)


def require_context(what: str) -> JobContext:
    ctx = current()
    if ctx is None:
        raise NotInJob(
            f"nbqueue.{what}() works inside a running job; outside one, use the Queue's methods"
        )
    return ctx


# -- output capture -----------------------------------------------------------------------


class _Capture:
    """The output of one job: kept whole (capped) and sent live in chunks."""

    def __init__(self, channel: Any, job_id: str) -> None:
        # the channel and the job's id, not the job's context: no reference cycle, so a
        # job's context is freed as it ends, not by the garbage collector
        self._channel = channel
        self._job_id = job_id
        self._parts: list[str] = []
        self._size = 0
        self._pending: list[str] = []
        self._last_send = time.monotonic()
        self._lock = threading.Lock()

    @property
    def written(self) -> bool:
        return bool(self._parts)

    def write(self, text: str) -> None:
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            if self._size > 2 * LOG_CAP:
                whole = "".join(self._parts)[-LOG_CAP:]
                self._parts, self._size = [whole], len(whole)
            self._pending.append(text)
        if time.monotonic() - self._last_send > _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            chunk = "".join(self._pending)
            self._pending = []
            self._last_send = time.monotonic()
        if chunk and self._channel is not None:
            self._channel.send("log", self._job_id, chunk)

    def text(self) -> str:
        with self._lock:
            return cap_log("".join(self._parts))


class _Router(io.TextIOBase):
    """Replaces sys.stdout/sys.stderr in a worker: writes go to the job of the writing
    thread (dask runs several jobs in threads of one process), others pass through."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def write(self, text: str) -> int:
        ctx = current()
        if ctx is not None:
            ctx.output.write(text)
        elif self.original is not None:
            self.original.write(text)
        return len(text)

    def flush(self) -> None:
        if self.original is not None:
            self.original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


_install_lock = threading.Lock()
_active: set[JobContext] = set()


def _install_router() -> None:
    if isinstance(sys.stdout, _Router) and isinstance(sys.stderr, _Router):
        return  # the usual case, from the second job on: no lock
    with _install_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        if not getattr(_install_router, "flusher", None):
            thread = threading.Thread(target=_flush_loop, name="nbqueue-output", daemon=True)
            thread.start()
            _install_router.flusher = thread  # type: ignore[attr-defined]


def _flush_loop() -> None:
    while True:
        time.sleep(_FLUSH_EVERY)
        for ctx in list(_active):
            try:
                ctx.output.flush()
            except Exception:
                pass


def context_of(job_id: str) -> JobContext | None:
    """The context of job ``job_id`` if it runs in this process now."""
    return next((c for c in list(_active) if c.task.id == job_id), None)


# -- the job's function and outcome ----------------------------------------------------

# id -> (its record, the function, whether it is a generator function)
_functions: dict[str, tuple[Function, Callable[..., Any], bool]] = {}


def load_function(function: Function) -> tuple[Callable[..., Any], bool]:
    """The function of a job (loaded once per worker) and whether it is a generator
    function."""
    loaded = _functions.get(function.id)
    if loaded is None:
        fn = unpack_function(function)
        if len(_functions) > 256:
            _functions.clear()
        loaded = _functions[function.id] = (function, fn, inspect.isgeneratorfunction(fn))
    return loaded[1], loaded[2]


def loaded_record(function_id: str) -> Function | None:
    """The record of a function this worker loaded already (its blob is not kept twice)."""
    loaded = _functions.get(function_id)
    return loaded[0] if loaded is not None else None


class in_job:  # noqa: N801 - used as a function: ``with in_job(task) as ctx``
    """The job's context in this thread while it runs: ``spawn``, ``progress`` and its
    output go to it. (A class, not a ``contextmanager`` generator: it is entered for every
    job, and costs a third as much.)"""

    __slots__ = ("ctx",)

    def __init__(self, task: Task) -> None:
        _install_router()
        self.ctx = JobContext(task)

    def __enter__(self) -> JobContext:
        ctx = self.ctx
        _local.context = ctx
        _active.add(ctx)
        return ctx

    def __exit__(self, *exc: object) -> None:
        _active.discard(self.ctx)
        _local.context = None


PLAIN = (type(None), bool, int, float, str, bytes)  # pickled alike by pickle and cloudpickle
# the kinds of every job's outcome, as module names (an enum's class attribute costs ~0.1 us)
# and as plain strings, equal to the members: an outcome travels pickled, and a member
# pickles as a reference to its class (about 1.5 us more to dump and 3 us more to load)
_DONE: J.OutcomeKind = str(J.OutcomeKind.DONE)  # type: ignore[assignment]
_FAILED: J.OutcomeKind = str(J.OutcomeKind.FAILED)  # type: ignore[assignment]


def finish(ctx: JobContext, value: Any, started: float) -> Outcome:
    """The outcome of the job that returned ``value``: ``done`` with it pickled, or
    ``failed`` if it cannot be."""
    try:
        blob = (pickle.dumps(value, protocol=5) if type(value) in PLAIN
                else cloudpickle.dumps(value, protocol=5))
    except Exception as exc:
        error = RemoteError(
            "SubmitError", f"the result of job {ctx.task.id} ({type(value).__name__}) cannot be "
            f"pickled: {exc}. Return plain data (or save it to a file and return the path).")
        return Outcome(ctx.task.id, ctx.task.claim, _FAILED, error=error, log=ctx.final_log(),
                       started=started)
    return Outcome(ctx.task.id, ctx.task.claim, _DONE, result=blob, spawned=tuple(ctx.spawned),
                   log=ctx.final_log(), started=started)


def failure(ctx: JobContext, exc: BaseException, started: float) -> Outcome:
    """The outcome of the job that raised ``exc``, its traceback from the user's code on."""
    return Outcome(ctx.task.id, ctx.task.claim, _FAILED,
                   error=RemoteError.from_exception(exc, user_traceback(exc)),
                   log=ctx.final_log(), started=started)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_traceback(exc: BaseException) -> str:
    """The traceback of a job's exception from the user's code on.

    The frames of nbqueue's own wrappers that lead to the user's code (``runtime.execute``,
    a generator's replay in ``replay``, a cell's ``run_cell``) are left out. An
    exception raised by nbqueue itself before any user code ran keeps the frame that
    raised it."""
    tb = exc.__traceback__
    own = None
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        own, tb = tb, tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else own))
