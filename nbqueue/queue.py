"""The queue API: ``Queue`` (a directory plus, optionally, a dispatcher) and ``Job`` handles."""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from .collect import failure, gather, value, wait_one
from .dispatcher import Dispatcher
from .errors import (
    DispatcherDied,
    InvalidArgument,
    InvalidArgumentType,
    JobFailed,
    NoSuchJob,
    SubmitError,
)
from .executors import check_executor, cluster_threads
from .housekeeping import Collected, check_keep, collect
from .jobtree import JobTree
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
from .store.pauses import QUEUE
from .store.transitions import new_id, new_ids
from .store.usage import Usage, usage

if TYPE_CHECKING:
    from .details import JobDetails

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
        """Start the background dispatcher thread (idempotent); with ``detach=True``, make
        sure the directory's service serves it instead."""
        if self.detach:
            self._ensure_service()
            return self
        if self._dispatcher is None:
            self._dispatcher = Dispatcher(self._store, workers=self.workers, executor=self.executor)
        self._dispatcher.start()
        return self

    def stop(self, *, cause: str = "its dispatcher stopped") -> None:
        """Stop the dispatcher; running jobs are handed back to the queue, to run again
        with no attempt charged. ``cause`` is what their records say stopped them."""
        if self._dispatcher is not None:
            self._dispatcher.stop(cause=cause)

    def join(self, timeout: float | None = None) -> None:
        """Wait until no job is ready or running, nor due within a minute (a retry's
        backoff, a short ``after``); jobs waiting for a person or a far time do not count."""
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
        """Stop the dispatcher (as ``stop``) and close the directory's files. The queue
        can still be used: the next read or write opens them again."""
        self.stop()
        self._store.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._dispatcher

    @property
    def service(self) -> ServiceRecord | None:
        """The directory's service as it is now (``alive`` says whether it runs), or None
        if none serves it; see ``detach``."""
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

        Option keywords are keyword-only; every other keyword goes to ``fn``. A call
        with the same automatic key as an existing job returns that job. ``memory``:
        what the job may use (``"4GB"``; default: the queue's ``memory=``) before it is
        stopped and fails with a ``MemoryError`` naming the limit.
        """
        opts = dict(name=name, after=after, resources=resources, needs=needs, priority=priority,
                    retries=retries, retry_delay=retry_delay, timeout=timeout, key=key,
                    memory=self.memory if memory is None else memory)
        return self._submit([(fn, args, kwargs, opts)])[0]

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            chunksize: str | int | None = None, **options: Any) -> Sequence[Job]:
        """Submit ``fn`` over zipped iterables in one transaction; handles in order.

        ``chunksize=None`` (the default): one job per call. ``"auto"`` or a number of
        items: a *chunked map*, one job whose calls (its items) run in chunks, each a
        single task, of ``chunksize`` items or, ``"auto"``, as many as take a fraction of
        a second (sized from measured durations, as joblib's automatic batching does).
        Each item keeps its own handle, result, failure and retries (``hs[i].result()``);
        submitting the same map again attaches to it and runs only its items that failed
        or were cancelled. Returns a sequence of item handles; ``hs.map`` is the map's own
        job (docs/concepts.md, "Chunked maps").
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
        from .chunking import check_chunksize
        from .mapjobs import MapJobs, build_map

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
        """A human review gate: waits in ``review`` until approved or rejected.

        ``fields`` asks the reviewer for answers (``{"threshold": 0.5, "region":
        ["north", "south"], "note": str}``: a default value, a list of choices, or a
        type for a required answer); they come back in ``Decision.values``.
        ``deadline`` (seconds or a ``timedelta`` from when the gate enters review, or a
        moment such as ``"tomorrow 09:00"``) with ``on_deadline`` (``"reject"``, the
        default; ``"approve"`` with the fields' defaults; ``"keep"`` waiting): applied
        by the dispatcher serving the queue once it passed, recorded as
        ``Decision.by == "deadline"``. ``remind_every`` (seconds, a ``timedelta``,
        ``"2h"``): a reminder event for the notifiers while it waits (docs/reviews.md).
        """
        from .constraints import parse_after
        from .display import payload_bytes
        from .message import content_key
        from .reviewing import make_spec

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
        Running jobs run to their end; waiting and ready jobs wait with the reason
        ``paused`` until ``resume``. Stored in the directory: it holds for every process
        serving the queue, and across restarts. Returns how many ready jobs it parked."""
        pause = QUEUE if name is None else check_line(name, "name")
        return self._store.pause(pause, time.time())[1]

    def resume(self, name: str | None = None) -> int:
        """Lift the pause of the whole queue (or, ``name``, of the jobs of that name; each
        pause is lifted on its own). Returns how many jobs became ready."""
        pause = QUEUE if name is None else check_line(name, "name")
        released = self._store.resume(pause, time.time())[1]
        self._wake()
        return released

    def paused(self) -> dict[str, Any]:
        """``{"queue": bool, "names": [...]}``: whether the whole queue is paused, and the
        job names paused."""
        pauses = self._store.pauses()
        return {"queue": QUEUE in pauses, "names": sorted(n for n in pauses if n != QUEUE)}

    # -- recurring work ----------------------------------------------------------------------

    def schedule(self, fn: Callable[..., Any], /, *args: Any, every: Any = None,
                 cron: Any = None, tz: Any = None, catch_up: str = "one",
                 overlap: bool = False, name: str | None = None, **kwargs: Any) -> Schedule:
        """Run ``fn(*args, **kwargs)`` again and again: ``every`` (``"1h"``, ``"30m"``,
        seconds, a ``timedelta``: exact elapsed time from the first firing) or at the
        times of ``cron`` (``"0 9 * * mon-fri"``) in time zone ``tz`` (default: local).

        Each firing is a job named ``name`` (default: the function's name, which also
        names the schedule) keyed by the schedule and the firing time, so it runs once
        however many processes serve the queue. ``after=`` sets the first firing (an
        ``every`` schedule starts one period from now otherwise). Firings missed while
        nothing served the queue follow ``catch_up``: ``"skip"`` (none runs), ``"one"``
        (the latest runs, now) or ``"all"`` (each runs). ``overlap=False`` skips a firing
        while the job of the one before has not ended (with ``catch_up="all"``, it runs
        after it). The other option keywords of ``submit`` apply to every job; other
        keywords go to ``fn``. Calling it again with the same name keeps the schedule, or
        replaces it if it fires otherwise or makes another call (docs/constraints.md).
        """
        return make_schedule(self, fn, args, kwargs, every=every, cron=cron, tz=tz,
                             catch_up=catch_up, overlap=overlap, name=name)

    def schedules(self) -> list[ScheduleRecord]:
        """The schedules, by name, each with its ``next`` firing (``ScheduleRecord``);
        ``q.schedule_of(name)`` gives a handle to pause, resume or delete one."""
        return self._store.schedule_records()

    def schedule_of(self, name: str) -> Schedule:
        """The handle of the schedule ``name`` (``NoSuchSchedule`` if none)."""
        self._store.schedule_record(check_line(name, "name"))
        return Schedule(self, name)

    # -- reading and acting ------------------------------------------------------------------

    def job(self, id_or_key: str) -> Job:
        """The handle of a job by id or key (``NoSuchJob`` if none); an item of a chunked
        map by its id, ``<map id>#<index>``."""
        ref = check_job_ref(id_or_key, "id_or_key")
        job_id = self._store.find(ref)
        if job_id is None and "#" in ref:
            from .mapjobs import item_handle

            item = item_handle(self, ref)
            if item is not None:
                return item
        if job_id is None:
            raise NoSuchJob(f"no job with id or key {id_or_key!r} in queue {self.path}; "
                            "list them with q.jobs()")
        return Job(self, job_id)

    def jobs(self, state: str | None = None, name: str | None = None) -> list[Job]:
        """Handles of the jobs, oldest first; filtered by state and/or name."""
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
        """The job tree as the panel pages it: top-level jobs, a parent's children, a
        job's earlier runs, names and states by id (``JobTree``; reads only)."""
        return JobTree(self._store)

    def forget(self, state: str | Sequence[str] | None = None,
               older_than: float | None = None) -> Forgotten:
        """Delete ended jobs (optionally only those in ``state``, ended more than
        ``older_than`` seconds ago), their results, arguments and logs.

        Returns how many were deleted: a ``Forgotten``, an ``int`` whose ``kept`` lists
        the ended jobs it did not delete because jobs not ended yet still need them (a
        job whose result another takes as an argument or waits for, the children of a
        generator's earlier steps, the parent of a spawned child); a later ``forget``
        deletes them once those jobs have ended. Works on a full disk while the
        directory's reserve lasts (docs/concepts.md, "Errors of the store")."""
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
        """Collect garbage now: forget the ended jobs past the directory's ``keep`` (and,
        with ``older_than`` — seconds, a ``timedelta``, ``"30d"`` — every ended job that
        ended longer ago), with ``forget``'s rules; delete the values of results and
        arguments and the stored functions nothing refers to any more, and value files no
        row names; empty the write-ahead log; VACUUM ``cache.db`` when it is worth it.
        Returns what it did, with ``before`` and ``after`` (``du()``). ``dry_run``: only
        reads, and says what it would do (docs/concepts.md, "Retention and disk space")."""
        check_bool(dry_run, "dry_run")
        seconds = None if older_than is None else check_duration(older_than, "older_than",
                                                                 allow_zero=True)
        collected = collect(self._store, older_than=seconds, dry_run=dry_run)
        if self._dispatcher is not None and not dry_run:
            self._dispatcher.waiters.drop_ahead()
        return collected

    @property
    def keep(self) -> dict[str, float]:
        """The directory's retention: ended state -> seconds its jobs are kept (see
        ``keep=``); empty: every job is kept."""
        return read_keep(self._store)

    def du(self) -> Usage:
        """Where the directory's space goes: bytes by kind (rows, results, arguments, logs,
        functions, files, wal; they add up to ``total``) and by state (reads only)."""
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
        """Pending review gates."""
        return self.jobs(state=J.REVIEW)

    def approve(self, job_id: Any, comment: str = "", values: dict[str, Any] | None = None,
                ) -> None:
        """Approve a gate in review (``ValueError`` if it is not in review), with the
        answers to its fields: ``values={"threshold": 0.7}`` (values, or strings as
        typed; those left out take their defaults). An answer that does not validate
        raises ``InvalidAnswer`` (a ``ValueError``) naming the field; nothing changes."""
        if values is not None and not isinstance(values, dict):
            raise InvalidArgumentType(f"values={values!r}: give a dict of field name -> value")
        self._store.approve(check_job_ref(job_id, "job_id"), check_text(comment, "comment"),
                           values=values)
        self._wake()

    def reject(self, job_id: Any, comment: str = "") -> None:
        """Reject a gate in review; jobs that need it are cancelled."""
        self._store.approve(check_job_ref(job_id, "job_id"), check_text(comment, "comment"),
                           approved=False)
        self._wake()

    def set_resource(self, name: str, *, capacity: int | None = None,
                     available: bool | None = None, rate: str | bool | None = None) -> None:
        """Declare a resource's capacity, make it (un)available, or limit how often jobs
        holding it start: ``rate="10/min"`` (also ``"5/s"``, ``"100/h"``, ``"3/10s"``):
        at most that many start per period, across every process; ``rate=False`` removes
        the limit. A resource first declared with a rate alone has no capacity limit."""
        check_name(name, "name")
        if capacity is not None:
            check_count(capacity, "capacity")
        if available is not None:
            check_bool(available, "available")
        self._store.set_resource(name, capacity=capacity, available=available,
                                rate=check_rate(rate))
        self._wake()

    def resources(self) -> dict[str, dict[str, Any]]:
        """``{name: {capacity, available, holders, waiting}}``."""
        return self._store.resources()

    def status(self) -> dict[str, Any]:
        """What ``nbqueue status --json`` prints."""
        from .status import queue_status

        return queue_status(self)

    def panel(self) -> Any:
        """The live ipywidgets panel of this queue."""
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


class Job:
    """A handle on one job (concurrent.futures-like); every read goes to the store (except
    a result this process's dispatcher just handed over at its commit: see ``result``)."""

    def __init__(self, queue: Queue, job_id: str, record: J.JobRecord | None = None) -> None:
        self.queue = queue
        self.id = job_id
        self._record = record

    @property
    def __nbqueue_job_id__(self) -> str:
        return self.id

    def __reduce__(self) -> Any:
        # pickled (for content keys) as its id
        return (str, (self.id,))

    def record(self) -> J.JobRecord:
        """The job as last committed."""
        self._record = self.queue._store.get(self.id)
        return self._record

    @property
    def key(self) -> str | None:
        return self.record().key

    @property
    def name(self) -> str:
        return self.record().name

    @property
    def state(self) -> str:
        return self.record().state

    @property
    def reason(self) -> str:
        return self.record().reason

    @property
    def progress(self) -> dict[str, Any] | None:
        return self.record().progress

    @property
    def logs(self) -> str:
        return self.queue._store.log_text(self.id)

    @property
    def children(self) -> list[Job]:
        return [Job(self.queue, c) for c in self.queue._store.children(self.id)]

    @property
    def parent(self) -> Job | None:
        parent = self.record().parent
        return None if parent is None else Job(self.queue, parent)

    def done(self) -> bool:
        return self.state in J.ENDED

    @property
    def payload(self) -> dict[str, str]:
        """A gate's payload, as the reviewer sees it: its display bundle, MIME type ->
        data (``{"text/plain": ..., "text/html": ...}``); empty for a gate without one
        and for a job that is not a gate."""
        from .display import payload_bundle

        return payload_bundle(self.queue._store.payload(self.id))

    def details(self) -> JobDetails:
        """Everything about the job as data (what ``nbqueue show`` prints): its record,
        function, arguments in short, needs with their names and states, children per
        state, its log split into attempts. ``NoSuchJob`` if it was forgotten."""
        from .details import job_details

        return job_details(self.queue._store, self.id)

    def cancel(self) -> bool:
        """Cancel the job (a running one is stopped); False if it had already ended."""
        before = self.record().state
        if before in J.ENDED:
            return False
        self.queue._store.cancel(self.id)
        self.queue._wake()
        return True

    def retry(self) -> Job:
        """Run a failed or cancelled job again under its id."""
        self.queue._store.retry(self.id)
        self.queue._wake()
        return self

    def wait(self, timeout: float | None = None) -> J.JobRecord:
        """Block until the job has ended (``TimeoutError`` after ``timeout``); its record."""
        wait_one(self.queue, self.id, timeout)
        return self.record()

    def result(self, timeout: float | None = None) -> Any:
        """The job's committed result, once it has ended.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the job to end; None (default) waits as long as it
            takes, 0 does not wait.

        Returns
        -------
        object
            What the job returned, as committed in the queue directory.

        Raises
        ------
        JobFailed
            The job failed (its exception, a timeout, a dead worker, poisoning), with the
            remote exception's type, value and traceback.
        JobCancelled
            The job was cancelled or rejected, or a job it needs did not succeed.
        NoSuchJob
            The job is not in the queue: it was forgotten with its result.
        UnreadableResult
            The result cannot be unpickled in this process.
        TimeoutError
            The built-in one: the job had not ended after ``timeout`` seconds.
        DispatcherDied
            Nothing would ever run the job (see docs/concepts.md).

        Notes
        -----
        A job already ended costs one read of the store (state and result together). A
        job that this process's dispatcher runs is handed to the waiting thread when its
        outcome is committed, with its result; jobs that other processes run are seen by
        polling (docs/concepts.md, "Collecting results").
        """
        return value(self.queue, wait_one(self.queue, self.id, timeout))

    def exception(self, timeout: float | None = None) -> JobFailed | None:
        """The failure ``result()`` would raise (``JobFailed`` or ``JobCancelled``), or
        None if the job succeeded; waits as ``result`` does."""
        error = failure(self.queue, wait_one(self.queue, self.id, timeout))
        if isinstance(error, NoSuchJob):
            raise error
        return error  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.queue.path == self.queue.path

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        try:
            record = self.record()
            return f"<nbqueue.Job {self.id} {record.name!r} {record.state}>"
        except NoSuchJob:
            return f"<nbqueue.Job {self.id} (forgotten)>"

    def _repr_html_(self) -> str:
        from .display import job_html

        return job_html(self.record())
