"""A dask slot's loop: one long dask task per slot that serves the slot's jobs the way a
local worker's ``runtime.serve`` does.

One dask task per job pays a round trip through the client and the scheduler for each
job, and the redo bound (a slot holds at most a job running and one handed ahead)
keeps few of them in flight. So a dask slot submits one task, ``serve_loop``, which
connects back to the dispatcher's live channel (the address and key its jobs' progress
already use), says its slot's token, and is handed to the dispatcher's ``WorkerHub``.
From then on the jobs go over that connection as they do to a local worker: lists of
packed tasks one way (``runtime.task_fields``), lists of pickled outcomes the other
(``runtime.Reports``), a job handed ahead queued in the loop behind the running one.
No message goes through the scheduler per job.

On top of what a local worker gets, the dispatcher sends a loop two kinds of message:
``("stop", [(job id, claim), ...])``, a cancel or a timeout (a job queued in the loop is
dropped, the running one interrupted with ``JobInterrupted`` in its thread, the loop
goes on; either way the loop answers, once the job has left, with a "cancelled"
outcome that the slot only takes as that answer), and ``("lease", seconds left,
margin)``, its lease after each renewal: a loop whose dispatcher's lease ran out (a
paused or stuck dispatcher) interrupts its job, hands its jobs back and ends.

The loop's connection breaking (its dask worker died, or the dispatcher closed it)
ends the loop, interrupting its job. The dispatcher closes it when the slot had no job
for ``LOOP_IDLE`` seconds, which gives the cluster its thread back, and at a stop; the
next job starts a loop again. A loop that cannot reach the channel (a firewall, NAT:
connect and handshake within ``channel.CONNECT_TIMEOUT``) returns ``UNREACHABLE``; its
slot then falls back to one dask task per job (``executors.DaskSlot``) for good.
"""

from __future__ import annotations

import logging
import os
import pickle
import secrets
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from . import runtime
from .channel import ChannelServer, connect
from .executors import (
    DaskSlot,
    DaskTasks,
    Ended,
    JobInterrupted,
    Slot,
    WorkerHub,
    WorkerLost,
    _set_async_exc,
)
from .job import Outcome, OutcomeKind, Task
from .lease import LeaseView, WorkerLease

log = logging.getLogger(__name__)

LOOP_IDLE = 2.0  # seconds a slot keeps a loop with no job before it ends it
START_WAIT = 2.0  # jobs wait this long for a loop to connect, then go back to the queue
# a job told to stop that has not left its loop after this long is stuck in a call that
# stays in C: the slot leaves that loop to it and starts another
STUCK_AFTER = 2.0
RESTART_EVERY = 1.0  # a loop that ended without connecting is replaced at most this often
UNREACHABLE = "unreachable"  # what a loop returns when it cannot reach its dispatcher
ENDED, LAPSED = "ended", "lapsed"  # ... when its connection closed; its lease ran out

Key = tuple[str, int]  # a job's id and claim


# -- on a dask worker -------------------------------------------------------------------------


def serve_loop(endpoint: tuple[tuple[str, int], bytes], token: bytes) -> str:
    """The one long dask task of a dask slot: connect to the dispatcher's channel at
    ``endpoint``, say ``token``, then run the jobs that come, in order, until the
    connection closes or the dispatcher's lease runs out. Returns why it ended:
    ``ENDED``, ``LAPSED``, or ``UNREACHABLE`` and the reason."""
    address, authkey = endpoint
    try:
        conn = connect(tuple(address), authkey)  # type: ignore[arg-type]
        conn.send(("serve", token, (os.getpid(),)))
    except Exception as exc:  # a firewall, NAT, a dispatcher gone: the slot falls back
        return f"{UNREACHABLE}: {type(exc).__name__}: {exc}"
    return _Loop(conn).run()


class _Loop:
    """A loop's state: the jobs queued here, the one running, why it ends. Its dask
    task's thread runs the jobs; a reader thread takes the dispatcher's messages, so a
    stop or the connection's end reaches a running job at once."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # a second handle on the socket, to shut it down from either thread: a reader
        # blocked on it then wakes (closing a descriptor another thread waits on does not)
        self._socket = socket.socket(fileno=os.dup(conn.fileno()))
        self._cond = threading.Condition()
        self._tasks: deque[Task] = deque()
        self._current: Key | None = None  # the job running now
        self._stopped: Key | None = None  # ... once told to stop: no outcome is sent
        self._why: str | None = None  # why the loop ends, once it does
        self._deadline: float | None = None  # monotonic: the lease's end less its margin
        self._ident = threading.get_ident()
        self._reports = runtime.Reports(conn)

    def run(self) -> str:
        reader = threading.Thread(target=self._read, name="nbqueue-loop-reader", daemon=True)
        reader.start()
        try:
            while not self._reports.broken:
                outcome = None
                try:
                    task = self._next()
                    if task is None:
                        break
                    outcome = runtime.execute(task)
                    self._leave()
                except JobInterrupted:  # it landed outside the job's own code
                    self._leave()
                with self._cond:
                    stopped, self._stopped = self._stopped, None
                    if self._why is not None:
                        break
                if stopped is not None:  # the dispatcher settled it already
                    self._left(stopped)
                    continue
                assert outcome is not None and task is not None  # (an interrupt names its job)
                # never held for the next job's (as a local worker's are): a job that
                # kills the worker at once would take this outcome with it, and its
                # death would be charged to this job
                self._reports.send(runtime.outcome_bytes(task, outcome), hold=False)
        finally:
            self._reports.close()
            self._shutdown()
            reader.join(10.0)
            self._socket.close()
            self._conn.close()
        return self._why or ENDED

    def _next(self) -> Task | None:
        """The next job to run, once one came (it is the running one from here on);
        None once the loop ends."""
        with self._cond:
            while not self._tasks and self._why is None:
                self._cond.wait()
            if self._why is not None:
                return None
            if not self._lapsed():
                task = self._tasks.popleft()
                self._current = (task.id, task.claim)
                return task
        self._end(LAPSED)
        return None

    def _leave(self) -> None:
        """The running job has left: no interrupt reaches this thread from here on."""
        with self._cond:
            self._current = None
            # an interrupt sent as the job ended must not hit the loop's own code
            _set_async_exc(self._ident, None)

    def _interrupt(self) -> None:
        """Stop the running job, at most once (under the lock)."""
        if self._current is not None and self._stopped != self._current:
            self._stopped = self._current
            _set_async_exc(self._ident, JobInterrupted)

    def _lapsed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _read(self) -> None:
        conn, loads = self._conn, pickle.loads
        why = ENDED
        try:
            while True:
                deadline = self._deadline
                wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                if not conn.poll(wait):
                    if self._lapsed():
                        why = LAPSED
                        break
                    continue
                message = loads(conn.recv_bytes())
                if isinstance(message, list):  # jobs, as to a local worker
                    tasks = [runtime.task_from_fields(loads(blob)) for blob in message]
                    with self._cond:
                        self._tasks.extend(tasks)
                        self._cond.notify()
                elif message[0] == "stop":
                    self._stop({tuple(key) for key in message[1]})
                elif message[0] == "lease":
                    _, left, margin = message
                    self._deadline = time.monotonic() + left - margin
        except (EOFError, OSError):  # the dispatcher closed it, or is gone
            pass
        except Exception:  # a message it cannot read: a dispatcher of another version?
            log.warning("nbqueue: a dask slot's loop ends on a message it cannot read",
                        exc_info=True)
        self._end(why)

    def _stop(self, keys: set[Any]) -> None:
        with self._cond:
            dropped = [(t.id, t.claim) for t in self._tasks if (t.id, t.claim) in keys]
            self._tasks = deque(t for t in self._tasks if (t.id, t.claim) not in keys)
            if self._current in keys:
                self._interrupt()  # answered once it has left (``run``)
        for key in dropped:
            self._left(key)

    def _left(self, key: Key) -> None:
        """Tell the dispatcher that a job it stopped has left this loop."""
        self._reports.send(runtime.pack_outcome(Outcome(*key, OutcomeKind.CANCELLED)),
                           hold=False)

    def _end(self, why: str) -> None:
        """Stop: interrupt the running job and run nothing more. Once the lease ran out,
        say first that the jobs here go back (no attempt used), then close."""
        with self._cond:
            if self._why is not None:
                return
            self._why = why
            back = [(t.id, t.claim) for t in self._tasks]
            if self._current is not None and self._current != self._stopped:
                back.insert(0, self._current)
            self._interrupt()
            self._tasks.clear()
            self._cond.notify()
        if why == LAPSED:
            log.warning("nbqueue: a dask slot's loop stops its jobs: %s", runtime.LAPSED)
            for job_id, claim in back:
                self._reports.send(runtime.pack_outcome(Outcome(job_id, claim,
                                                                OutcomeKind.RELEASED)),
                                   hold=False)
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:  # shut down already, or never connected
            pass


# -- in the dispatcher --------------------------------------------------------------------------


class DaskLoops:
    """What a dispatcher's dask slots share: the client, the hub their loops arrive at,
    the channel's endpoint they connect to, the lease they are told of, and the per-job
    tasks of the slots that fell back."""

    def __init__(self, client: Any, hub: WorkerHub, channel: ChannelServer,
                 wake: Callable[[], None], lease: LeaseView | None = None) -> None:
        self.client = client
        self.hub = hub
        self.endpoint = channel.endpoint
        self.wake = wake
        self.lease = WorkerLease(lease) if lease is not None else None
        self.tasks = DaskTasks(client, wake, channel)
        self.fell_back = False  # a slot fell back (said once)

    def fall_back(self, why: str) -> None:
        if not self.fell_back:
            self.fell_back = True
            host, port = self.endpoint[0]
            log.warning("nbqueue: a dask slot's loop could not reach this dispatcher at "
                        "%s:%d from the cluster (%s); such slots run one dask task per job "
                        "instead (slower). If the workers reach this host under another "
                        "address, set $NBQUEUE_CHANNEL_HOST (docs/scaling.md)", host, port, why)


class DaskLoopSlot(Slot):
    """A slot on a dask cluster served by a loop of its own (``serve_loop``), started
    with the slot's first job and ended after ``LOOP_IDLE`` seconds without one.

    Its jobs run one at a time, in order, in the loop's thread; while jobs are short the
    dispatcher hands it one ahead, queued in the loop. ``stop`` drops a job queued there
    or interrupts the running one (``JobInterrupted``: Python code stops at its next
    bytecode, a call that stays in C runs on until it returns, keeping the thread); the
    loop goes on. Its connection breaking while it holds jobs (its worker died) is a
    ``WorkerLost``: a death for the job that ran, the one handed ahead goes back.

    Jobs handed to a slot whose loop has not connected wait for it; after
    ``START_WAIT`` (no free thread on the cluster, a worker restarting) they go back to
    the queue and the slot takes no more until its loop connects (``available``). A loop
    that cannot reach the dispatcher makes the slot one of one dask task per job."""

    stops_alone = True

    def __init__(self, loops: DaskLoops) -> None:
        self._loops = loops
        self._fallback: DaskSlot | None = None
        self._unsent: list[Task] = []
        self._live: deque[Key] = deque()  # sent to the loop, oldest first, not reported
        self._arrived: dict[Key, Outcome] = {}  # reported, behind one that was not yet
        self._stopping: dict[Key, float] = {}  # told to stop, not left yet: since when
        self._future: Any = None  # the loop's dask task
        self._token: bytes | None = None
        self._conn: Connection | None = None
        self._readable = select.poll()
        self._lost = False  # its connection broke
        self._ended = False  # its task ended (dask says so)
        self._late = False  # its loop did not connect within START_WAIT
        self._submitted = 0.0  # when its task was submitted (monotonic)
        self._failed_at = -RESTART_EVERY  # when a loop last ended without connecting
        self._idle_since = time.monotonic()
        self._lease_sent: float | None = None

    # -- the loop's task ------------------------------------------------------------------

    def _start(self) -> None:
        loops = self._loops
        self._token = token = secrets.token_hex(16).encode()
        loops.hub.expect(token)
        self._future = future = loops.client.submit(
            serve_loop, loops.endpoint, token, key=f"nbqueue-slot-{token.decode()}",
            pure=False, retries=0)
        self._submitted = time.monotonic()

        def ended(done: Any, wake: Callable[[], None] = loops.wake) -> None:
            if done is self._future:  # not an older loop's, replaced since
                self._ended = True
            wake()

        future.add_done_callback(ended)

    def _connection(self) -> Connection | None:
        if self._conn is None and self._token is not None:
            arrived = self._loops.hub.take(self._token)
            if arrived is not None:
                self._conn = arrived.conn
                self._readable = select.poll()
                self._readable.register(self._conn.fileno(), select.POLLIN)
                self._late = False
                self._lease_sent = None
                self._idle_since = time.monotonic()
        return self._conn

    def _drop(self, *, cancel: bool) -> None:
        """Forget the loop: close its connection (which ends it, interrupting its job),
        and with ``cancel``, cancel its task (one that has not started never does)."""
        if self._token is not None:
            self._loops.hub.forget(self._token)
        if self._conn is not None:
            self._conn.close()
        future = self._future
        if cancel and future is not None and not future.done():
            threading.Thread(target=_cancel, args=(self._loops.client, [future]),
                             name="nbqueue-dask-cancel", daemon=True).start()
        self._future = self._token = self._conn = None
        self._lost = self._ended = self._late = False
        self._stopping.clear()

    def _send(self, message: Any) -> bool:
        assert self._conn is not None
        try:
            self._conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:  # the loop is gone: collect() says so
            self._lost = True
            return False
        return True

    def _push_lease(self) -> None:
        """Tell the loop of each renewal of the dispatcher's lease (read where the
        dispatcher publishes it for its local workers)."""
        lease = self._loops.lease
        if lease is None:
            return
        until = lease.until()
        if until != self._lease_sent and self._send(("lease", until - time.time(),
                                                     lease.margin)):
            self._lease_sent = until

    def _send_unsent(self) -> None:
        tasks, self._unsent = self._unsent, []
        dumps, fields = pickle.dumps, runtime.task_fields
        if self._send([dumps(fields(t), protocol=pickle.HIGHEST_PROTOCOL) for t in tasks]):
            self._live += [(t.id, t.claim) for t in tasks]
        elif self._live:  # it died under a job: those go back behind it (WorkerLost)
            self._live += [(t.id, t.claim) for t in tasks]
        else:  # it died idle: these never reached it, the next loop takes them
            self._unsent = tasks

    # -- Slot ------------------------------------------------------------------------------

    def available(self) -> bool:
        return self._fallback is not None or not (self._late or self._stopping)

    def submit(self, packed: Task) -> None:
        if self._fallback is not None:
            self._fallback.submit(packed)
        else:
            self._unsent.append(packed)

    def flush(self) -> None:
        if self._fallback is not None:
            self._fallback.flush()
            return
        if not self._unsent:
            return
        if self._connection() is not None and not self._lost:
            self._push_lease()
            self._send_unsent()
        elif self._future is None and time.monotonic() - self._failed_at > RESTART_EVERY:
            self._start()

    def collect(self) -> list[Ended]:
        if self._fallback is not None:
            return self._fallback.collect()
        out: list[Ended] = []
        conn = self._connection()
        if conn is not None and not self._lost:
            self._push_lease()
            if self._unsent:
                self._send_unsent()
            loads, ready = pickle.loads, self._readable.poll
            live, arrived = self._live, self._arrived
            try:
                while ready(0):
                    for blob in loads(conn.recv_bytes()):
                        outcome = runtime.unpack_outcome(blob)
                        key = (outcome.id, outcome.claim)
                        if key in live:
                            arrived[key] = outcome
                        elif self._stopping.pop(key, None) is not None:  # stopped: left
                            self._idle_since = time.monotonic()
            except (EOFError, OSError):
                self._lost = True
            while live and live[0] in arrived:
                out.append(arrived.pop(live.popleft()))
            if self._stopping and not self._lost and \
                    time.monotonic() - min(self._stopping.values()) > STUCK_AFTER:
                return out + self._leave_stuck()
            if not live and not self._unsent and not self._stopping:
                if out:
                    self._idle_since = time.monotonic()
                elif time.monotonic() - self._idle_since > LOOP_IDLE and not self._lost:
                    self._drop(cancel=False)  # it ends as its connection closes
                    return out
        if conn is None:
            if self._ended:
                self._fail()
            elif self._future is not None:
                out += self._waiting()
        elif self._lost or (self._ended and self._future.status == "error"):
            out += self._gone()  # (a loop that ended well closed its connection first)
        return out

    def _fail(self) -> None:
        """Its loop ended without connecting: another is started for the jobs waiting
        (not at once), unless it could not reach the dispatcher or run on the cluster:
        then the slot falls back to one dask task per job."""
        why = _why_ended(self._future)
        self._drop(cancel=False)
        self._failed_at = time.monotonic()
        if why is not None:
            self._loops.fall_back(why)
            self._fallback = DaskSlot(self._loops.tasks)
            for task in self._unsent:
                self._fallback.submit(task)
            self._unsent = []
            self._fallback.flush()

    def _gone(self) -> list[Ended]:
        """Its loop's connection broke, or its task failed: the worker died (or the
        network broke). A job it ran counts a death (``WorkerLost``)."""
        out: list[Ended] = []
        if self._live:
            future = self._future
            how = (type(future.exception()).__name__
                   if future.done() and future.status == "error" else "its connection broke")
            out.append(WorkerLost(f"on a dask worker: {how}"))
        self._reset()
        return out

    def _leave_stuck(self) -> list[Ended]:
        """A job told to stop has not left the loop: it is stuck in a call that stays in
        C, and keeps its thread. The jobs queued behind it go back to the queue (they
        have not started), and the slot's next job starts another loop, on a free
        thread; this one ends once the call returns."""
        log.warning("nbqueue: a dask job told to stop (a cancel or a timeout) still runs "
                    "after %gs, in a call that Python cannot interrupt; its thread stays "
                    "busy until the call returns, and its slot goes on with a new dask "
                    "task", STUCK_AFTER)
        back: list[Ended] = [Outcome(*key, OutcomeKind.RELEASED) for key in self._live]
        back += [Outcome(t.id, t.claim, OutcomeKind.RELEASED) for t in self._unsent]
        self._reset()
        return back

    def _waiting(self) -> list[Ended]:
        """Its loop has not connected yet: after ``START_WAIT`` the jobs waiting for it
        go back to the queue, and the slot takes none until it connects."""
        if self._late or time.monotonic() - self._submitted <= START_WAIT:
            return []
        self._late = True
        back: list[Ended] = [Outcome(t.id, t.claim, OutcomeKind.RELEASED) for t in self._unsent]
        self._unsent = []
        return back

    def stop(self, positions: list[int]) -> bool:
        if self._fallback is not None:
            return self._fallback.stop(positions)
        sent = len(self._live)
        keys: list[Key] = []
        for i in sorted(positions, reverse=True):
            if i < sent:
                keys.append(self._live[i])
                del self._live[i]
            else:
                del self._unsent[i - sent]
        now = time.monotonic()
        for key in keys:
            self._arrived.pop(key, None)
            self._stopping[key] = now
        if keys and self._conn is not None and not self._lost:
            self._send(("stop", keys))
        if not self._live and not self._unsent:
            self._idle_since = time.monotonic()
        return True

    def kill(self) -> None:
        if self._fallback is not None:
            self._fallback.kill()
        else:
            self._reset()

    def _reset(self) -> None:
        """Forget the jobs here and the loop (its task cancelled, its job interrupted)."""
        self._unsent = []
        self._live.clear()
        self._arrived.clear()
        self._drop(cancel=True)

    def shutdown(self) -> None:
        if self._fallback is not None:
            self._fallback.shutdown()
        self.kill()

    def waitable(self) -> Any:
        if self._fallback is not None or self._lost:
            return None
        return self._connection()


def _why_ended(future: Any) -> str | None:
    """Why a loop's task ended without serving, if its slot must fall back (it cannot
    reach the dispatcher, or cannot run on the cluster); None if another may work (its
    worker died, dask dropped it, a dispatcher that did not want it closed it)."""
    if future.status == "cancelled":
        return None
    if future.status == "error":
        exc = future.exception()
        if type(exc).__name__ == "KilledWorker":
            return None
        return f"{type(exc).__name__}: {exc}"
    result = future.result()
    if isinstance(result, str) and result.startswith(UNREACHABLE):
        return result[len(UNREACHABLE) + 2:]
    return None


def _cancel(client: Any, futures: list[Any]) -> None:
    try:
        client.cancel(futures)
    except Exception:  # a closed client: nothing left to cancel
        log.debug("cancelling a dask slot's loop failed", exc_info=True)
