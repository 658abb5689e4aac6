"""Every exception nbqueue raises.

Each error says which job or input it is about and what to do next.
"""

from __future__ import annotations


class NbqueueError(Exception):
    """Base class of nbqueue's own errors."""


class SubmitError(NbqueueError, ValueError):
    """A job could not be submitted (bad option, unpicklable argument); nothing was stored."""


class NoSuchJob(NbqueueError, KeyError):
    """No job has this id or key in the queue."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else "no such job"


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

    def __reduce__(self):  # picklable, keyword included
        return (_rebuild_failed, (type(self), self.job_id, self.exc_type, self.exc_value,
                                  self.traceback, self.name))


def _rebuild_failed(cls, job_id, exc_type, exc_value, traceback, name):
    return cls(job_id, exc_type, exc_value, traceback, name=name)


class JobCancelled(JobFailed):
    """A job was cancelled or rejected, or a job it needs did not succeed."""


class QueueLocked(NbqueueError):
    """The queue's store stayed busy (locked by another writer) past the timeout."""


class UnsafeQueue(NbqueueError):
    """The queue directory is owned by another user or writable by others."""


class IncompatibleQueue(NbqueueError):
    """The path is not an nbqueue directory, or was written by a newer nbqueue."""


class NonDeterminism(NbqueueError):
    """A generator handler yielded something other than what its journal recorded."""


class ServiceError(NbqueueError):
    """The detached service of a queue directory could not be started, reached or
    stopped (``Queue(path, detach=True)``, ``nbqueue worker --detach``, ``nbqueue stop``)."""
