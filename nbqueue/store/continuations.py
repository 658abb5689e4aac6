"""Generator jobs in a transaction: yield steps, their journal and children (a mixin of ``Tx``).

A generator parent that yields gets its children and a journal row in the same
transaction, and waits for them; the journal is what the worker replays. A parent
that ends otherwise than done takes its active children with it; one run again
resumes at its last yield.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import job as J
from ..errors import NoSuchJob

if TYPE_CHECKING:
    from . import Outcome


def children_wait(pending: int, step: int) -> str:
    """What a generator waits for: ``pending`` children it yielded at ``step`` (facts)."""
    return J.facts_json({"kind": J.WAIT_CHILDREN, "n": pending, "step": step})


class Continuations:
    """Mixin of ``Tx``: uses its ``sql``, ``many``, ``rows_where_in``, ``row``, ``move``,
    ``blob``, ``insert``, ``insert_spawned``, ``release`` and ``rerun``."""

    sql: Any
    many: Any
    rows_where_in: Any
    store: Any

    if TYPE_CHECKING:  # what Tx (and its mixin ResourceRules) defines
        def row(self, job_id: str, columns: str) -> Any: ...
        def move(self, job_id: str, src: str, dst: str, **columns: Any) -> None: ...
        def blob(self, inline: bytes | None, ref: str | None) -> bytes: ...
        def insert(self, jobs: Sequence[J.NewJob]) -> list[tuple[str, bool]]: ...
        def insert_spawned(self, outcome: Outcome) -> None: ...
        def release(self, job_id: str) -> None: ...
        def rerun(self, job_id: str, *, reason: str,
                  needs: Sequence[str] | None = None) -> None: ...

    def yield_step(self, outcome: Outcome, extra: dict[str, Any]) -> None:
        """A generator reached a new yield: its children, the journal row and its move to
        waiting, all in this transaction. Children ids derive from (parent, step, position)."""
        yielded = outcome.yielded
        assert yielded is not None  # the outcome of kind "yielded" says what
        step, children = yielded.step, yielded.children
        self.insert_spawned(outcome)
        if self.sql("SELECT 1 FROM nbq_journal WHERE job = ? AND step = ?",
                    (outcome.id, step)).fetchone():
            raise RuntimeError(f"job {outcome.id}: step {step} is already journaled")
        ids = [job_id for job_id, _ in self.insert(list(children))] if children else []
        self.sql("INSERT INTO nbq_journal VALUES (?, ?, ?, ?, ?)",
                 (outcome.id, step, yielded.fingerprint, json.dumps(ids), yielded.at))
        active = [child for child, state in self.states(ids) if state not in J.ENDED]
        self.many("INSERT OR IGNORE INTO nbq_need VALUES (?, ?, 1)",
                  [(child, outcome.id) for child in active])
        pending = len(active)
        self.release(outcome.id)
        common = dict(owner=None, lease_until=None, handed=0, pending=pending, steps=step + 1,
                      **extra)
        if pending:
            self.move(outcome.id, J.RUNNING, J.WAITING, blocker=J.BLOCK_CHILDREN, reason="",
                      wait=children_wait(pending, step), **common)
        else:
            self.move(outcome.id, J.RUNNING, J.READY, blocker=None, reason="", **common)

    def states(self, ids: list[str]) -> list[tuple[str, str]]:
        """(id, state) of these jobs, in the order given."""
        found = dict(self.rows_where_in("id, state", "id", ids))
        return [(job_id, found[job_id]) for job_id in ids]

    def journal(self, job_id: str) -> list[J.Step]:
        """For a generator parent: per step, the recorded fingerprint and the children's
        outcomes (result blob or error), so the worker can replay without the store."""
        steps = self.sql("SELECT step, fingerprint, children, at FROM nbq_journal WHERE job = ? "
                         "ORDER BY step", (job_id,)).fetchall()
        out = []
        for step, fingerprint, children, at in steps:
            outcomes: list[J.ChildOutcome] = []
            for child in json.loads(children):
                row = self.sql("SELECT state, result, result_ref, error FROM nbq_job "
                               "WHERE id = ?", (child,)).fetchone()
                if row is None:
                    raise NoSuchJob(f"generator job {job_id} replays step {step}, whose child "
                                    f"job {child} is no longer in queue {self.store.path} "
                                    "(forgotten by an older nbqueue, or deleted by hand)")
                state, inline, ref, error = row
                if state == J.DONE or (state == J.REJECTED and inline is not None):
                    outcomes.append(J.ChildOutcome(child, state, self.blob(inline, ref)))
                else:
                    err = J.RemoteError.from_dict(json.loads(error)) if error else J.RemoteError(
                        "JobCancelled" if state in (J.CANCELLED, J.REJECTED) else "JobFailed",
                        f"job {child} ended {state}")
                    outcomes.append(J.ChildOutcome(child, state, error=err))
            out.append(J.Step(step, fingerprint, outcomes, at))
        return out

    def rerun_children(self, job_id: str) -> None:
        """A generator run again resumes at its last yield: that step's children that
        failed or were cancelled (with it) run again, and it waits for them."""
        last = self.sql("SELECT step, children FROM nbq_journal WHERE job = ? "
                        "ORDER BY step DESC LIMIT 1", (job_id,)).fetchone()
        if last is None:
            return
        step, pending = last[0], 0
        for child in json.loads(last[1]):
            state, kind = self.row(child, "state, kind")
            if state in (J.FAILED, J.CANCELLED):
                self.rerun(child, reason="its parent was retried",
                           needs=() if kind == J.GATE else None)
                state = self.row(child, "state")[0]
            if state not in J.ENDED:
                self.sql("INSERT OR IGNORE INTO nbq_need VALUES (?, ?, 1)", (child, job_id))
                pending += 1
        if pending:
            self.move(job_id, J.READY, J.WAITING, blocker=J.BLOCK_CHILDREN, pending=pending,
                      reason="", wait=children_wait(pending, step))

    def orphans(self, parent: str, state: str) -> list[tuple[str, str, str, dict[str, Any]]]:
        """A generator that ends otherwise than done takes its active yield children with
        it: running ones are asked to stop, the others are returned to be cancelled."""
        self.sql("DELETE FROM nbq_need WHERE job = ? AND soft = 1", (parent,))
        out: list[tuple[str, str, str, dict[str, Any]]] = []
        rows = self.sql("SELECT id, state FROM nbq_job WHERE parent = ? AND step IS NOT NULL "
                        "AND state NOT IN ('done', 'failed', 'cancelled', 'rejected')",
                        (parent,)).fetchall()
        for child, child_state in rows:
            if child_state == J.RUNNING:
                self.sql("UPDATE nbq_job SET cancel_requested = 1, reason = 'cancelling' "
                         "WHERE id = ?", (child,))
            else:
                self.sql("DELETE FROM nbq_need WHERE job = ?", (child,))
                out.append((child, J.CANCELLED, f"its parent job {parent} ended {state}", {}))
        return out

    def child_ended(self, parent: str, n: int = 1) -> None:
        """``n`` children of a waiting generator ended (in any state)."""
        self.sql("UPDATE nbq_job SET pending = pending - ? WHERE id = ?", (n, parent))
        row = self.sql("SELECT pending, state, blocker FROM nbq_job WHERE id = ?",
                       (parent,)).fetchone()
        if row and row[1] == J.WAITING and row[2] == J.BLOCK_CHILDREN and row[0] <= 0:
            self.move(parent, J.WAITING, J.READY, blocker=None, reason="")
