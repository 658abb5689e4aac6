"""``Job``: the handle on one job that ``Queue.submit``, ``map``, ``review``, ``job``,
``jobs`` and ``find`` return (concurrent.futures-like).

A handle holds its queue and the job's id; every read goes to the queue directory
through the queue, and waiting for an outcome to ``waiting`` (``wait_one``). The
items of a chunked map have handles of their own, ``mapjobs.MapItem``, a subclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import job as J
from .errors import JobFailed, NoSuchJob
from .waiting import failure, value, wait_one

if TYPE_CHECKING:
    from .details import JobDetails
    from .queue import Queue


class Job:
    """A handle on one job (concurrent.futures-like).

    Made by ``Queue.submit``, ``map``, ``review``, ``job``, ``jobs`` and ``find``; it
    holds the queue and the id only, so every read goes to the queue directory (except a
    result this process's dispatcher just handed over at its commit: see ``result``).
    Handles are equal when they name the same job of the same directory. Passed as an
    argument to ``submit``, a handle is a need whose result replaces it; it pickles as
    its id.

    Attributes
    ----------
    queue : Queue
        The queue it was made by.
    id : str
        The job's id (a child's id is its parent's, a dot, and where it was made:
        ``.step.position`` for a yield's, ``.n`` or ``.step.sn`` for a spawned one).
    """

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
        """The job as last committed: state, reason, options, attempts, times, ... (one read).

        Raises
        ------
        NoSuchJob
            The job was forgotten.
        """
        self._record = self.queue._store.get(self.id)
        return self._record

    @property
    def key(self) -> str | None:
        """Its idempotency key (``"auto:..."`` for an automatic one), or None."""
        return self.record().key

    @property
    def name(self) -> str:
        """Its name: ``name=``, else the function's name (a gate's: its title)."""
        return self.record().name

    @property
    def state(self) -> str:
        """Its state now, a plain str: ``waiting``, ``ready``, ``running``, ``review``,
        ``done``, ``failed``, ``cancelled`` or ``rejected``."""
        return self.record().state

    @property
    def reason(self) -> str:
        """Why it waits (``"not before 15:00"``, ``"needs job 1f3a02c9de"``, in the
        reader's local time), or why it ended (docs/constraints.md, "The reasons you
        will see")."""
        return self.record().reason

    @property
    def progress(self) -> dict[str, Any] | None:
        """What the job last reported with ``nbqueue.progress`` while it runs (``done``,
        ``total``, ``message``, ``at``), or None."""
        return self.record().progress

    @property
    def logs(self) -> str:
        """Its captured stdout and stderr, live while it runs (written about once a
        second), capped per job."""
        return self.queue._store.log_text(self.id)

    @property
    def children(self) -> list[Job]:
        """Its direct children in creation order: spawned jobs, then each ``yield``'s
        calls and gates by step and position."""
        return [Job(self.queue, c) for c in self.queue._store.children(self.id)]

    @property
    def parent(self) -> Job | None:
        """The job that spawned or yielded it, or None for a top-level job."""
        parent = self.record().parent
        return None if parent is None else Job(self.queue, parent)

    def done(self) -> bool:
        """Whether the job has ended (``done``, ``failed``, ``cancelled`` or ``rejected``)."""
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
        """Cancel the job.

        A job not running ends ``cancelled`` at once; a running one is marked
        ``cancelling`` and stopped by the dispatcher running it (its worker process
        killed), then ends ``cancelled while running``. Jobs that need it are cancelled
        in turn; a generator's children with it.

        Returns
        -------
        bool
            False if it had already ended (nothing changes), else True.

        Raises
        ------
        NoSuchJob
            The job was forgotten.
        """
        before = self.record().state
        if before in J.ENDED:
            return False
        self.queue._store.cancel(self.id)
        self.queue._wake()
        return True

    def retry(self) -> Job:
        """Run a failed or cancelled job again under its id, as a new attempt.

        Returns
        -------
        Job
            This handle.

        Raises
        ------
        JobStateError
            A ``ValueError``: the job is neither failed nor cancelled (a gate cannot be
            retried by hand), or a job it takes a result from is not done.
        NoSuchJob
            The job was forgotten.
        """
        self.queue._store.retry(self.id)
        self.queue._wake()
        return self

    def wait(self, timeout: float | None = None) -> J.JobRecord:
        """Block until the job has ended.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; None (default) waits as long as it takes.

        Returns
        -------
        JobRecord
            The job's record once ended (its outcome is not raised: see ``result``).

        Raises
        ------
        TimeoutError
            The built-in one: the job had not ended after ``timeout`` seconds.
        NoSuchJob
            The job was forgotten.
        DispatcherDied
            Nothing would ever run the job.
        """
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
        """The failure ``result()`` would raise, or None if the job succeeded.

        Waits as ``result`` does.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the job to end; None (default) waits as long as it takes.

        Returns
        -------
        JobFailed or None
            ``JobFailed`` (``JobCancelled`` for a cancelled or rejected job), or None.

        Raises
        ------
        NoSuchJob
            The job was forgotten.
        TimeoutError, DispatcherDied
            As for ``result``.
        """
        error = failure(self.queue, wait_one(self.queue, self.id, timeout))
        if isinstance(error, NoSuchJob):
            raise error
        return error

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
