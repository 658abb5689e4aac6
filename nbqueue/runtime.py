"""What runs inside a worker process: the job wrapper, spawn(), progress(), output capture.

A worker never opens the queue directory. It receives a ``Task`` (the message,
the results of the jobs it refers to, a generator's journal) and returns an
``Outcome`` (result, error, spawned jobs, a generator's next step, the captured
output); progress and output chunks travel live over the dispatcher's channel.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from . import job as J
from . import memory
from .channel import ChannelClient
from .errors import NotInJob
from .job import LOG_CAP, NewJob, Outcome, RemoteError, Step, Task, cap_log
from .lease import LeaseView, WorkerLease
from .message import Function, unpack_args, unpack_function
from .replay import drive

_FLUSH_EVERY = 0.5


# A task as plain tuples, for a local worker (``serve``) and a dask slot's loop: they
# pickle and load in a fraction of the time of the dataclasses. The fields of ``Task``
# up to ``kind``, its function as the fields of ``Function``.
FunctionFields = tuple[str, bytes, bool, str, str, str]
TaskFields = tuple[str, int, str, FunctionFields, bytes, dict[str, bytes], list[Step], Any,
                   "int | None", str]


def task_fields(task: Task) -> TaskFields:
    """A task as it travels to a worker (``TaskFields``)."""
    f = task.function
    return (task.id, task.claim, task.name,
            (f.id, f.blob, f.by_value, f.python, f.cloudpickle, f.label),
            task.args, task.ref_results, task.journal, task.endpoint, task.memory, task.kind)


def task_from_fields(fields: TaskFields) -> Task:
    job_id, claim, name, function, args, ref_results, journal, endpoint, memory, kind = fields
    loaded = _functions.get(function[0])  # a function seen before keeps its record
    record = loaded[0] if loaded is not None else Function(*function)
    return Task(job_id, claim, name, record, args, ref_results, journal, endpoint, memory,
                kind)


class JobContext:
    """The running job, as seen by ``spawn`` and ``progress`` (one per thread)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.spawned: list[NewJob] = []
        self.spawn_prefix = f"{task.id}."
        self.replaying = False
        self.channel = ChannelClient.get(task.endpoint)
        self.output = _Capture(self)
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

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
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
        if chunk:
            self._ctx.send("log", chunk)

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


# -- the job wrapper ----------------------------------------------------------------------

# id -> (its record, the function, whether it is a generator function)
_functions: dict[str, tuple[Function, Callable[..., Any], bool]] = {}


def _load(function: Function) -> tuple[Callable[..., Any], bool]:
    loaded = _functions.get(function.id)
    if loaded is None:
        fn = unpack_function(function)
        if len(_functions) > 256:
            _functions.clear()
        loaded = _functions[function.id] = (function, fn, inspect.isgeneratorfunction(fn))
    return loaded[1], loaded[2]


def execute(task: Task) -> Outcome:
    """Run one job and describe what became of it. Never raises for the job's sake."""
    if task.kind == J.CHUNK:
        from .chunkrun import execute_chunk  # imports this module: loaded on first use

        return execute_chunk(task)
    started = time.time()
    with _in_job(task) as ctx:
        try:
            fn, is_generator = _load(task.function)
            results = {k: pickle.loads(v) for k, v in task.ref_results.items()}
            args, kwargs = unpack_args(task.args, results)
            if is_generator:
                return drive(ctx, fn, args, kwargs, started)
            value = fn(*args, **kwargs)
            if inspect.isgenerator(value):
                return drive(ctx, lambda: value, (), {}, started)
            return finish(ctx, value, started)
        except BaseException as exc:  # noqa: B036 - a job's failure is data, whatever it is
            if isinstance(exc, SystemExit) and exc.code in (None, 0):
                return finish(ctx, None, started)
            return failure(ctx, exc, started)


@contextmanager
def _in_job(task: Task) -> Iterator[JobContext]:
    """The job's context in this thread while it runs: ``spawn``, ``progress`` and its
    output go to it."""
    _install_router()
    ctx = JobContext(task)
    _local.context = ctx
    _active.add(ctx)
    try:
        yield ctx
    finally:
        _active.discard(ctx)
        _local.context = None


_PLAIN = (type(None), bool, int, float, str, bytes)  # pickled alike by pickle and cloudpickle
# the kinds of every job's outcome, as module names (an enum's class attribute costs ~0.1 us)
# and as plain strings, equal to the members: an outcome travels pickled, and a member
# pickles as a reference to its class (about 1.5 us more to dump and 3 us more to load)
_DONE: J.OutcomeKind = str(J.OutcomeKind.DONE)  # type: ignore[assignment]
_FAILED: J.OutcomeKind = str(J.OutcomeKind.FAILED)  # type: ignore[assignment]


def finish(ctx: JobContext, value: Any, started: float) -> Outcome:
    try:
        blob = (pickle.dumps(value, protocol=5) if type(value) in _PLAIN
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
    return Outcome(ctx.task.id, ctx.task.claim, _FAILED,
                   error=RemoteError.from_exception(exc, user_traceback(exc)),
                   log=ctx.final_log(), started=started)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_traceback(exc: BaseException) -> str:
    """The traceback of a job's exception from the user's code on.

    The frames of nbqueue's own wrappers that lead to the user's code (``execute`` here,
    a generator's replay in ``replay``, a cell's ``run_cell``) are left out. An
    exception raised by nbqueue itself before any user code ran keeps the frame that
    raised it."""
    tb = exc.__traceback__
    own = None
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        own, tb = tb, tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else own))


# -- a local worker's loop ------------------------------------------------------------------


def serve(address: Any, authkey: bytes, token: bytes) -> None:
    """The one long loky task of a local worker: take lists of pickled tasks from the
    dispatcher, run them in order, send back each outcome (see ``Reports``). Returns
    when the dispatcher closes the connection (or dies)."""
    from multiprocessing.connection import Client

    conn = Client(address, family="AF_UNIX", authkey=authkey)
    # which slot this worker serves, and which process group to kill to stop its jobs
    conn.send_bytes(b"%s %d %d" % (token, os.getpid(), os.getpgrp()))
    reports = _worker.reports = Reports(conn)
    lease = _worker.lease
    while not reports.broken:
        try:
            packed = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        for i, blob in enumerate(packed):
            task = task_from_fields(pickle.loads(blob))
            _worker.job = task.id  # from here on, the watchdog enforces the lease
            if task.memory is not None:  # ... and the job's memory limit
                _worker.limited = (task.id, task.claim, task.memory)
            if lease is not None and lease.lapsed():
                _stop_group(f"does not start job {task.id}: {LAPSED}")
            outcome = execute(task)
            _worker.job = _worker.limited = None
            reports.send(outcome_bytes(task, outcome), hold=i + 1 < len(packed))


def outcome_bytes(task: Task, outcome: Outcome) -> bytes:
    """A job's outcome pickled for its dispatcher; a failure if it cannot be."""
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a spawned job's options, a journal entry, ...
        return pickle.dumps(Outcome(task.id, task.claim, J.OutcomeKind.FAILED, error=RemoteError(
            type(exc).__name__, f"the outcome of job {task.id} cannot be sent back: {exc}"),
            log=outcome.log, started=outcome.started), protocol=pickle.HIGHEST_PROTOCOL)


HOLD = 0.001  # seconds an outcome may wait for the next one of its batch


class Reports:
    """A worker's outcomes on their way to the dispatcher (a local worker's, or a dask
    slot's loop's). An outcome with another job behind it (in the same batch, or queued
    in the loop) waits for that job's outcome, at most about two ``HOLD`` (a thread
    sends it then): with short jobs, one message and one wake-up of the dispatcher carry
    both. The thread ticks every ``HOLD`` while holds keep coming and sleeps on an event
    once they stop, so a stream of jobs does not wake it twice per pair."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._since = 0.0  # when the oldest held outcome was held
        self._last_hold = 0.0
        self._ticking = False
        self._holding = threading.Event()
        self.broken = False
        self._closed = False
        threading.Thread(target=self._send_late, name="nbqueue-reports", daemon=True).start()

    def close(self) -> None:
        """Send what is held and end the thread (a dask slot's loop that ends)."""
        with self._lock:
            if self._held:
                self._send_held()
            self._closed = True
        self._holding.set()

    def last(self, outcome: bytes, still: Callable[[], bool], then: Callable[[], None]) -> None:
        """Send ``outcome`` after those held, then call ``then`` (which ends the process)
        while holding the lock, so that no other outcome follows it; nothing if ``still()``
        is no longer true once the lock is held."""
        with self._lock:
            if not still():
                return
            self._held.append(outcome)
            self._send_held()
            then()

    def send(self, outcome: bytes, *, hold: bool) -> None:
        with self._lock:
            self._held.append(outcome)
            if not hold:
                self._send_held()
                return
            now = time.monotonic()
            if len(self._held) == 1:
                self._since = now
            self._last_hold = now
            if not self._ticking:
                self._ticking = True
                self._holding.set()

    def _send_held(self) -> None:  # under the lock
        batch, self._held = self._held, []
        try:
            self._conn.send_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # the dispatcher is gone
            self.broken = True

    def _send_late(self) -> None:
        while not self._closed:
            self._holding.wait()
            self._holding.clear()
            while not self._closed:
                time.sleep(HOLD)
                with self._lock:
                    now = time.monotonic()
                    if self._held and now - self._since >= HOLD:
                        self._send_held()
                    if not self._held and now - self._last_hold > 10 * HOLD:
                        self._ticking = False  # holds stopped coming: sleep until the next
                        break


# -- worker process set-up (loky initializer) -----------------------------------------------


class _Worker:
    """A local worker's own state, for its watchdog thread."""

    lease: WorkerLease | None = None  # its dispatcher's lease, once init_worker ran
    job: str | None = None  # the job it runs now
    limited: tuple[str, int, int] | None = None  # (job, claim, bytes) of a job with a limit
    reports: Reports | None = None  # the outcomes' way back (``serve``)


_worker = _Worker()
LAPSED = ("its dispatcher's lease ran out (the dispatcher's process is stopped or stuck, or "
          "could not renew it): another dispatcher may run the job now")


def _stop_group(why: str | None = None) -> None:
    """Kill this worker's process group (this worker, its job and whatever that started),
    saying ``why`` on its stderr (the dispatcher's)."""
    import signal

    if why:
        try:
            os.write(2, f"nbqueue: worker {os.getpid()} {why}\n".encode())
        except OSError:
            pass
    if os.getpgrp() == os.getpid():  # this worker's own group, never another
        os.killpg(0, signal.SIGKILL)
    os._exit(1)


def _over_limit(job_id: str, claim: int, limit: int, used: int) -> None:
    """The job ``job_id`` uses more memory than its limit: send its failure and kill this
    worker's process group (the dispatcher starts another worker for the next job). Not
    if the job ended meanwhile (its outcome is on its way)."""
    from .sizes import exact_text, size_text

    reports = _worker.reports
    if reports is None:
        return
    ctx = next((c for c in list(_active) if c.task.id == job_id), None)
    why = (f"job {job_id} went over its memory limit (memory={exact_text(limit)}): it used "
           f"{size_text(used)}; its worker process was killed, and a new one takes the next "
           "job")
    outcome = Outcome(job_id, claim, J.OutcomeKind.FAILED, error=RemoteError("MemoryError", why),
                      log=ctx.final_log() if ctx is not None else None, worker_ended=True)
    reports.last(pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL),
                 lambda: _worker.limited == (job_id, claim, limit),
                 lambda: _stop_group(f"stops job {job_id}: over its memory limit of "
                                     f"{exact_text(limit)} ({size_text(used)} used)"))


def init_worker(parent_pid: int, lease: LeaseView | None = None) -> None:
    """Run once in each local worker: lead a process group of its own, ignore Interrupt,
    die with the dispatcher's process, stop a job once the dispatcher's ``lease`` ran
    out, and run as a batch process (Linux ``SCHED_BATCH``): a worker woken by new work
    does not preempt the dispatcher or the notebook kernel; it runs when a core is free.

    The process group holds the worker and every process its jobs start (unless one
    starts a session of its own, ``setsid``): the dispatcher kills the group to cancel a
    job, at its timeout, when the worker died under a job and when it stops, and the
    worker kills it when the dispatcher's process died, and when its lease ran out while
    a job runs (see ``lease``: a stopped dispatcher cannot stop its workers, and another
    dispatcher may run their jobs once the lease ended). Being out of the dispatcher's
    group also keeps workers out of what is sent to that group: an ipykernel shutting
    down, jupyter's interrupt and kill (``killpg``), a terminal's Ctrl-C."""
    import signal

    try:
        os.setpgid(0, 0)
    except OSError:  # a session leader (not under loky): its jobs' processes may outlive it
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # out of the terminal's foreground group, a read of it would stop the worker
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        pass
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_BATCH"):
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError:
            pass
    memory.raise_oom_score()  # when memory runs out, the kernel kills a worker first

    watched = _worker.lease = WorkerLease(lease) if lease is not None else None
    every = watched.every if watched is not None else 0.2
    limits = memory.supported()

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:  # the dispatcher's process died
                _stop_group()
            job = _worker.job
            if job is not None and watched is not None and watched.lapsed():
                _stop_group(f"stops job {job}: {LAPSED}")
            limited = _worker.limited if limits else None
            if limited is not None:
                used = memory.tree_rss()
                if used > limited[2]:
                    _over_limit(*limited, used)
            time.sleep(min(every, memory.EVERY) if limited is not None else every)

    threading.Thread(target=watch, name="nbqueue-worker-watch", daemon=True).start()
