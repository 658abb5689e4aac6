"""Where jobs run: local worker slots (loky) or a dask cluster.

Local: one single-worker ``loky.ProcessPoolExecutor`` per slot. A worker that dies
breaks every future of its executor, so one worker per executor keeps a crash, a
timeout kill or a cancel to its own job. Workers run in process groups of their own
(out of reach of a notebook's Interrupt, which signals the kernel's group), ignore
SIGINT all the same, and exit when their parent dies. The process-wide
``get_reusable_executor()`` is not used: the user's own joblib calls share it.

Each local worker runs one long loky task, ``runtime.serve``, which takes jobs over a
private authenticated Unix socket (a ``WorkerHub``) and sends back each outcome as it
ends. A loky ``submit`` per job costs a round trip through three threads of the
dispatcher's process (about 200 us); the socket costs a tenth of that, and lets the
dispatcher read every slot in the same ``wait()`` as its wake-up pipe. loky still
starts, watches and kills the process: a worker that dies ends its ``serve`` future
with ``TerminatedWorkerError`` and closes the socket.

A job's processes end with it: each local worker leads a process group of its own
(``runtime.init_worker``) and says which in its first message on the socket. A slot
kills that whole group (``kill_worker``) to cancel a job, at a timeout, after the
worker died under a job or while idle, and at shutdown; the worker kills it itself
when the dispatcher's process dies, and when the dispatcher's lease runs out while it
runs a job (``lease``). A child that calls ``setsid`` escapes.

Dask: one ``daskloop.DaskLoopSlot`` per slot on a ``distributed.Client``. Each runs
one long dask task, a loop that connects back to the dispatcher (through the live
channel, to this module's ``WorkerHub``) and takes the slot's jobs as a local worker's
``runtime.serve`` does, with no round trip through the scheduler per job. A slot whose
loop cannot reach the dispatcher falls back to one dask task per job (``DaskSlot``),
the jobs a dispatcher step hands out sent to the cluster in one batch (``DaskTasks``).
Either way a slot holds a job handed ahead while its jobs are short, as a local one
does. The scheduler's ``allowed-failures`` is set to 0 so that a worker that dies fails
only the tasks it held, at once, and nbqueue decides about retries. ``distributed`` is
imported only when a client is given.
"""

from __future__ import annotations

import abc
import atexit
import ipaddress
import logging
import os
import pickle
import re
import secrets
import select
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import Connection, Listener
from typing import Any, NamedTuple

from loky import ProcessPoolExecutor

from . import runtime
from .channel import ChannelClient, ChannelServer, close_listener
from .errors import InvalidArgumentType
from .job import Outcome, Task
from .lease import LeaseView

log = logging.getLogger(__name__)


# -- interpreter exit --------------------------------------------------------------------

_before_exit: list[Callable[[], None]] = []


def before_exit(call: Callable[[], None]) -> None:
    """Have ``call`` run when the interpreter exits, before loky's own exit hook.

    loky's hook waits for every task still running, and a slot's ``serve`` runs until
    its dispatcher stops: without this, a script that ends with a queue open (or a job
    running) would hang at exit."""
    _before_exit.append(call)
    _register_exit_hook()


def not_before_exit(call: Callable[[], None]) -> None:
    try:
        _before_exit.remove(call)
    except ValueError:
        pass


def _run_before_exit() -> None:
    while _before_exit:
        call = _before_exit.pop()
        try:
            call()
        except Exception:
            log.warning("nbqueue: stopping at interpreter exit failed", exc_info=True)


def _register_exit_hook() -> None:
    # threading's exit hooks run before atexit's, the last registered first; loky
    # registers its hook again with every executor it starts, so ours follows each one
    try:
        threading._register_atexit(_run_before_exit)  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # not this CPython, or already exiting
        atexit.register(_run_before_exit)


class WorkerLost(Exception):
    """The worker process of a local slot died (or its connection broke) under a job."""


Ended = Outcome | BaseException  # what a slot reports for each job: its outcome, or why not


class Slot(abc.ABC):
    """One place where jobs run one at a time, in the order they were handed."""

    def pack(self, task: Task) -> Any:
        """``task`` in the form ``submit`` takes (prepared ahead, off the critical path)."""
        return task

    @abc.abstractmethod
    def submit(self, packed: Any) -> None:
        """Queue a packed task to run after those handed before (sent at ``flush``)."""

    def flush(self) -> None:  # noqa: B027 - a slot that sends at once has nothing to do
        """Send what ``submit`` queued."""

    @abc.abstractmethod
    def collect(self) -> list[Ended]:
        """What ended since the last call, oldest first, without waiting: an ``Outcome``
        per job, or the exception that ended it (``WorkerLost``: the slot must be killed)."""

    def waitable(self) -> Any:
        """Something ``multiprocessing.connection.wait`` can watch for ended jobs, or None."""
        return None

    def available(self) -> bool:
        """Whether it takes jobs now (a dask slot whose loop waits for a thread does not)."""
        return True

    #: whether one job here can be stopped alone (a dask task); else ``stop`` stops all
    stops_alone = False

    def stop(self, positions: list[int]) -> bool:
        """Stop the jobs at these positions (0: the oldest here) for a cancel or a timeout.
        Returns whether the others here go on; False: they stopped too (a local worker
        dies with every job it holds), and go back to the queue."""
        self.kill()
        return False

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop whatever runs here now; the slot is usable again afterwards."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop for good."""

    def pids(self) -> list[int]:
        return []


class Arrived(NamedTuple):
    """A local worker that connected: its connection, its pid and its process group."""

    conn: Connection
    pid: int
    pgid: int  # its own pid: ``runtime.init_worker`` makes each worker a group leader


def kill_worker(pid: int, pgid: int) -> None:
    """SIGKILL a local worker's process group: the worker and every process its jobs
    started (unless one started a session of its own). The group outlives its leader
    while a member runs, so this works after the worker itself died. A worker that does
    not lead a group, or whose group would be the dispatcher's own, gets only its pid
    killed."""
    try:
        if pgid == pid and pgid > 1 and pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left of it
        pass
    except PermissionError:  # the pid or group id went to another user's process
        log.debug("not killing worker %d (group %d): not ours", pid, pgid, exc_info=True)


class WorkerHub:
    """The dispatcher's end of its workers' connections. Local workers: a Unix socket
    listener (private, authenticated with a random key) and a thread that accepts them;
    a worker's first message says which slot it serves (a token) and which process it
    is (its pid and process group). Dask slots' loops (``listen=False``) connect to the
    live channel instead, which hands each over (``arrive``) once it has authenticated
    and said its token; one whose token no slot expects (a loop its slot gave up on) is
    closed at once, which ends it."""

    def __init__(self, wake: Callable[[], None], *, listen: bool = True) -> None:
        self.wake = wake
        self._lock = threading.Lock()
        self._arrived: dict[bytes, Arrived] = {}
        self._expected: set[bytes] = set()  # tokens of loops not arrived yet (``arrive``)
        self._closed = False
        self._listener: Listener | None = None
        if listen:
            self.authkey = secrets.token_bytes(16)
            self._listener = Listener(family="AF_UNIX", authkey=self.authkey)
            self.address = self._listener.address
            threading.Thread(target=self._accept, name="nbqueue-worker-hub",
                             daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            conn = None
            assert self._listener is not None  # the thread runs only while it listens
            try:
                conn = self._listener.accept()
                token, pid, pgid = conn.recv_bytes(128).split()
                arrived = Arrived(conn, int(pid), int(pgid))
            except Exception:  # closed, or a peer without the key
                if conn is not None:
                    conn.close()
                if self._closed:
                    return
                continue
            with self._lock:
                self._arrived[token] = arrived
            self.wake()

    def expect(self, token: bytes) -> None:
        """A dask slot's loop with this token is on its way (see ``arrive``)."""
        with self._lock:
            self._expected.add(token)

    def arrive(self, token: Any, conn: Connection, info: Any) -> None:
        """A dask slot's loop connected (through the live channel); ``info``: its pid."""
        with self._lock:
            welcome = isinstance(token, bytes) and token in self._expected and not self._closed
            if welcome:
                self._expected.discard(token)
                pid = info[0] if isinstance(info, tuple) and info else 0
                self._arrived[token] = Arrived(conn, pid if isinstance(pid, int) else 0, 0)
        if not welcome:
            conn.close()
            return
        self.wake()

    def take(self, token: bytes) -> Arrived | None:
        """The worker serving ``token``, once it has connected."""
        with self._lock:
            return self._arrived.pop(token, None)

    def forget(self, token: bytes) -> None:
        with self._lock:
            self._expected.discard(token)
        arrived = self.take(token)
        if arrived is not None:
            arrived.conn.close()

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            close_listener(self._listener)
        with self._lock:
            self._expected.clear()
            for arrived in self._arrived.values():
                arrived.conn.close()
            self._arrived.clear()


RESTART_EVERY = 1.0  # a worker that died while idle is replaced at once, at most this often


class LokySlot(Slot):
    """A single-worker loky executor of its own, running ``runtime.serve``; its worker
    watches ``lease``, its dispatcher's."""

    def __init__(self, hub: WorkerHub, lease: LeaseView | None = None) -> None:
        self._hub = hub
        self._lease = lease
        self._unsent: list[bytes] = []
        self._start()

    def _start(self) -> None:
        self._token = secrets.token_hex(16).encode()
        self._conn: Connection | None = None
        self._worker: tuple[int, int] | None = None  # its (pid, pgid), once it connected
        self._readable = select.poll()  # the connection, once it is there
        self._lost = False
        self._running = 0  # jobs sent and not yet reported
        self._started = time.monotonic()
        self._executor = ProcessPoolExecutor(max_workers=1, initializer=runtime.init_worker,
                                             initargs=(os.getpid(), self._lease))
        serving = self._executor.submit(runtime.serve, self._hub.address, self._hub.authkey,
                                        self._token)
        if _before_exit:
            _register_exit_hook()  # after loky's, which this submit registered again
        self._serving, self._served = serving, False

        def ended(future: Future[Any], wake: Callable[[], None] = self._hub.wake) -> None:
            if future is self._serving:  # not an older worker's, replaced since
                self._served = True
            wake()

        serving.add_done_callback(ended)

    def pack(self, task: Task) -> bytes:
        return pickle.dumps(runtime.task_fields(task), protocol=pickle.HIGHEST_PROTOCOL)

    def submit(self, packed: bytes) -> None:
        if (self._served or self._lost) and not (self._running or self._unsent):
            self.kill()  # its worker died while idle: start another, the job has not run
        self._unsent.append(packed)

    def flush(self) -> None:
        if not self._unsent or self._connection() is None or self._lost:
            return
        tasks, self._unsent = self._unsent, []
        try:
            assert self._conn is not None
            self._conn.send_bytes(pickle.dumps(tasks, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            if not self._running:  # it died while idle: these never reached it, start another
                self.kill()
                self._unsent = tasks
                return
            self._lost = True  # it died under a job: collect() reports it
        self._running += len(tasks)

    def _connection(self) -> Connection | None:
        if self._conn is None:
            arrived = self._hub.take(self._token)
            if arrived is not None:
                # kept for kill(): loky forgets a worker that died (or was killed)
                self._conn, self._worker = arrived.conn, (arrived.pid, arrived.pgid)
                self._readable.register(self._conn.fileno(), select.POLLIN)
        return self._conn

    def collect(self) -> list[Ended]:
        out: list[Ended] = []
        if self._unsent:
            self.flush()
        conn = self._conn if self._conn is not None else self._connection()
        if conn is not None and not self._lost:
            loads, unpack, ready = pickle.loads, runtime.unpack_outcome, self._readable.poll
            try:
                # conn.poll(0) builds a selector per call; a poll object of our own does not
                while ready(0):
                    out += [unpack(blob) for blob in loads(conn.recv_bytes())]
            except (EOFError, OSError):
                self._lost = True
        self._running -= len(out)
        if self._lost or self._served:
            if self._running or self._unsent:
                out.append(WorkerLost(self._why_lost()))
                self._running = 0
                self._unsent = []
            elif time.monotonic() - self._started > RESTART_EVERY:
                self.kill()  # it died while idle: have another ready for the next job
        return out

    def _why_lost(self) -> str:
        if self._serving.done():
            exc = self._serving.exception()
            if exc is not None:
                return f"{type(exc).__name__}: {exc}"
        return "its connection to the dispatcher broke"

    def waitable(self) -> Any:
        return self._connection() if not self._lost else None

    def pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return [p.pid for p in list(processes.values()) if p.pid]

    def kill(self) -> None:
        self._connection()  # a worker that connected meanwhile: learn its process group
        self._kill_worker()
        for pid in self.pids():  # a worker not connected yet: it has run nothing
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._close_connection()
        old = self._executor
        try:
            old.shutdown(wait=False, kill_workers=True)
        except Exception:
            log.debug("shutting down a broken slot failed", exc_info=True)
        self._unsent = []
        self._start()

    def _kill_worker(self) -> None:
        """Kill the worker's process group: the worker if it still runs, and whatever its
        jobs started, also after the worker itself died (a job's processes end with it)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            kill_worker(*worker)

    def _close_connection(self) -> None:
        self._hub.forget(self._token)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def shutdown(self) -> None:
        # killed at once (loky's kill_workers would kill it anyway), with its group: the
        # processes its jobs left behind end with it. Killed before loky reaps the worker,
        # so its pid, and the id of its group, cannot have gone to another process yet
        self._connection()
        self._kill_worker()
        self._close_connection()
        try:
            self._executor.shutdown(wait=True, kill_workers=True)
        except Exception:
            log.debug("slot shutdown failed", exc_info=True)


class DaskTasks:
    """The jobs that a dispatcher's ``DaskSlot``s (slots that run a dask task per job)
    hand to a ``distributed.Client``, sent in batches and read back as they end.

    Each job is one dask task (``key="nbqueue-<name>-<uuid>"``, so never merged with
    another, and ``retries=0``: nbqueue owns retries). The jobs handed out in one
    dispatcher step go to the cluster with one ``client.map``: one message to the
    scheduler however many there are. A task sends its outcome over the live channel as
    it ends (``run_job``), which wakes the dispatcher sooner than dask's round trip for
    a result; one that did not come that way (too large, a channel the worker cannot
    reach, a task that failed in dask) is read in dask's callback thread. Its dask
    future is released with the next batch: the scheduler gets both in one message (the
    client sends at most one every 10 ms, so a release sent alone would hold the next
    batch back), and the cluster never keeps (or recomputes) a result nbqueue already
    has."""

    def __init__(self, client: Any, wake: Callable[[], None],
                 channel: ChannelServer | None = None) -> None:
        self._client = client
        self._wake = wake
        self._channel = channel
        self._lock = threading.Lock()
        self._unsent: list[tuple[str, Task]] = []
        self._jobs: dict[str, tuple[str, int]] = {}  # key -> (job id, claim), until taken
        self._futures: dict[str, Any] = {}  # key -> its dask future, until its end is taken
        self._ended: dict[str, Ended] = {}  # key -> what its task returned, or why not
        self._read: list[Any] = []  # futures taken: released with the next batch

    def submit(self, task: Task) -> str:
        """Queue a job for the next batch; returns its task's key."""
        name = _KEY_UNSAFE.sub("_", task.name or "job")[:40]
        key = f"nbqueue-{name}-{uuid.uuid4().hex}"
        self._unsent.append((key, task))
        self._jobs[key] = (task.id, task.claim)
        return key

    def flush(self) -> None:
        """Send the queued jobs in one batch, then release the futures already read."""
        if self._unsent:
            keys = [key for key, _ in self._unsent]
            tasks = [task for _, task in self._unsent]
            self._unsent = []
            futures = self._client.map(run_job, keys, tasks, key=keys, pure=False, retries=0)
            with self._lock:
                self._futures.update(zip(keys, futures, strict=True))
            for future in futures:
                future.add_done_callback(self._done)
        if self._read:
            with self._lock:
                self._read = []  # their last references: each is released

    def _done(self, future: Any) -> None:
        """In dask's callback thread: what the task returned, or why it did not."""
        ended: Ended
        job = self._jobs.get(future.key)
        if job is None or (self._channel is not None and self._channel.has_ended(*job)):
            return  # stopped meanwhile, or its outcome came over the channel: not fetched
        try:
            if future.status == "cancelled":
                ended = RuntimeError("the dask cluster dropped the task (the client "
                                     "disconnected, or the scheduler restarted)")
            else:
                ended = future.result()
        except BaseException as exc:  # noqa: B036 - a dead worker, a lost task: data for the store
            ended = exc
        key = future.key
        with self._lock:
            if self._futures.get(key) is not future:
                return  # stopped meanwhile
            self._ended[key] = ended
        self._wake()

    def take(self, key: str) -> Ended | None:
        """What the task ``key`` ended with, once it has (else None): the outcome it sent
        over the live channel, else what dask returned."""
        sent = self._channel.ended(*self._jobs[key]) if self._channel is not None else None
        with self._lock:
            ended = self._ended.pop(key, None)
            if sent is not None:
                ended = pickle.loads(sent)
            if ended is not None:
                self._read.append(self._futures.pop(key))
                del self._jobs[key]
        return ended

    def stop(self, keys: list[str]) -> None:
        """Cancel these tasks and interrupt those that run; what they return is ignored.

        ``client.cancel`` and ``client.run`` wait for the scheduler and every worker:
        they run in a thread of their own, never making the dispatcher wait."""
        if not keys:
            return
        gone = set(keys)
        if self._unsent:
            self._unsent = [(key, task) for key, task in self._unsent if key not in gone]
        with self._lock:
            futures = [self._futures.pop(key) for key in keys if key in self._futures]
            for key in keys:
                self._ended.pop(key, None)
                job = self._jobs.pop(key, None)
                if job is not None and self._channel is not None:
                    self._channel.discard(job[0])
        running = [future for future in futures if not future.done()]
        self._read += [future for future in futures if future.done()]
        if running:
            threading.Thread(target=_stop_tasks, args=(self._client, running),
                             name="nbqueue-dask-stop", daemon=True).start()


class DaskSlot(Slot):
    """A slot on a dask cluster that runs each job as a dask task of its own, in the
    order handed, through a ``DaskTasks`` that all such slots of a dispatcher share:
    what a ``daskloop.DaskLoopSlot`` whose loop cannot reach the dispatcher falls back to.

    dask starts a task on any free thread of the cluster, so a job handed ahead may run
    before the one handed first ends. ``collect`` still reports them in order.

    ``stop`` and ``kill`` cancel the dask tasks and interrupt those that run with an
    asynchronous exception in their threads: that stops Python code at its next
    bytecode, but not a call that stays in C (``time.sleep``, a socket read, a long
    numpy operation) until it returns; dask has no way to kill one task's thread. The
    job itself is recorded as failed or cancelled at once, whatever its thread still
    does. Nor are the processes a job started killed (a local worker's process group
    is): they share the dask worker's process group with every other task it runs. Nor
    can a task see its dispatcher's lease: the tasks of a dispatcher paused past its
    lease are cancelled and interrupted only when it wakes (``dispatch.fence``).
    """

    stops_alone = True

    def __init__(self, tasks: DaskTasks) -> None:
        self._tasks = tasks
        self._keys: deque[str] = deque()  # of the jobs handed here, oldest first

    def submit(self, packed: Task) -> None:
        self._keys.append(self._tasks.submit(packed))

    def flush(self) -> None:
        self._tasks.flush()

    def collect(self) -> list[Ended]:
        out: list[Ended] = []
        while self._keys:
            ended = self._tasks.take(self._keys[0])
            if ended is None:
                break
            self._keys.popleft()
            out.append(ended)
        return out

    def stop(self, positions: list[int]) -> bool:
        keys = [self._keys[i] for i in positions]
        for i in sorted(positions, reverse=True):
            del self._keys[i]
        self._tasks.stop(keys)
        return True

    def kill(self) -> None:
        keys = list(self._keys)
        self._keys.clear()
        self._tasks.stop(keys)

    def shutdown(self) -> None:
        self.kill()


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def _stop_tasks(client: Any, futures: list[Any]) -> None:
    try:
        client.cancel(futures)
    except Exception:  # a closed client: nothing left to cancel
        log.debug("cancelling dask tasks failed", exc_info=True)
    _interrupt_everywhere(client, [future.key for future in futures])


# -- inside a dask worker: a registry of job threads, so that kill() can interrupt them ----


class JobInterrupted(BaseException):
    """Raised inside a job's thread on a dask worker when nbqueue stops it (timeout, cancel).

    A ``BaseException``, so that a job's ``except Exception`` does not swallow it."""


_threads: dict[str, int] = {}
_threads_lock = threading.Lock()


CHANNEL_OUTCOME_MAX = 64 * 1024  # bytes; a larger outcome comes through dask alone


def run_job(key: str, task: Task) -> Outcome:
    """A job as the dask task ``key``: say over the live channel that it starts (so that
    a job whose worker dies is known to have run: ``ChannelServer.started``), then run
    it where ``_interrupt`` reaches its thread."""
    channel = ChannelClient.get(task.endpoint)
    if channel is not None:
        channel.send("started", task.id, task.claim)
    with _threads_lock:
        _threads[key] = threading.get_ident()
    try:
        outcome = runtime.execute(task)
    finally:
        with _threads_lock:
            _threads.pop(key, None)
            # an interrupt that arrived as the job ended must not hit dask's own code
            _set_async_exc(threading.get_ident(), None)
    if channel is not None:
        blob = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        if len(blob) <= CHANNEL_OUTCOME_MAX:
            channel.send("ended", task.id, (task.claim, blob))
    return outcome


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
        raise InvalidArgumentType(f"executor={executor!r}: give None (local worker "
                                  "processes) or a distributed.Client (a dask cluster)")
    if getattr(executor, "asynchronous", False):
        raise InvalidArgumentType("executor= needs a synchronous distributed.Client, not one "
                                  "made with asynchronous=True")


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
        from distributed.comm.addressing import get_address_host

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
