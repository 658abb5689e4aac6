"""What a job's own code calls while it runs: ``spawn``, ``progress`` and ``now``.

Each finds the running job through its context in this thread (``jobrun.current``);
outside a job, ``spawn`` and ``now`` raise ``NotInJob`` and ``progress`` does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .errors import NotInJob
from .jobrun import current, require_context
from .message import build_job, split_options


def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Enqueue a job from inside a running job.

    The job is created in the same transaction that commits the running job's outcome
    (its end, or a generator handler's step): if that job fails or its process dies, it
    does not exist; if it succeeds, it exists exactly once, even when the job ran twice.

    Parameters
    ----------
    fn : callable
        The function, stored as ``submit`` stores it.
    *args, **kwargs
        Its arguments; the option keywords of ``submit`` among ``kwargs`` (``name``,
        ``after``, ``resources``, ``needs``, ``priority``, ``retries``,
        ``retry_delay``, ``timeout``, ``key``, ``memory``) are options, the others go
        to ``fn``. A resource's capacity is not checked here (the job waits if it
        wants too many units).

    Returns
    -------
    str
        The new job's id: the running job's id, a dot, and a number (in a generator
        handler, ``.<step>.s<number>``). Its parent is the running job.

    Raises
    ------
    NotInJob
        Called outside a running job, or in an item of a chunked map.
    SubmitError
        As ``Queue.submit`` raises it for ``fn``, an argument or an option.

    Examples
    --------
    ::

        def crawl(url, depth):
            links = parse(fetch(url))
            if depth:
                for link in links:
                    nbqueue.spawn(crawl, link, depth - 1, priority=depth)
            return len(links)
    """
    ctx = require_context("spawn")
    if ctx.in_chunk:
        raise NotInJob("nbqueue.spawn() does not work in the items of a chunked map "
                       "(q.map(..., chunksize=...)): they share one commit per chunk. Map "
                       "with chunksize=None (one job per call) to spawn from each call")
    options, fn_kwargs = split_options(kwargs)
    n = len(ctx.spawned) + 1
    job_id = f"{ctx.spawn_prefix}{n}"
    new = build_job(fn, args, fn_kwargs, options, job_id=job_id, now=ctx.now,
                    parent=ctx.task.id)
    if not ctx.replaying:
        ctx.spawned.append(new)
    return job_id


def now() -> float:
    """A replay-stable clock for generator handlers: the time the current step first ran.

    Code between yields is replayed at each step; ``time.time()`` would differ at each
    replay, ``nbqueue.now()`` returns the moment the step first ran (recorded in the
    journal).

    Returns
    -------
    float
        A POSIX timestamp.

    Raises
    ------
    NotInJob
        Called outside a running job.
    """
    ctx = require_context("now")
    return ctx.now


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Report a running job's progress; outside a job this does nothing.

    The report travels to the dispatcher over its channel (workers never open the queue
    directory), which writes the latest of each running job about once a second: it
    shows as ``h.progress``, in the panel's progress bar and in ``nbqueue status``.

    Parameters
    ----------
    done : float
        How far the job is (items done, bytes read, ...).
    total : float, optional
        Out of how many; None when unknown.
    message : str
        A short note shown beside the bar.

    Examples
    --------
    ::

        def fit(paths):
            for i, path in enumerate(paths):
                train_on(path)
                nbqueue.progress(i + 1, len(paths), message=path)
    """
    ctx = current()
    if ctx is None:
        return
    ctx.send("progress", {"done": done, "total": total, "message": str(message),
                          "at": time.time()})


__all__ = ["spawn", "progress", "now"]
