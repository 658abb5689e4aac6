"""nbqueue: a persistent job queue that lives inside Jupyter.

Jobs are messages stored in a queue directory; a dispatcher thread runs them on
worker processes (or a dask cluster); crashes redo at most the jobs that were
running. ``import nbqueue`` loads no IPython, ipywidgets or dask.
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .collect import as_completed
from .errors import (
    AmbiguousJob,
    CorruptQueue,
    DispatcherDied,
    IncompatibleDiskcache,
    IncompatibleQueue,
    InputNotDefined,
    InvalidAnswer,
    InvalidArgument,
    InvalidArgumentType,
    JobCancelled,
    JobFailed,
    JobStateError,
    NbqueueError,
    NonDeterminism,
    NoSuchJob,
    NoSuchSchedule,
    NotifyError,
    NotInJob,
    QueueLocked,
    ServiceError,
    StoreError,
    StoreFull,
    SubmitError,
    UnreadableResult,
    UnsafeQueue,
)
from .handle import Job
from .injob import now, progress, spawn
from .job import Decision
from .outputs import Email, JsonLines, NotebookReport, Webhook
from .queue import Queue
from .workflow import call, review, sleep

__all__ = [
    # the queue
    "Queue",
    "Job",
    "Decision",
    "as_completed",
    # inside a job
    "spawn",
    "progress",
    "call",
    "review",
    "sleep",
    "now",
    # outputs
    "JsonLines",
    "NotebookReport",
    "Webhook",
    "Email",
    # errors
    "NbqueueError",
    "SubmitError",
    "InvalidArgument",
    "InvalidArgumentType",
    "InvalidAnswer",
    "UnreadableResult",
    "JobFailed",
    "JobCancelled",
    "JobStateError",
    "NotInJob",
    "InputNotDefined",
    "NoSuchJob",
    "NoSuchSchedule",
    "NotifyError",
    "AmbiguousJob",
    "QueueLocked",
    "StoreError",
    "StoreFull",
    "DispatcherDied",
    "UnsafeQueue",
    "IncompatibleQueue",
    "IncompatibleDiskcache",
    "CorruptQueue",
    "NonDeterminism",
    "ServiceError",
    # the notebook
    "load_ipython_extension",
]


def load_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    """``%load_ext nbqueue``: open the default queue, start it, register the magics."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython):  # type: ignore[no-untyped-def]
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """The Jupyter server extension: the review page at ``/nbqueue/`` (nbqueue.web)."""
    return [{"module": "nbqueue.web.jupyter"}]
