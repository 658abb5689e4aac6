"""What runs inside a worker process: its loop, the routing of each task, its watchdog.

A worker never opens the queue directory. It receives a ``Task`` (the message,
the results of the jobs it refers to, a generator's journal) and returns an
``Outcome`` (result, error, spawned jobs, a generator's next step, the captured
output); progress and output chunks travel live over the dispatcher's channel.

``execute`` runs one task: a plain job with the pieces of ``jobrun`` (its context,
output capture, function and outcome), a generator function's replay with
``replay.drive``, a chunk of a map with ``chunkrun.execute_chunk``. ``serve`` is a local
worker's loop (``Reports`` sends the outcomes back), ``init_worker`` its set-up and
watchdog.
"""

from __future__ import annotations

import inspect
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from . import job as J
from . import memory
from .chunkrun import execute_chunk
from .job import Outcome, RemoteError, Step, Task
from .jobrun import context_of, failure, finish, in_job, load_function, loaded_record
from .lease import LeaseView, WorkerLease
from .message import Function, unpack_args
from .replay import drive

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
    record = loaded_record(function[0]) or Function(*function)  # one seen before: its record
    return Task(job_id, claim, name, record, args, ref_results, journal, endpoint, memory,
                kind)


# -- running a task -----------------------------------------------------------------------


def execute(task: Task) -> Outcome:
    """Run one job and describe what became of it. Never raises for the job's sake."""
    if task.kind == J.CHUNK:
        return execute_chunk(task)
    started = time.time()
    with in_job(task) as ctx:
        try:
            fn, is_generator = load_function(task.function)
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
    """A job's outcome packed for its dispatcher (``pack_outcome``); a failure if it
    cannot be."""
    try:
        return pack_outcome(outcome)
    except Exception as exc:  # a spawned job's options, a journal entry, ...
        return pack_outcome(Outcome(task.id, task.claim, J.OutcomeKind.FAILED, error=RemoteError(
            type(exc).__name__, f"the outcome of job {task.id} cannot be sent back: {exc}"),
            log=outcome.log, started=outcome.started))


def pack_outcome(o: Outcome) -> bytes:
    """An outcome as it travels from a worker (or a dask slot's loop) to its dispatcher:
    the fields of ``Outcome`` in order, as a tuple, pickled. A tuple pickles and loads in
    a sixth of the time of the dataclass (about 0.8 us against 5 us, both ways), and a
    stream of short jobs pays it for every job on the worker's and on the dispatcher's
    side. ``unpack_outcome`` reads it."""
    return pickle.dumps((o.id, o.claim, o.kind, o.result, o.error, o.retryable, o.spawned,
                         o.yielded, o.log, o.started, o.worker_ended),
                        protocol=pickle.HIGHEST_PROTOCOL)


def unpack_outcome(blob: bytes) -> Outcome:
    """The outcome ``pack_outcome`` packed."""
    return Outcome(*pickle.loads(blob))


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
    ctx = context_of(job_id)
    why = (f"job {job_id} went over its memory limit (memory={exact_text(limit)}): it used "
           f"{size_text(used)}; its worker process was killed, and a new one takes the next "
           "job")
    outcome = Outcome(job_id, claim, J.OutcomeKind.FAILED, error=RemoteError("MemoryError", why),
                      log=ctx.final_log() if ctx is not None else None, worker_ended=True)
    reports.last(pack_outcome(outcome),
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
