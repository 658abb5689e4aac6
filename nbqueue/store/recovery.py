"""Recovery in a transaction: running jobs go back to ready (a mixin of ``Tx``).

A job goes back when its dispatcher's process died, when that dispatcher's lease ran
out (it was stopped or stuck), when its dispatcher hands it back (a kernel restart, a
stop), and when its own worker process died under it (a death, which counts). Only the
last is the job's fault; the others charge no attempt. A process that died may have
been inside a transaction that wrote a value file: ``sweep_value_files`` deletes the
files no row names.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .. import job as J
from .backend import VALUE_FILES, named_files
from .directory import Owner

if TYPE_CHECKING:
    from . import Store


class RecoveryRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, ``store``, ``row``, ``move``, ``end``,
    ``release`` and its logs (``log_of``, ``set_log``, ``next_attempt_log``)."""

    sql: Any
    now: float
    store: Store

    if TYPE_CHECKING:  # what Tx (and its mixin ResourceRules) defines
        def row(self, job_id: str, columns: str) -> Any: ...
        def move(self, job_id: str, src: str, dst: str, **columns: Any) -> None: ...
        def end(self, job_id: str, state: str, reason: str = "", **columns: Any) -> None: ...
        def release(self, job_id: str) -> None: ...
        def log_of(self, job_id: str) -> tuple[str | None, str | None]: ...
        def set_log(self, job_id: str, log: str, *, before: Any = ...) -> None: ...
        @staticmethod
        def next_attempt_log(log: str | None, attempt: int, why: str) -> str: ...

    def put_back(self, job_id: str, *, cause: str | None = None, death: bool = False) -> None:
        """A running job goes back to ready.

        One that had not started (handed ahead, or ``cause`` None) goes back as if never
        claimed. One that had started was interrupted by ``cause`` ("the kernel
        restarted"): the attempt stays on record, with a header line in its log, but does
        not count against its retries. ``death``: its own worker process died under it,
        which counts a death; the ``POISON_DEATHS``-th fails it as poisoned. A death is
        reported for the job its worker was running, so it had started even if it was
        not marked so yet (a job from the reserve is marked within ``MARK_STARTED``)."""
        attempt, deaths, handed, cancel, retry_base = self.row(
            job_id, "attempt, deaths, handed, cancel_requested, retry_base")
        self.release(job_id)
        if cancel:
            self.end(job_id, J.CANCELLED, "cancelled while running")
            return
        if cause is None or (handed and not death):
            self.move(job_id, J.RUNNING, J.READY, attempt=max(attempt - 1, 0), owner=None,
                      lease_until=None, handed=0, started=None, reason="")
            return
        why = f"{cause} while attempt {attempt} ran"
        if death:
            deaths += 1
            if deaths >= J.POISON_DEATHS:
                error = J.RemoteError(
                    "PoisonedJob", f"the worker process running job {job_id} died {deaths} "
                    f"times (out of memory? a crash in native code?), the last time: {cause}; "
                    "it was not run again. Fix the cause, then retry it", "")
                self.end(job_id, J.FAILED, f"poisoned: its worker process died {deaths} times",
                         deaths=deaths, error=json.dumps(error.to_dict()))
                return
        before = self.next_attempt_log(self.log_of(job_id)[0], attempt, why)
        self.set_log(job_id, before, before=before)
        self.move(job_id, J.RUNNING, J.READY, deaths=deaths, owner=None, lease_until=None,
                  handed=0, retry_base=retry_base + 1, why=why, progress=None,
                  reason=f"{why}; attempt {attempt + 1} comes next")

    def recover(self) -> int:
        """Put back the jobs of dead dispatchers, and those whose lease ran out. Neither
        is the job's fault: no attempt is charged and no death counted."""
        count = 0
        owners = [r[0] for r in self.sql("SELECT DISTINCT owner FROM nbq_job "
                                         "WHERE state = 'running' AND owner IS NOT NULL")
                  .fetchall()]
        for text in owners:
            parsed = Owner.parse(text or "")
            if parsed is None or parsed.is_dead():
                rows = self.sql("SELECT id FROM nbq_job WHERE state = 'running' AND owner = ?",
                                (text,)).fetchall()
                for (job_id,) in rows:
                    self.put_back(job_id, cause="its dispatcher's process died")
                    count += 1
                self.sql("UPDATE nbq_dispatcher SET stopped = COALESCE(stopped, ?), "
                         "error = COALESCE(error, 'process died') WHERE owner = ?",
                         (self.now, text))
        if count:  # a process died, maybe inside a transaction that stored a result
            self.sweep_value_files()
        expired = self.sql("SELECT id FROM nbq_job WHERE state = 'running' AND lease_until < ?",
                           (self.now,)).fetchall()
        for (job_id,) in expired:
            self.put_back(job_id, cause="its dispatcher stopped renewing its lease")
            count += 1
        return count

    def sweep_value_files(self) -> int:
        """Delete the value files no row names: results written by a transaction that
        never committed (its process died). Safe only under the write lock, which this
        transaction holds: nbqueue writes value files only inside its transactions."""
        root = self.store.path
        named = named_files(self.sql)
        orphans = [str(path.relative_to(root)) for path in root.glob(VALUE_FILES)]
        orphans = [name for name in orphans if name not in named]
        for name in orphans:
            self.store.cache.disk.remove(name)
        return len(orphans)
