"""Recurring work: ``Queue.schedule`` reads its arguments into a stored schedule, and the
``Schedule`` handle it returns pauses, resumes and deletes it.

The timing rules live in ``recurrence`` (pure), the transactions in ``store.schedules``;
a dispatcher makes the jobs of the firings that come due (``dispatch.firings``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .arguments import check_bool, check_line
from .errors import InvalidArgument, SubmitError
from .handle import Job
from .message import build_job, default_name, split_options
from .recurrence import ScheduleRecord, ScheduleSpec, check_catch_up, timing_of
from .store.ids import new_id
from .times import parse_after

if TYPE_CHECKING:
    from .queue import Queue


class Schedule:
    """A handle on a stored schedule (every read goes to the queue directory).

    Returned by ``Queue.schedule`` and ``Queue.schedule_of``. Pausing, resuming and
    deleting are stored, so they hold for every process serving the queue.

    Attributes
    ----------
    queue : Queue
        The queue the schedule is stored in.
    name : str
        Its name.
    outcome : str
        What ``q.schedule`` did: ``"created"``, ``"replaced"`` or ``"kept"``; empty for
        a handle from ``schedule_of``.

    Examples
    --------
    ::

        s = q.schedule(report, cron="0 9 * * mon-fri", name="morning-report")
        s.pause(); s.resume()
        s.jobs()        # the jobs its firings made
        s.delete()      # the jobs stay
    """

    def __init__(self, queue: Queue, name: str, outcome: str = "") -> None:
        self.queue = queue
        self.name = name
        #: what ``q.schedule`` did: "created", "replaced" (it fires otherwise, or makes
        #: another call, than the stored one of its name) or "kept" (the same again)
        self.outcome = outcome

    def record(self) -> ScheduleRecord:
        """The schedule as last committed: timing, ``next``, ``last``, counts, ``note``.

        Raises
        ------
        NoSuchSchedule
            It was deleted.
        """
        return self.queue._store.schedule_record(self.name)

    @property
    def next(self) -> float | None:
        """Its next firing (a Unix time), None while it is paused."""
        return self.record().next

    @property
    def paused(self) -> bool:
        """Whether it is paused (``pause()``)."""
        return self.record().paused

    def pause(self) -> Schedule:
        """Make no more firings until ``resume()`` (jobs it made go on); returns self."""
        self.queue._store.pause_schedule(self.name, True, time.time())
        self.queue._wake()
        return self

    def resume(self) -> Schedule:
        """Fire again from now on; firings due while it was paused are not made (a pause
        is no outage: ``catch_up`` does not apply); returns self."""
        self.queue._store.pause_schedule(self.name, False, time.time())
        self.queue._wake()
        return self

    def delete(self) -> None:
        """Delete the schedule; the jobs it made stay."""
        self.queue._store.delete_schedule(self.name, time.time())
        self.queue._wake()

    def jobs(self) -> list[Job]:
        """Handles of the jobs its firings made, oldest firing first."""
        return [Job(self.queue, job_id) for job_id in self.queue._store.schedule_jobs(self.name)]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Schedule) and other.name == self.name
                and other.queue.path == self.queue.path)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"<nbqueue.Schedule {self.name!r}>"


def make_schedule(queue: Queue, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any], *, every: Any, cron: Any, tz: Any, catch_up: Any,
                  overlap: Any, name: Any, now: float | None = None) -> Schedule:
    """Check a schedule's arguments, pack its call as ``submit`` would, and store it (or
    keep or replace the one of its name). Raises before anything is stored."""
    now = time.time() if now is None else now
    opts, fn_kwargs = split_options(kwargs)
    if "key" in opts:
        raise InvalidArgument(f"key={opts['key']!r}: a schedule keys each job it makes by its "
                              "name and firing time, so that a firing runs once; leave key out")
    if name is not None:
        check_line(name, "name")
    label = name if isinstance(name, str) else default_name(fn) if callable(fn) else repr(fn)
    try:
        start = parse_after(opts.pop("after", None), now=now)
    except ValueError as exc:
        raise InvalidArgument(f"schedule {label!r}: {exc}") from None
    timing, first = timing_of(every, cron, tz, start=start, now=now)
    spec = ScheduleSpec(timing, check_catch_up(catch_up), check_bool(overlap, "overlap"))
    try:
        new = build_job(fn, args, fn_kwargs, {**opts, "name": name, "key": None},
                        job_id=new_id(), now=now)
    except SubmitError as exc:  # its message says "cannot submit"; nothing is stored either
        raise SubmitError(str(exc).replace("cannot submit", "cannot schedule", 1)) from None
    queue._check_capacities([new])
    schedule_name = name if name is not None else new.name
    outcome = queue._store.put_schedule(schedule_name, spec, new, first, now)
    queue._wake()
    return Schedule(queue, schedule_name, outcome)
