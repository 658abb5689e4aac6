"""Collecting the results of many jobs: ``q.gather`` and ``nbqueue.as_completed``.

The handles are checked (``check_handles``) and split by queue, and by kind: jobs are
waited for together (``waiting.Collecting``), the items of chunked maps through their
maps' views (``waiting.ItemCollecting``); ``waiting.ended`` yields each as it ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .arguments import check_bool, check_wait
from .errors import InvalidArgument, InvalidArgumentType, JobFailed, NoSuchJob, UnreadableResult
from .handle import Job
from .mapjobs import MapItem
from .message import _short_repr
from .waiting import Collecting, Group, ItemCollecting, ended, value

if TYPE_CHECKING:
    from .queue import Queue


def _groups(queue: Queue, jobs: Iterable[Job], event: threading.Event, *,
            each: bool) -> list[Group]:
    """The waits for jobs of one queue: one for jobs, one for items of chunked maps."""

    plain: list[Job] = []
    items: list[Job] = []
    for h in jobs:
        (items if isinstance(h, MapItem) else plain).append(h)
    groups: list[Group] = [
        Collecting(queue, dict.fromkeys(h.id for h in plain), event, each=each)]
    if items:
        groups.append(ItemCollecting(queue, items, event, each=each))
    return groups


# -- many handles ---------------------------------------------------------------------------


def check_handles(handles: Any, call: str, queue: Queue | None = None) -> list[Job]:
    """The handles of an iterable (a generator too), each checked to be a ``Job`` (of
    ``queue``, if given)."""
    what = ("give an iterable of Job handles (a list or a generator), such as the list "
            "q.map returns")
    if isinstance(handles, Job):
        raise InvalidArgumentType(f"{call}(handles=<Job {handles.id}>): {what}; for one "
                                  "job, put it in a list: [h]")
    if isinstance(handles, (str, bytes)) or not isinstance(handles, Iterable):
        raise InvalidArgumentType(f"{call}(handles={_short_repr(handles)}): {what}")
    jobs = list(handles)
    for i, h in enumerate(jobs):
        if not isinstance(h, Job):
            raise InvalidArgumentType(
                f"{call}(handles=...): item #{i} is {_short_repr(h)}, not a Job handle; {what} "
                "(q.job(id) makes a handle from a job id)")
        if queue is not None and h.queue.path != queue.path:
            raise InvalidArgument(
                f"{call}(handles=...): item #{i} (job {h.id}) belongs to queue {h.queue.path}, "
                f"not {queue.path}; gather each queue's handles with its own gather, or use "
                "nbqueue.as_completed, which takes handles of several queues")
    return jobs


def gather(queue: Queue, handles: Any, return_exceptions: bool = False,
           timeout: float | None = None) -> list[Any]:
    """See ``Queue.gather``."""
    jobs = check_handles(handles, "gather", queue)
    check_bool(return_exceptions, "return_exceptions")
    timeout = check_wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    out: dict[str, Any] = {}
    event = threading.Event()
    for group, record in ended(_groups(queue, jobs, event, each=False), event, deadline,
                               timeout):
        try:
            unreadable = group.errors.get(record.id) if isinstance(group, ItemCollecting) else None
            if unreadable is not None:
                raise unreadable
            out[record.id] = value(queue, record)
        except (JobFailed, NoSuchJob, UnreadableResult) as exc:
            if not return_exceptions:
                raise
            out[record.id] = exc
    return [out[h.id] for h in jobs]


def as_completed(handles: Iterable[Job], timeout: float | None = None) -> Iterator[Job]:
    """Yield the handles as their jobs end (done, failed, cancelled or rejected), in the
    order they end; jobs already ended first.

    Parameters
    ----------
    handles : iterable of Job
        Handles of one queue or of several (a list, a generator); a job given twice is
        yielded once.
    timeout : float, optional
        Seconds from this call. If some jobs have not ended by then, the iterator raises
        the built-in ``TimeoutError`` (as ``h.result(timeout=)`` does) instead of
        yielding the next one; the jobs go on. None (default): wait as long as it takes.

    Returns
    -------
    iterator of Job
        The handles given, each once, as their jobs end; ``h.result()`` then reads the
        result (or raises the failure) without waiting. A handle whose job was forgotten
        (deleted from the queue, which only happens to ended jobs) is yielded too; its
        ``result()`` raises ``NoSuchJob``.

    Raises
    ------
    InvalidArgumentType, InvalidArgument
        ``handles`` is not an iterable of ``Job`` handles, or ``timeout`` is not seconds
        >= 0 (raised by this call, before iterating).
    DispatcherDied
        While iterating: nothing would ever run a job waited for (see ``h.result``).
    """
    jobs = check_handles(handles, "as_completed")
    timeout = check_wait(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    return _as_completed(jobs, deadline, timeout)


def _as_completed(jobs: list[Job], deadline: float | None,
                  timeout: float | None) -> Iterator[Job]:
    unique: dict[tuple[Any, str], Job] = {}  # (queue directory, job id) -> its first handle
    for h in jobs:
        unique.setdefault((h.queue.path, h.id), h)
    by_queue: dict[int, tuple[Queue, list[Job]]] = {}
    for h in unique.values():
        by_queue.setdefault(id(h.queue), (h.queue, []))[1].append(h)
    event = threading.Event()
    groups = [group for queue, handles in by_queue.values()
              for group in _groups(queue, handles, event, each=True)]
    for group, record in ended(groups, event, deadline, timeout):
        yield unique[(group.queue.path, record.id)]
