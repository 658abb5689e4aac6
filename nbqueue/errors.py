"""Every exception nbqueue raises.

Each error says which job or input it is about and what to do next.
"""

from __future__ import annotations

from collections.abc import Callable


class NbqueueError(Exception):
    """Base class of nbqueue's own errors."""


class SubmitError(NbqueueError, ValueError):
    """A job could not be submitted (bad option, unpicklable argument); nothing was stored."""


class InvalidArgument(NbqueueError, ValueError):
    """An argument of a queue call is out of range or malformed: the message names the
    parameter and says what to give; nothing was changed."""


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument of a queue call has the wrong type (a ``TypeError``, and an
    ``InvalidArgument``): the message names the parameter; nothing was changed."""


class JobStateError(NbqueueError, ValueError):
    """The job is not in a state that allows this (approving a job that is not a gate in
    review, retrying one that neither failed nor was cancelled): the message says its
    state; nothing was changed."""


class NotInJob(NbqueueError, RuntimeError):
    """``nbqueue.spawn()`` (or another call made for job code) was called outside a
    running job; outside one, use the Queue's methods."""


class UnreadableResult(NbqueueError):
    """A job succeeded, but its stored result cannot be unpickled in this process (a
    module or class it needs is missing here, or it fails to load): the message names
    the job and the cause."""


class InputNotDefined(NbqueueError, NameError):
    """An ``%%enqueue`` cell reads a name that the notebook does not define and no pending
    cell job assigns: it would fail in the worker, so nothing was submitted."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows these lines instead of a traceback through the magic's internals
        return [f"{type(self).__name__} (a NameError): {self}"]


class NoSuchJob(NbqueueError, KeyError):
    """No job has this id or key in the queue."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else "no such job"


class NoSuchSchedule(NbqueueError, KeyError):
    """No schedule has this name in the queue; ``q.schedules()`` lists them."""

    __str__ = NoSuchJob.__str__


class AmbiguousJob(NbqueueError, LookupError):
    """The start of a job id matches several jobs: the message lists them; give more
    digits, or the job's name."""


class JobFailed(NbqueueError):
    """A job ended in failure: its exception, a timeout, a dead worker or poisoning.

    Carries the remote exception as data (``exc_type``, ``exc_value``,
    ``traceback``), never the original exception object.
    """

    def __init__(
        self,
        job_id: str,
        exc_type: str,
        exc_value: str,
        traceback: str = "",
        *,
        name: str = "",
    ) -> None:
        super().__init__(job_id, exc_type, exc_value, traceback)
        self.job_id = job_id
        self.name = name
        self.exc_type = exc_type
        self.exc_value = exc_value
        self.traceback = traceback

    def __str__(self) -> str:
        label = f"job {self.job_id}" + (f" ({self.name})" if self.name else "")
        text = f"{label} failed: {self.exc_type}: {self.exc_value}"
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text

    def __reduce__(self) -> tuple[Callable[..., JobFailed], tuple[object, ...]]:
        # picklable, keyword included
        return (_rebuild_failed, (type(self), self.job_id, self.exc_type, self.exc_value,
                                  self.traceback, self.name))


def _rebuild_failed(cls: type[JobFailed], job_id: str, exc_type: str, exc_value: str,
                    traceback: str, name: str) -> JobFailed:
    return cls(job_id, exc_type, exc_value, traceback, name=name)


class JobCancelled(JobFailed):
    """A job was cancelled or rejected, or a job it needs did not succeed."""


class StoreError(NbqueueError):
    """The queue directory could not be written (an I/O error, a full disk, a lock held
    too long): nothing of that change was stored; it may work when the cause goes."""


class StoreFull(StoreError):
    """The disk holding the queue directory is full: nothing of that change was stored.
    Free space on that disk (or forget ended jobs), then try again."""


class QueueLocked(StoreError):
    """The queue's store stayed busy (locked by another writer) past the timeout."""


class UnsafeQueue(NbqueueError):
    """The queue directory is owned by another user or writable by others."""


class IncompatibleQueue(NbqueueError):
    """The path is not an nbqueue directory, or was written by a newer nbqueue."""


class IncompatibleDiskcache(NbqueueError, RuntimeError):
    """The installed diskcache lacks a part the store relies on (checked when a queue
    opens): the message names its version; install the version nbqueue pins."""


class CorruptQueue(NbqueueError):
    """The queue's database file is damaged (not SQLite, truncated, or pages that do not
    read); nothing was written to it. ``nbqueue check DIR`` reports what is wrong,
    ``nbqueue salvage DIR NEW_DIR`` copies what can still be read into a new queue."""


class NonDeterminism(NbqueueError):
    """A generator handler yielded something other than what its journal recorded."""


class ServiceError(NbqueueError):
    """The detached service of a queue directory could not be started, reached or
    stopped (``Queue(path, detach=True)``, ``nbqueue worker --detach``, ``nbqueue stop``)."""


class DispatcherDied(NbqueueError):
    """No process serves the queue any more: this process's dispatcher died (its error
    is in the message) and no other dispatcher or service runs its jobs, so waiting
    for a job would never end. Start one (``q.start()``, ``nbqueue worker DIR``)."""


class InvalidAnswer(InvalidArgument):
    """A reviewer's answer to one of a gate's fields does not validate (a ``ValueError``):
    the message names the field and what it takes; the gate was not changed."""


class NotifyError(NbqueueError):
    """A notifier could not deliver (its receiver refused the message or could not be
    reached): it is tried again after a pause that doubles; the error shows in
    ``nbqueue.outputs.registered(q)``."""
