"""The queue API: ``Queue``, a directory plus, optionally, a dispatcher (its ``Job``
handles are in ``handle``)."""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import job as J
from .arguments import (
    MAX_WORKERS,
    check_bool,
    check_count,
    check_duration,
    check_job_ref,
    check_line,
    check_memory,
    check_name,
    check_path,
    check_priority,
    check_rate,
    check_seconds,
    check_text,
    check_wait,
)
from .chunking import check_chunksize
from .collect import gather
from .dispatcher import Dispatcher
from .errors import (
    DispatcherDied,
    InvalidArgument,
    InvalidArgumentType,
    NoSuchJob,
    SubmitError,
)
from .executors import check_executor, cluster_threads
from .handle import Job
from .housekeeping import Collected, check_keep, collect
from .jobtree import JobTree
from .mapjobs import MapJobs, build_map, item_handle
from .message import (
    OPTION_NAMES,
    build_job,
    function_fingerprint,
    needs_ids,
    pack_function,
)
from .outputs import check_outputs
from .outputs import register as register_outputs
from .recurrence import ScheduleRecord
from .registry import record_queue
from .schedules import Schedule, make_schedule
from .service import ServiceRecord, ensure_service, find_service, lock_held
from .store import Store
from .store.cleanup import read_keep, write_keep
from .store.ids import new_id, new_ids
from .store.pauses import QUEUE
from .store.usage import Usage, usage

SERVICE_CHECK_EVERY = 1.0  # seconds between checks that a detached queue's service lives


def default_path() -> Path:
    """``$NBQUEUE_DIR``, else ``.nbqueue`` in the current directory, made absolute."""
    env = os.environ.get("NBQUEUE_DIR")
    return Path(env).expanduser().absolute() if env else Path.cwd() / ".nbqueue"


class Queue:
    """A persistent job queue in a directory.

    Parameters
    ----------
    path : str or Path, optional
        The queue directory; default ``$NBQUEUE_DIR``, else ``./.nbqueue``.
    workers : int, optional
        Worker processes (or dask slots); default: the number of CPUs, or with
        ``executor=`` the total threads of the cluster's workers when the queue opens.
    executor : distributed.Client, optional
        Run jobs on a dask cluster instead of local loky processes (docs/scaling.md).
    outputs : sequence
        Where ended jobs are delivered (``JsonLines``, ``NotebookReport``); recorded in
        the directory, so every process serving it delivers (docs/outputs.md).
    start : bool
        Start the background dispatcher thread now (default). With ``False`` the
        queue is open for submitting and inspecting only.
    detach : bool
        Run no dispatcher in this process: the directory's *service*, a background
        process of its own (``nbqueue worker DIR --detach``), runs the jobs, and keeps
        running them when this process (a kernel) exits or restarts. Starting makes sure
        one serves the directory: it starts one if none is alive (with ``workers``), else
        uses it, and returns once it serves (``ServiceError``, with the end of its log, if
        it cannot start). ``stop()`` and ``close()`` leave it running; ``nbqueue stop DIR``
        stops it. Not with ``executor=``: start a service on the cluster instead,
        ``nbqueue worker DIR --detach --dask ADDRESS`` (docs/scaling.md).
    keep : dict, optional
        How long ended jobs are kept, by state: ``{"done": "30d", "failed": "90d"}``
        (seconds, a ``timedelta`` or a duration such as ``"12h"``; states left out are
        kept for ever). Recorded in the directory, like ``outputs``: every dispatcher
        serving it forgets the jobs past it in the background, with ``forget``'s rules
        (docs/concepts.md, "Retention and disk space"). None leaves the directory's as
        it is; ``{}`` keeps every job.
    memory : int or str, optional
        The default ``memory=`` of the jobs submitted through this queue object: how much
        memory one may use (``"4GB"``, ``"512MiB"``, or bytes) before it is stopped and
        fails (docs/constraints.md, "Memory"). A job's own ``memory=`` wins.

    Attributes
    ----------
    path : Path
        The queue directory, absolute.
    workers : int
        How many jobs run at once: the ``workers`` given, else the CPUs (or the
        cluster's threads); with ``detach=True``, those of the service that serves it.
    executor : distributed.Client or None
        The dask client given, or None for local worker processes.
    detach : bool
        Whether the directory's service runs the jobs instead of this process.
    outputs : tuple
        The outputs given (checked); every output recorded in the directory is
        delivered to, whichever process recorded it.
    memory : int or None
        The default memory limit in bytes, or None for none.

    Raises
    ------
    InvalidArgumentType, InvalidArgument
        A parameter of the wrong type or out of range (``workers=0``, ``keep={"ready":
        "1d"}``, ``memory="lots"``, ``detach=True`` with ``executor=``), named in the
        message; nothing is created or recorded.
    IncompatibleQueue
        ``path`` is a file, a non-empty directory that is not a queue, a directory that
        cannot be created, or a queue written by a newer nbqueue.
    UnsafeQueue
        The directory is owned by another user or writable by everyone (messages are
        pickles: whoever can write them can run code as you).
    CorruptQueue
        The queue's database file is damaged (``nbqueue check DIR``).
    IncompatibleDiskcache
        The installed diskcache lacks a part the store relies on.
    ServiceError
        ``detach=True`` (with ``start=True``) and no service could be started.

    See Also
    --------
    Queue.submit, Queue.map, Queue.gather, nbqueue.as_completed

    Notes
    -----
    A missing or empty directory becomes a queue, created private (0700). Opening reads
    only: the first write (a submit, the dispatcher's start) recovers the jobs of
    dispatchers that died, so ``nbqueue status`` can inspect a queue whose writer is
    stopped. Several processes may open the same directory at once; no job runs twice at
    the same time and resources stay exclusive across all of them. ``with Queue(...) as
    q:`` calls ``close()`` on exit.

    Examples
    --------
    A queue in ``runs/q`` with four worker processes, and one opened only to inspect
    and submit (another process runs its jobs)::

        import nbqueue

        with nbqueue.Queue("runs/q", workers=4) as q:
            h = q.submit(pow, 2, 10)
            print(h.result())                     # 1024

        q = nbqueue.Queue("runs/q", start=False)
        q.counts()                                # {'waiting': 0, 'ready': 0, ...}
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, workers: int | None = None,
                 executor: Any = None, outputs: Sequence[Any] = (), start: bool = True,
                 detach: bool = False, keep: dict[str, Any] | None = None,
                 memory: int | str | None = None) -> None:
        if detach and executor is not None:
            raise InvalidArgument(
                "Queue(detach=True, executor=...): a detached queue's jobs run in its service, "
                "a process of its own, which cannot use this process's dask client. Start the "
                "service on the cluster instead: nbqueue worker DIR --detach --dask ADDRESS, "
                "then open the queue with Queue(DIR, detach=True)")
        if path is not None:
            check_path(path)
        if workers is not None:
            check_count(workers, "workers", high=MAX_WORKERS)
        check_bool(start, "start")
        check_bool(detach, "detach")
        check_executor(executor)
        self.outputs = check_outputs(outputs)
        policy = check_keep(keep)
        self.memory = check_memory(memory)
        self.path = Path(path).expanduser().absolute() if path is not None else default_path()
        # read-only until the first write, which recovers the jobs of dead dispatchers
        # (so inspecting needs no write lock: nbqueue status while a writer is stopped)
        self._store = Store(self.path)
        record_queue(self.path)  # so that the review page finds it (registry.py)
        if workers is None and executor is not None:
            workers = cluster_threads(executor)  # a dask cluster: its threads, as it is now
        self.workers = workers or os.cpu_count() or 1
        self.executor = executor
        self.detach = detach
        self._service_checked = 0.0
        self._served_checked = 0.0  # see _check_served
        self._workers_asked = workers
        if self.outputs:  # recorded in the directory: whichever process completes, delivers
            register_outputs(self._store, self.outputs)
        if policy is not None:  # recorded too: whichever process serves it, applies it
            write_keep(self._store, policy)
        self._dispatcher: Dispatcher | None = None
        if start:
            self.start()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Queue:
        """Start running jobs: the background dispatcher thread, or the directory's service.

        Idempotent. Without ``detach``, a ``Dispatcher`` thread of this process claims
        and runs the directory's jobs on ``workers`` slots (it recovers the jobs of
        dead dispatchers first). With ``detach=True``, makes sure the directory's service
        serves it: starts one if none is alive (with ``workers``), else uses it and
        warns if it runs another number of workers.

        Returns
        -------
        Queue
            This queue, so that ``q = Queue(path, start=False).start()`` reads.

        Raises
        ------
        ServiceError
            ``detach=True`` and the service could not be started (the end of its log is
            in the message).
        """
        if self.detach:
            self._ensure_service()
            return self
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self._store, workers=self.workers, executor=self.executor)
        self._dispatcher.start()
        return self

    def stop(self, *, cause: str = "its dispatcher stopped") -> None:
        """Stop this process's dispatcher thread (if it runs one).

        Running jobs are handed back to the queue, to run again with no attempt charged
        (no death counted); their worker processes are stopped. A detached queue's
        service keeps running (``nbqueue stop DIR`` stops it).

        Parameters
        ----------
        cause : str
            What the records of the jobs handed back say stopped them (the magics pass
            "the kernel restarted", for instance).
        """
        if self._dispatcher is not None:
            self._dispatcher.stop(cause=cause)

    def join(self, timeout: float | None = None) -> None:
        """Wait until no job is ready or running, nor due within a minute.

        Jobs due within a minute (a retry's backoff, a short ``after``) are waited for;
        jobs waiting for a person (a gate in review), a far moment, or held by a pause
        are not.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; None (default) waits as long as it takes.

        Raises
        ------
        TimeoutError
            The built-in one: jobs were still ready, running or due after ``timeout``.
        DispatcherDied
            This process's dispatcher died (or a detached queue's service is gone) and no
            other process serves the directory: the wait would never end.
        InvalidArgumentType, InvalidArgument
            ``timeout`` is not None or seconds >= 0.
        """
        timeout = check_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            d = self._dispatcher
            if not (d is not None and d.alive and d.busy()):
                counts = self._store.counts()
                if not (counts[J.READY] or counts[J.RUNNING] or self._waiting_to_run()):
                    return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"queue {self.path} still has jobs after {timeout}s")
            self._check_served(f"q.join() on queue {self.path}", needs_run=True)
            self._wait_idle(0.05)

    def _check_served(self, waiting: str | Callable[[], str], *, needs_run: bool) -> None:
        """Raise ``DispatcherDied`` if what ``waiting`` (or what it returns, asked only
        then) waits for would never come: this process's dispatcher died (or, ``detach``,
        the service is gone while ``needs_run``: a job is ready or running) and no other
        process serves the directory. A queue opened with ``start=False`` may wait for a
        worker started later: never raised. Looked at most once a second."""
        d = self._dispatcher
        died = d is not None and not d.alive and d.error is not None
        if not (died or (self.detach and d is None and needs_run)):
            return
        now = time.monotonic()
        if now - self._served_checked < SERVICE_CHECK_EVERY:
            return
        self._served_checked = now
        owner = d.owner if d is not None else None
        if lock_held(self.path) or any(r["alive"] and r["owner"] != owner
                                       for r in self._store.dispatchers()):
            return
        if callable(waiting):
            waiting = waiting()
        if died:
            assert d is not None and d.error is not None
            cause = d.error.strip().splitlines()[-1]
            raise DispatcherDied(
                f"{waiting} would wait forever: this process's dispatcher died ({cause}) and "
                f"no other process serves the queue. Its running jobs went back to ready; "
                f"start it again with q.start() or run: nbqueue worker {self.path} "
                "(the whole error: q.dispatcher.error)")
        raise DispatcherDied(
            f"{waiting} would wait forever: no process serves the queue (its service "
            f"stopped, left idle or died; see {self.path / 'service.log'}). Start one with "
            f"q.start() or: nbqueue worker {self.path} --detach")

    def _waiting_to_run(self) -> bool:
        # retries and near timers count as work to wait for; gates and far times do not
        due = self._store.next_due()
        return due is not None and due < time.time() + 60

    def close(self) -> None:
        """Stop the dispatcher (as ``stop``) and close the directory's files.

        What ``with Queue(...) as q:`` calls on exit. The queue can still be used: the
        next read or write opens the files again (without a dispatcher until
        ``start()``).
        """
        self.stop()
        self._store.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def dispatcher(self) -> Dispatcher | None:
        """This process's dispatcher, or None before ``start()`` (and always with
        ``detach=True``): ``alive`` says whether its thread runs, ``error`` holds the
        traceback that ended it if it died."""
        return self._dispatcher

    @property
    def service(self) -> ServiceRecord | None:
        """The directory's service as it is now; see ``detach``.

        Returns
        -------
        ServiceRecord or None
            Its ``pid``, ``workers``, ``executor``, ``log`` and more: ``alive=True``
            while it serves; ``alive=False`` for a record a service left behind (killed,
            crashed, or its dispatcher died: ``error``); None if no service serves the
            directory (or one is starting and has not written its record yet).
        """
        return find_service(self.path)

    def _ensure_service(self) -> None:
        record, _ = ensure_service(self.path, workers=self._workers_asked)
        if self._workers_asked is not None and record.workers != self._workers_asked:
            warnings.warn(
                f"the service serving {self.path} (pid {record.pid}) runs {record.workers} "
                f"workers, not {self._workers_asked}; to change that, stop it (nbqueue stop "
                f"{self.path}) and open the queue again", UserWarning, stacklevel=3)
        self.workers = record.workers

    def _wake(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.wake()
        elif self.detach:
            self._revive_service()

    def _revive_service(self) -> None:
        """After a submit or a decision: a detached queue whose service has gone (it left
        with ``--idle-exit``, was stopped, killed or crashed) starts a new one, which
        recovers the old one's jobs. Checked at most once a second (one ``flock`` probe)."""
        now = time.monotonic()
        if now - self._service_checked < SERVICE_CHECK_EVERY:
            return
        self._service_checked = now
        if not lock_held(self.path):
            self._ensure_service()

    def _wait_idle(self, timeout: float) -> None:
        # not woken by every commit: a join must not take turns with a busy dispatcher
        self._wait_on(lambda d: d.idle, timeout)

    def _wait_on(self, condition: Callable[[Dispatcher], threading.Condition],
                 timeout: float) -> None:
        d = self._dispatcher
        if d is not None and d.alive:
            event = condition(d)
            with event:
                event.wait(timeout)
        else:
            time.sleep(timeout)

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, name: str | None = None,
               after: Any = None, resources: Any = None, needs: Any = None, priority: int = 0,
               retries: int = 0, retry_delay: float = 1.0, timeout: float | None = None,
               key: str | None = "auto", memory: int | str | None = None,
               **kwargs: Any) -> Job:
        """Submit ``fn(*args, **kwargs)`` as a job; returns its handle.

        The job is stored in one transaction (nothing is stored if anything is wrong)
        and runs once it is ready: its ``after`` moment has come, the jobs it needs are
        done, its resources are free. Option keywords are keyword-only; every other
        keyword goes to ``fn``.

        Parameters
        ----------
        fn : callable
            The function. One that can be imported is stored by reference (module and
            qualname); one defined in a notebook (``__main__``), a lambda or a closure
            is stored by value with cloudpickle, with the Python and cloudpickle
            versions that wrote it (a worker with other versions fails that job
            with a clear error).
        *args, **kwargs
            Its arguments, pickled now. A ``Job`` handle among them is also a need, and
            is replaced by that job's result when this one runs.
        name : str, optional
            The label shown in panels, the CLI and ``%nbq NAME``: one line, not empty.
            Default: ``fn.__name__``.
        after : datetime, timedelta, float or str, optional
            Not before this moment: a ``datetime`` (naive: local time), a
            ``timedelta`` or seconds from now, ``"now"``, ``"in 10m"``, ``"in 1h30m"``,
            ``"15:00"``, ``"3pm"``, ``"3:30pm"`` (today, local; if already past, ready
            now), ``"tomorrow 9:00"``, or ISO 8601 (``"2026-12-01T09:00"``, with or
            without an offset). Resolved once, at submit, and stored as a timestamp
            (docs/constraints.md, "after=").
        resources : list of str, str or dict of str to int, optional
            ``["db"]`` (or ``"db"``): one unit of each, exclusive use of a resource
            nobody declared (capacity 1); ``{"gpu": 2}``: that many units of a resource
            with a capacity (``set_resource``). Taken all at once, in the transaction
            that claims the job, and given back in the one that ends it.
        needs : Job, str or iterable of them, optional
            Jobs (handles or ids) that must be ``done`` first; the handles ``map``
            returns stand for their whole map. A need that ends failed, cancelled or
            rejected cancels this job (and, in turn, what needs it).
        priority : int
            Larger runs first among ready jobs (and goes first at a busy resource);
            submission order within a priority. From ``-2**53`` to ``2**53``; default 0.
        retries : int
            How many times an attempt that failed (an exception, a ``timeout``, its
            ``memory`` limit) runs again; default 0. A worker that dies does not count
            here: three deaths fail the job as poisoned.
        retry_delay : float
            Seconds before the first retry, doubling at each one after (capped at ten
            years); default 1.0. The job waits (``waiting``, holding nothing) meanwhile.
        timeout : float, optional
            Seconds an attempt may run; past it the job is stopped (its worker process
            killed, or its dask task cancelled) and the attempt fails with
            ``TimeoutError``. From above 0 to ten years; default None, no limit.
        key : str or None
            The idempotency key. ``"auto"`` (default): a hash of the function's identity
            and code (and the values of the globals a notebook function reads), the
            arguments (a handle as its id) and ``needs``; other options are not part of
            it. Submitting the same call again returns the existing job (its handle, not
            a new run); resubmitting the key of a failed or cancelled job runs it again
            under the same id, as a new attempt. ``None``: always a new job (calls with
            randomness or side effects). A non-empty string: your own key.
        memory : int or str, optional
            What the job may use (bytes, or ``"4GB"``, ``"512MiB"``) before it is stopped
            and fails with a ``MemoryError`` naming the limit; default: the queue's
            ``memory=``, else no limit (docs/constraints.md, "Memory").

        Returns
        -------
        Job
            The handle of the new job, or of the existing job with the same key.

        Raises
        ------
        SubmitError
            A ``ValueError``: ``fn`` is not callable or cannot be pickled, an argument
            cannot be pickled (or hashed for the automatic key; the message names it), an
            option is of the wrong type or out of range (named), ``after`` is in no
            accepted form, ``key`` is not ``"auto"``, None or a non-empty string, an item
            of a chunked map is passed as an argument, or ``resources`` wants more units
            of a declared resource than its capacity (raise it first).
        NoSuchJob
            A job in ``needs`` (or a handle among the arguments) is not in the queue.
        StoreError
            The directory could not be written (``StoreFull`` for a full disk,
            ``QueueLocked`` for a writer that held it too long).

        In every case nothing is stored.

        See Also
        --------
        Queue.map : many calls in one transaction.
        nbqueue.spawn : the same from inside a running job.

        Examples
        --------
        ::

            h = q.submit(fit, cfg, after="15:00", resources=["gpu"], retries=2)
            h = q.submit(fetch, url, timeout=30, key=None)  # always a new job
            total = q.submit(sum_all, [h1, h2])  # needs h1 and h2, gets their results
            total.result()
        """
        opts = dict(name=name, after=after, resources=resources, needs=needs, priority=priority,
                    retries=retries, retry_delay=retry_delay, timeout=timeout, key=key,
                    memory=self.memory if memory is None else memory)
        return self._submit([(fn, args, kwargs, opts)])[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            chunksize: str | int | None = None, **options: Any) -> Sequence[Job]:
        """Submit ``fn`` over zipped iterables in one transaction; handles in order.

        Parameters
        ----------
        fn : callable
            The function, stored once for every call (as ``submit`` stores it).
        *iterables : iterable
            Its positional arguments, zipped as the built-in ``map`` zips them (the
            shortest ends it); strings and bytes are refused (``[s]`` for one call).
        chunksize : {None, "auto"} or int
            None (default): one job per call. ``"auto"`` or a number of items: a
            *chunked map*, one job whose calls (its items) run in chunks, each a single
            task, of ``chunksize`` items or, ``"auto"``, as many as take a fraction of a
            second (sized from measured durations, as joblib's automatic batching does).
            Each item keeps its own handle, result, failure and retries; submitting the
            same map again attaches to it and runs only its items that failed or were
            cancelled (docs/concepts.md, "Chunked maps").
        **options
            The option keywords of ``submit`` (``name``, ``after``, ``resources``,
            ``needs``, ``priority``, ``retries``, ``retry_delay``, ``timeout``, ``key``,
            ``memory``), applied to every call; ``map`` passes no keywords to ``fn``.
            ``memory`` defaults to the queue's. With ``chunksize``, ``key`` is the map's
            (``"auto"``: the function, the items and ``needs``), and ``timeout`` needs
            ``chunksize="auto"``, which then runs each item alone.

        Returns
        -------
        list of Job or MapJobs
            Without ``chunksize``, one ``Job`` per call, in order (an existing job for a
            call whose key exists). With it, a ``MapJobs``: a sequence of ``MapItem``
            handles (each a ``Job``: ``hs[i].result()``, ``.cancel()``, ``.retry()``),
            made as they are asked for; ``hs.map`` is the map's own job (None for no
            items).

        Raises
        ------
        SubmitError
            An unknown option, no iterable or one that is not an iterable of arguments,
            and every ``SubmitError`` of ``submit`` for any call (naming it); with
            ``chunksize``: a ``chunksize`` that is not ``"auto"`` or a whole number from
            1, a generator handler, a ``Job`` among the items, a ``timeout`` with a
            fixed ``chunksize`` above 1, a ``key`` already taken by a job that is not a
            map.
        NoSuchJob
            A job in ``needs`` is not in the queue.

        In every case nothing is stored, not even the calls before the bad one.

        Examples
        --------
        ::

            hs = q.map(count_words, paths, priority=5)      # one job per path
            hs = q.map(pow, bases, exponents)               # zips like map()
            hs = q.map(score, rows, chunksize="auto")       # a chunked map
            q.gather(hs)                                    # the results, in order
        """
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise SubmitError(f"map(): unknown option {', '.join(unknown)}; accepted: "
                              f"{', '.join(OPTION_NAMES)} (map passes no keywords to fn)")
        if not iterables:
            raise SubmitError("map() needs at least one iterable of arguments")
        for i, iterable in enumerate(iterables, 1):
            if isinstance(iterable, (str, bytes)) or not isinstance(iterable, Iterable):
                raise SubmitError(f"map(): iterable #{i} ({type(iterable).__name__} "
                                  f"{str(iterable)[:40]!r}) is not a list or other iterable of "
                                  "arguments; nothing was stored")
        if options.get("memory") is None and self.memory is not None:
            options["memory"] = self.memory
        if chunksize is not None:
            return self._map_chunked(fn, iterables, chunksize, options)
        return self._submit([(fn, args, {}, options) for args in zip(*iterables, strict=False)])

    def _map_chunked(self, fn: Callable[..., Any], iterables: Sequence[Iterable[Any]],
                     chunksize: Any, options: dict[str, Any]) -> Sequence[Job]:
        try:
            chunksize = check_chunksize(chunksize)
        except InvalidArgument as exc:
            raise SubmitError(f"map(): {exc}; nothing was stored") from None
        now = time.time()
        new = build_map(fn, iterables, options, chunksize, now)
        if new is None:
            return MapJobs(self, None, 0)
        self._check_capacities([new.job])
        map_id, created = self._store.submit_map(new, now=now)
        self._wake()
        if created:
            return MapJobs(self, map_id, new.total)
        info = self._store.map_info(map_id)  # attached: the map stored under the key
        return MapJobs(self, map_id, info["total"] if info else new.total)

    def _submit(self, calls: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any],
                                        dict[str, Any]]]) -> list[Job]:
        now = time.time()
        packed: dict[int, tuple[Any, str | None]] = {}
        memo: dict[Any, Any] = {}  # per (fn, opts): options, after, needs (calls and opts live on)
        jobs = []
        ids = new_ids(len(calls))
        for job_id, (fn, args, kwargs, opts) in zip(ids, calls, strict=True):
            if id(fn) not in packed:
                function = pack_function(fn)
                fingerprint = function_fingerprint(fn) if opts.get("key", "auto") == "auto" else None
                packed[id(fn)] = (function, fingerprint)
            function, fingerprint = packed[id(fn)]
            if fingerprint is None and opts.get("key", "auto") == "auto":
                fingerprint = function_fingerprint(fn)
            jobs.append(build_job(fn, args, kwargs, opts, job_id=job_id, now=now,
                                  function=function, fingerprint=fingerprint, memo=memo))
        self._check_capacities(jobs)
        results = self._store.submit_many(jobs, now=now)
        self._wake()
        return [Job(self, job_id) for job_id, _ in results]

    def _check_capacities(self, jobs: list[J.NewJob]) -> None:
        """Refuse a job that wants more units of a declared resource than it has: it
        could never run. (An undeclared resource may still be declared large enough.)"""
        wanted: dict[str, tuple[int, str]] = {}
        for options, name in {id(new.options): (new.options, new.name) for new in jobs}.values():
            for resource, units in options.resources.items():
                if units > wanted.get(resource, (0, ""))[0]:
                    wanted[resource] = (units, name)
        if not wanted:
            return
        capacities = self._store.capacities()
        for resource, (units, name) in wanted.items():
            capacity = capacities.get(resource)
            if capacity is not None and units > capacity:
                raise SubmitError(
                    f"cannot submit {name}: resources={{{resource!r}: {units}}} is more than "
                    f"the capacity of resource {resource} ({capacity}), so it could never run. "
                    f"Raise the capacity first: q.set_resource({resource!r}, capacity={units}) "
                    f"(or nbqueue resources DIR --set {resource} --capacity {units}); nothing "
                    "was stored")

    def review(self, title: str, payload: Any = None, *, name: str | None = None,
               after: Any = None, needs: Any = None, priority: int = 0,
               key: str | None = "auto", fields: Any = None, deadline: Any = None,
               on_deadline: str | None = None, remind_every: Any = None) -> Job:
        """Create a human review gate: a job that never runs, and waits for a person.

        With unmet ``needs`` (or a future ``after``) the gate is ``waiting``; then it
        sits in state ``review``, holding no worker and no resource, until someone
        approves it (it becomes ``done`` with a ``Decision`` as its result; its
        dependents run) or rejects it (``rejected``; its dependents are cancelled),
        across restarts (docs/reviews.md).

        Parameters
        ----------
        title : str
            What is to be decided: one line, not empty. Also the gate's name by default.
        payload : object, optional
            Anything with a rich display (text, HTML, a figure, a DataFrame), stored now
            as a display bundle (``text/plain`` always, richer forms where the object
            offers them) that panels and the review page render (``Job.payload``).
        name, after, needs, priority, key
            As for ``submit``. The automatic key is the title and the needs (not the
            payload), so re-running the cell that creates a gate attaches to it.
        fields : dict, optional
            Answers asked of the reviewer, by name: a default value (``0.5``), a list
            of choices (``["north", "south"]``) or a type for a required answer
            (``str``); they come back in ``Decision.values``.
        deadline : float, timedelta or str, optional
            Seconds or a ``timedelta`` from when the gate enters review, or a moment in
            any form of ``after=`` (``"tomorrow 09:00"``).
        on_deadline : {"reject", "approve", "keep"}, optional
            What the dispatcher serving the queue does once the deadline passed:
            ``"keep"`` (the default) waiting, marked overdue, with a ``reminder`` event;
            ``"reject"``; or ``"approve"`` with the fields' defaults. A decision the
            deadline makes is recorded as ``Decision.by == "deadline"``. Only with
            ``deadline``.
        remind_every : float, timedelta or str, optional
            A reminder event for the notifiers (``Webhook``, ``Email``) this often
            while it waits (``"2h"``).

        Returns
        -------
        Job
            The gate's handle (an existing gate with the same key).

        Raises
        ------
        SubmitError
            A bad title, name, priority, key, ``after``, ``needs``, field, deadline or
            reminder (the message names it); nothing is stored.
        NoSuchJob
            A job in ``needs`` is not in the queue.

        Examples
        --------
        ::

            gate = q.review("Approve the Q3 report", payload=figure, needs=[report],
                            fields={"threshold": 0.7}, deadline="tomorrow 09:00")
            publish = q.submit(publish_report, needs=[gate])  # runs once approved
        """
        from .display import payload_bytes
        from .message import content_key
        from .reviewing import make_spec
        from .times import parse_after

        try:
            check_line(title, "title", what="a non-empty one-line title")
            if name is not None:
                check_line(name, "name")
            check_priority(priority)
        except InvalidArgument as exc:
            raise SubmitError(f"cannot create review {title!r}: {exc}; nothing was stored") \
                from None
        if key is not None and key != "auto" and (not isinstance(key, str) or not key.strip()):
            raise SubmitError(f"cannot create review {title!r}: key={key!r}; give 'auto', None "
                              "or a non-empty string; nothing was stored")
        now = time.time()
        try:
            not_before = parse_after(after, now=now)
            spec = make_spec(title, fields=fields, deadline=deadline, on_deadline=on_deadline,
                             remind_every=remind_every, now=now)
        except ValueError as exc:
            raise SubmitError(f"cannot create review {title!r}: {exc}") from None
        need_ids = needs_ids(needs)
        if key == "auto":
            key = content_key("gate", (title,), {}, need_ids)
        options = J.Options(name=name or title, priority=priority)
        gate = J.NewJob(id=new_id(), name=options.name or title, options=options, kind=J.GATE,
                        key=key, needs=need_ids, not_before=not_before,
                        payload=payload_bytes(payload), gate=spec.to_json())
        (job_id, _), = self._store.submit_many([gate], now=now)
        self._wake()
        return Job(self, job_id)

    # -- pausing -------------------------------------------------------------------------------

    def pause(self, name: str | None = None) -> int:
        """Claim nothing new: of the whole queue, or (``name``) of the jobs of that name.

        Running jobs run to their end; ready jobs (and those that become ready) wait
        with the reason ``paused`` until ``resume``. Stored in the directory: it holds
        for every process serving the queue, and across restarts. Review gates and
        schedules' firings are not held (the jobs firings make are).

        Parameters
        ----------
        name : str, optional
            Only the jobs of this name (their ``name=``, cell name or function name);
            None (default): the whole queue.

        Returns
        -------
        int
            How many ready jobs it parked (0 if that pause was already on).

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            ``name`` is not a non-empty one-line string.
        """
        pause = QUEUE if name is None else check_line(name, "name")
        return self._store.pause(pause, time.time())[1]

    def resume(self, name: str | None = None) -> int:
        """Lift the pause of the whole queue, or (``name``) of the jobs of that name.

        Each pause is lifted on its own: ``resume()`` leaves a paused name held, and
        ``resume(name)`` leaves a paused queue paused.

        Parameters
        ----------
        name : str, optional
            The name given to ``pause``; None (default): the whole queue's pause.

        Returns
        -------
        int
            How many jobs became ready (0 if that pause was not on).

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            ``name`` is not a non-empty one-line string.
        """
        pause = QUEUE if name is None else check_line(name, "name")
        released = self._store.resume(pause, time.time())[1]
        self._wake()
        return released

    def paused(self) -> dict[str, Any]:
        """What is paused.

        Returns
        -------
        dict
            ``{"queue": bool, "names": [...]}``: whether the whole queue is paused, and
            the job names paused (sorted).
        """
        pauses = self._store.pauses()
        return {"queue": QUEUE in pauses, "names": sorted(n for n in pauses if n != QUEUE)}

    # -- recurring work ----------------------------------------------------------------------

    def schedule(self, fn: Callable[..., Any], /, *args: Any, every: Any = None,
                 cron: Any = None, tz: Any = None, catch_up: str = "one",
                 overlap: bool = False, name: str | None = None, **kwargs: Any) -> Schedule:
        """Run ``fn(*args, **kwargs)`` again and again, as a schedule stored in the directory.

        Each firing is a job of that call, named ``name`` and keyed by the schedule and
        the firing time, made in the transaction that moves the schedule past the
        firing: it runs once however many processes serve the queue. Every dispatcher
        serving the queue fires due schedules; nothing fires while none does
        (docs/constraints.md, "Schedules").

        Parameters
        ----------
        fn : callable
            The function, stored as ``submit`` stores it.
        *args, **kwargs
            Its arguments; the option keywords of ``submit`` among ``kwargs``
            (``resources``, ``priority``, ``retries``, ``retry_delay``, ``timeout``,
            ``needs``, ``memory``) apply to every job, except ``key`` (refused) and
            ``after``, which sets the first firing (any form of ``after=``).
        every : float, timedelta or str, optional
            A period (``"30s"``, ``"1h"``, ``"1h30m"``, seconds, a ``timedelta``; from
            1 second to ten years): exact elapsed time, the first firing one period from
            now (or at ``after``).
        cron : str, optional
            Five fields, ``minute hour day-of-month month day-of-week``
            (``"0 9 * * mon-fri"``, ``L``, ``1#2``), read in ``tz``. Exactly one of
            ``every`` and ``cron``.
        tz : str or tzinfo, optional
            A time zone of the tz database (``"Europe/Berlin"``, ``"UTC"``) for
            ``cron`` only; default: local time.
        catch_up : {"one", "skip", "all"}
            Firings missed while nothing served the queue: ``"one"`` (default) runs the
            latest, now; ``"skip"`` runs none; ``"all"`` runs each.
        overlap : bool
            False (default): a firing whose schedule's previous job has not ended is
            skipped (with ``catch_up="all"``: it waits). True: each firing makes its job.
        name : str, optional
            The schedule's name and its jobs' name; default: the function's name.

        Returns
        -------
        Schedule
            Its handle (``pause``, ``resume``, ``delete``, ``jobs``); its ``outcome``
            says what this call did: ``"created"``, ``"kept"`` (the same schedule was
            stored under that name: firings and counts stay) or ``"replaced"`` (it fires
            otherwise or makes another call; its next firing is computed anew).

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            A bad ``every``, ``cron``, ``tz``, ``catch_up``, ``overlap``, ``name`` or
            ``after``, neither or both of ``every`` and ``cron``, or ``key=``.
        SubmitError
            ``fn``, an argument or another option as ``submit`` refuses them (capacity
            included).

        Examples
        --------
        ::

            q.schedule(fetch_prices, "EUR", every="1h")
            q.schedule(report, cron="0 9 * * mon-fri", tz="Europe/Berlin",
                       name="morning-report", catch_up="skip")
        """
        return make_schedule(self, fn, args, kwargs, every=every, cron=cron, tz=tz,
                             catch_up=catch_up, overlap=overlap, name=name)

    def schedules(self) -> list[ScheduleRecord]:
        """The schedules stored in the directory, by name.

        Returns
        -------
        list of ScheduleRecord
            Each with its timing, ``next`` firing (a Unix time; None while paused),
            ``last`` firing, counts (``fired``, ``missed``, ``skipped``) and ``note``;
            ``q.schedule_of(name)`` gives a handle to pause, resume or delete one.
        """
        return self._store.schedule_records()

    def schedule_of(self, name: str) -> Schedule:
        """The handle of the schedule ``name``.

        Raises
        ------
        NoSuchSchedule
            No schedule has that name (a ``KeyError``).
        InvalidArgumentType, InvalidArgument
            ``name`` is not a non-empty one-line string.
        """
        self._store.schedule_record(check_line(name, "name"))
        return Schedule(self, name)

    # -- reading and acting ------------------------------------------------------------------

    def job(self, id_or_key: str) -> Job:
        """The handle of a job by its id or key.

        Parameters
        ----------
        id_or_key : str or Job
            A job's id or key; an item of a chunked map by its id, ``<map id>#<index>``.
            (``find`` also takes names and the start of an id.)

        Returns
        -------
        Job
            Its handle (a ``MapItem`` for an item of a chunked map).

        Raises
        ------
        NoSuchJob
            No job has that id or key (a ``KeyError``).
        InvalidArgumentType, InvalidArgument
            ``id_or_key`` is not a ``Job`` or a non-empty string.
        """
        ref = check_job_ref(id_or_key, "id_or_key")
        job_id = self._store.find(ref)
        if job_id is None and "#" in ref:
            item = item_handle(self, ref)
            if item is not None:
                return item
        if job_id is None:
            raise NoSuchJob(f"no job with id or key {id_or_key!r} in queue {self.path}; "
                            "list them with q.jobs()")
        return Job(self, job_id)

    def jobs(self, state: str | None = None, name: str | None = None) -> list[Job]:
        """Handles of the jobs, oldest first.

        Parameters
        ----------
        state : str, optional
            Only the jobs in this state (``waiting``, ``ready``, ``running``, ``review``,
            ``done``, ``failed``, ``cancelled``, ``rejected``).
        name : str, optional
            Only the jobs of this name.

        Returns
        -------
        list of Job
            Each holding the record it was listed with (``h.state`` reads it again).

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            ``state`` is not one of the states, or ``name`` not a string.
        """
        if state is not None and state not in J.STATES:
            raise (InvalidArgument if isinstance(state, str) else InvalidArgumentType)(
                f"jobs(state={state!r}): give one of {', '.join(J.STATES)}, or None")
        if name is not None:
            check_text(name, "name")
        return [Job(self, r.id, r) for r in self._store.list_jobs(state=state, name=name)]

    def find(self, ref: str) -> Job:
        """The job a person names, as the CLI and ``%nbq`` take it.

        Parameters
        ----------
        ref : str
            Tried in this order: a job's id, its key, its name (the newest job of that
            name), the start of its id (4 or more hex digits, any case; a child's
            ``.step.position`` may follow).

        Returns
        -------
        Job
            Its handle.

        Raises
        ------
        NoSuchJob
            Nothing matches.
        AmbiguousJob
            The start of an id matches several jobs (listed, with their names).
        """
        from .lookup import resolve

        return Job(self, resolve(self._store, check_text(ref, "ref")))

    def records(self, state: str | None = None, *, limit: int | None = None,
                ) -> list[J.JobRecord]:
        """The jobs' records as committed, oldest first (a map's chunks left out).

        Parameters
        ----------
        state : str, optional
            Only the jobs in this state.
        limit : int, optional
            At most this many (the oldest).

        Returns
        -------
        list of JobRecord

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            ``state`` is not one of the states, or ``limit`` not a whole number >= 0.
        """
        if state is not None and state not in J.STATES:
            raise (InvalidArgument if isinstance(state, str) else InvalidArgumentType)(
                f"records(state={state!r}): give one of {', '.join(J.STATES)}, or None")
        if limit is not None:
            check_count(limit, "limit", low=0)
        return self._store.list_jobs(state=state, limit=limit)

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state, ``{state: n}`` (kept as a running count by
        every commit: one read, whatever the size of the queue)."""
        return self._store.counts()

    def changes(self) -> int:
        """A counter that every committed change of a job bumps (any process's).

        Returns
        -------
        int
            Equal values: nothing changed in between. One cheap read, meant to be polled
            (the panel, ``nbqueue logs --follow``): re-read the jobs only when it moved.
        """
        return self._store.changes()

    def dispatchers(self) -> list[dict[str, Any]]:
        """The dispatchers that served or serve the directory, oldest first.

        Returns
        -------
        list of dict
            Each with ``owner``, ``pid``, ``host``, ``started``, ``heartbeat``,
            ``workers``, ``executor``, ``error``, ``stopped`` and ``alive`` (not stopped,
            and its process not known to be dead).
        """
        return self._store.dispatchers()

    def tree(self) -> JobTree:
        """The job tree as the panel pages it (reads only).

        Returns
        -------
        JobTree
            Pages of top-level jobs, a parent's children, a job's earlier runs, and
            names and states by id, each read when asked.
        """
        return JobTree(self._store)

    def forget(self, state: str | Sequence[str] | None = None,
               older_than: float | None = None) -> Forgotten:
        """Delete ended jobs, their results, arguments and logs.

        Parameters
        ----------
        state : str or sequence of str, optional
            Only the jobs in this ended state (or these): ``done``, ``failed``,
            ``cancelled``, ``rejected``; None (default): all four.
        older_than : float, optional
            Only the jobs that ended more than this many seconds ago.

        Returns
        -------
        Forgotten
            How many were deleted, an ``int`` whose ``kept`` lists the ended jobs it
            did not delete because jobs not ended yet still need them (a job whose
            result another takes as an argument or waits for, the children of a
            generator's earlier steps, the parent of a spawned child); a later
            ``forget`` deletes them once those jobs have ended.

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            ``state`` names a state that is not ended (or is not a str or list), or
            ``older_than`` is not seconds >= 0.

        Notes
        -----
        Works on a full disk while the directory's reserve lasts (docs/concepts.md,
        "Errors of the store"). Handles of forgotten jobs raise ``NoSuchJob``.
        """
        ended = ", ".join(sorted(J.ENDED))
        if state is not None and not isinstance(state, (str, list, tuple, set, frozenset)):
            raise InvalidArgumentType(f"forget(state={state!r}): give a state ({ended}), a "
                                      "list of them, or None for all four")
        states = [state] if isinstance(state, str) else list(state or J.ENDED)
        bad = [s for s in states if s not in J.ENDED]
        if bad:
            raise (InvalidArgument if isinstance(bad[0], str) else InvalidArgumentType)(
                f"forget(state={bad[0]!r}): only ended jobs can be forgotten ({ended})")
        if older_than is not None:
            check_seconds(older_than, "older_than", allow_zero=True, high=math.inf)
        cutoff = None if older_than is None else time.time() - older_than
        deleted, kept = self._store.forget(states, cutoff)
        if self._dispatcher is not None:
            self._dispatcher.waiters.drop_ahead()
        return Forgotten(deleted, kept)

    def gc(self, older_than: Any = None, *, dry_run: bool = False) -> Collected:
        """Collect garbage now (what the keeper thread of a dispatcher does in the background).

        Forgets the ended jobs past the directory's ``keep`` with ``forget``'s rules;
        deletes the values of results and arguments and the stored functions nothing
        refers to any more, and value files no row names; empties the write-ahead log;
        VACUUMs ``cache.db`` when it is worth it (docs/concepts.md, "Retention and disk
        space").

        Parameters
        ----------
        older_than : float, timedelta or str, optional
            Also forget every ended job that ended longer ago than this (seconds, a
            ``timedelta``, ``"30d"``).
        dry_run : bool
            Only read, and say what it would do.

        Returns
        -------
        Collected
            What it did (or would do), with ``before`` and ``after`` (``du()``).

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            ``older_than`` is not a duration >= 0, or ``dry_run`` not a bool.
        """
        check_bool(dry_run, "dry_run")
        seconds = None if older_than is None else check_duration(older_than, "older_than",
                                                                 allow_zero=True)
        collected = collect(self._store, older_than=seconds, dry_run=dry_run)
        if self._dispatcher is not None and not dry_run:
            self._dispatcher.waiters.drop_ahead()
        return collected

    @property
    def keep(self) -> dict[str, float]:
        """The directory's retention, as ``Queue(keep=...)`` last recorded it.

        Returns
        -------
        dict of str to float
            Ended state -> seconds its jobs are kept; empty: every job is kept.
        """
        return read_keep(self._store)

    def du(self) -> Usage:
        """Where the directory's space goes (reads only; what ``nbqueue du`` prints).

        Returns
        -------
        Usage
            Bytes by kind (rows, results, arguments, logs, functions, files, wal; they
            add up to ``total``) and by state.
        """
        return usage(self._store)

    def gather(self, handles: Iterable[Job], return_exceptions: bool = False,
               timeout: float | None = None) -> list[Any]:
        """The results of jobs of this queue, in the order of ``handles``, once all ended.

        Parameters
        ----------
        handles : iterable of Job
            Handles of jobs of this queue directory (a list, a generator); a job may
            appear more than once.
        return_exceptions : bool
            False (default): the first failure seen is raised as ``h.result()`` raises it
            (``JobFailed``, ``JobCancelled``, ``NoSuchJob`` for a forgotten job,
            ``UnreadableResult``), without waiting for the other jobs, which go on.
            True: that exception takes the job's place in the list instead.
        timeout : float, optional
            Seconds to wait for all of them; None (default) waits as long as it takes.

        Returns
        -------
        list
            One result per handle, in the order given.

        Raises
        ------
        TimeoutError
            The built-in one, naming a job not ended, if some had not ended after
            ``timeout`` seconds (also with ``return_exceptions=True``: a wait that ran
            out is no job's outcome); the jobs go on, and a later gather collects them.
        InvalidArgumentType, InvalidArgument
            ``handles`` is not an iterable of ``Job`` handles of this queue, or another
            argument is wrong; nothing is read.
        DispatcherDied
            Nothing would ever run a job waited for (docs/concepts.md).

        Notes
        -----
        The jobs are read in bulk (500 per query). Those that this process's dispatcher
        runs are handed over, results included, as it commits them, and the wait is woken
        once, when the last one is committed; those that other processes run are seen by
        polling (docs/concepts.md, "Collecting results").
        """
        return gather(self, handles, return_exceptions, timeout)

    def reviews(self) -> list[Job]:
        """The review gates waiting for a decision (state ``review``), oldest first.

        Returns
        -------
        list of Job
        """
        return self.jobs(state=J.REVIEW)

    def approve(self, job_id: Any, comment: str = "", values: dict[str, Any] | None = None,
                ) -> None:
        """Approve a gate in review: it becomes ``done`` and its dependents run.

        Its result is a ``Decision(True, comment, by, at, values)``: ``by`` is the OS
        user, ``at`` a timestamp. Any process with the directory open may decide; a
        dispatcher in another process sees it within its polling interval.

        Parameters
        ----------
        job_id : Job or str
            The gate: its handle or its id.
        comment : str
            Recorded with the decision.
        values : dict, optional
            Answers to the gate's fields, ``{"threshold": 0.7}``: values, or strings as
            typed; those left out take their defaults.

        Raises
        ------
        JobStateError
            A ``ValueError``: the job is not a gate in review (decided already, still
            waiting for its needs, an ordinary job); nothing changes.
        InvalidAnswer
            A ``ValueError`` naming the field whose answer does not validate; nothing
            changes.
        NoSuchJob
            No job has that id.
        InvalidArgumentType, InvalidArgument
            ``job_id`` is not a ``Job`` or a non-empty string, ``comment`` not a str,
            or ``values`` not a dict.
        """
        if values is not None and not isinstance(values, dict):
            raise InvalidArgumentType(f"values={values!r}: give a dict of field name -> value")
        self._store.decide(check_job_ref(job_id, "job_id"), approve=True,
                           comment=check_text(comment, "comment"), values=values)
        self._wake()

    def reject(self, job_id: Any, comment: str = "") -> None:
        """Reject a gate in review: it becomes ``rejected``, and the jobs that need it
        (and, in turn, what needs those) are cancelled.

        Parameters
        ----------
        job_id : Job or str
            The gate: its handle or its id.
        comment : str
            Recorded with the decision.

        Raises
        ------
        JobStateError
            A ``ValueError``: the job is not a gate in review; nothing changes.
        NoSuchJob
            No job has that id.
        InvalidArgumentType, InvalidArgument
            ``job_id`` is not a ``Job`` or a non-empty string, or ``comment`` not a str.
        """
        self._store.decide(check_job_ref(job_id, "job_id"), approve=False,
                           comment=check_text(comment, "comment"))
        self._wake()

    def set_resource(self, name: str, *, capacity: int | None = None,
                     available: bool | None = None, rate: str | bool | None = None) -> None:
        """Declare a resource's capacity, make it (un)available, or limit how often jobs
        holding it start.

        Stored in the directory: it holds for every process serving it and across
        restarts (docs/constraints.md, "Resources").

        Parameters
        ----------
        name : str
            The resource, as jobs name it in ``resources=``.
        capacity : int, optional
            How many units may be held at once (1 to ``2**53``); raising it lets
            waiters in at once. None: leave it (an undeclared resource has capacity 1).
        available : bool, optional
            False: jobs that want it wait (``resource db is unavailable``); those
            holding it run to their end. True: let them in again. None: leave it.
        rate : str or bool, optional
            ``"10/min"`` (also ``"5/s"``, ``"100/h"``, ``"1000/d"``, ``"3/10s"``, ``"10
            per minute"``): at most that many jobs holding it start in any such period,
            across every process. ``False`` removes the limit; None leaves it. A
            resource first declared with a rate alone has no capacity limit.

        Raises
        ------
        InvalidArgumentType, InvalidArgument
            A bad ``name`` (not a non-empty string without surrounding spaces or control
            characters), ``capacity``, ``available`` or ``rate``; nothing changes.
        """
        check_name(name, "name")
        if capacity is not None:
            check_count(capacity, "capacity")
        if available is not None:
            check_bool(available, "available")
        self._store.set_resource(name, capacity=capacity, available=available,
                                rate=check_rate(rate))
        self._wake()

    def resources(self) -> dict[str, dict[str, Any]]:
        """Every declared, held or awaited resource.

        Returns
        -------
        dict
            ``{name: {"capacity", "available", "holders", "waiting", "rate",
            "next_start"}}``: ``holders`` a list of ``{"job", "units", "since"}``,
            ``waiting`` how many jobs wait for it, ``next_start`` when the next may
            start while its rate limit holds jobs back.
        """
        return self._store.resources()

    def status(self) -> dict[str, Any]:
        """The queue at a glance, as data: what ``nbqueue status --json`` prints.

        Returns
        -------
        dict
            ``path``, ``format``, ``counts`` (one entry per state), ``running``,
            ``reviews``, ``resources``, ``dispatchers`` and more (docs/cli.md).
        """
        from .status import queue_status

        return queue_status(self)

    def panel(self) -> Any:
        """The live ipywidgets panel of this queue (what ``%nbq`` shows).

        Counts per state, the job tree with progress, cancel and retry buttons, the
        resources with an available switch, pending reviews with Approve and Reject
        (docs/notebook.md). Needs ipywidgets, imported only here.

        Returns
        -------
        QueuePanel
            An ipywidgets widget; display it.
        """
        from .widgets import QueuePanel

        return QueuePanel(self)

    def _repr_html_(self) -> str:
        from .display import queue_html

        return queue_html(self.status())

    def __repr__(self) -> str:
        return f"<nbqueue.Queue {str(self.path)!r}>"


class Forgotten(int):
    """What ``Queue.forget`` returns: the number of jobs deleted, and in ``kept`` the ids
    of the ended jobs it kept because jobs not ended yet still need them."""

    kept: tuple[str, ...]

    def __new__(cls, deleted: int, kept: Sequence[str] = ()) -> Forgotten:
        self = super().__new__(cls, deleted)
        self.kept = tuple(kept)
        return self

    def __repr__(self) -> str:
        if not self.kept:
            return int.__repr__(self)
        return (f"{int(self)} (and {len(self.kept)} ended job{'s' if len(self.kept) > 1 else ''} "
                f"kept: jobs not ended yet need {'them' if len(self.kept) > 1 else 'it'}; see "
                ".kept)")

    __str__ = int.__repr__
