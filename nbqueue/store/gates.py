"""Review gates in a transaction: what a gate asks for, its deadline and reminders, the
events the outputs receive besides endings (a mixin of ``Tx``), and their reads.

A gate's ``GateSpec`` (its title, fields, deadline, reminders) is a row of ``nbq_gate``,
written with the gate. When the gate enters review, the same transaction sets its
deadline and first reminder, and records a ``review`` event in the outbox. ``due`` is
the next moment something happens to it (its deadline or a reminder); a dispatcher's
housekeeping applies what is due (``gate_timers``) in one transaction, so a deadline
is applied once, by whichever process serves the queue first after it passed.

``drained`` (nothing ready, running or due within ``DRAIN_SOON``) is a flag in
``nbq_meta``: a transaction that makes a job ready or running clears it, and the
dispatcher that finds the queue drained sets it and records the event, once per drain.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import job as J
from ..errors import InvalidAnswer, JobStateError
from ..reviewing import GateSpec, parse_values

if TYPE_CHECKING:
    from . import Store

DRAIN_SOON = 60.0  # a job due within this long is work to come: the queue is not drained


@dataclass(frozen=True)
class GateRow:
    """A gate's row of ``nbq_gate``: its spec, when it entered review, its deadline (set
    then), its next reminder, and whether a kept deadline passed."""

    spec: GateSpec
    since: float | None
    deadline: float | None
    remind: float | None
    overdue: bool


def read(store: Store, ids: Sequence[str]) -> dict[str, GateRow]:
    """The gate rows of these jobs (gates made by an older nbqueue have none)."""
    out: dict[str, GateRow] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start:start + 500])
        rows = store._rows("SELECT job, spec, since, deadline, remind, overdue FROM nbq_gate "
                           f"WHERE job IN ({','.join('?' * len(chunk))})", chunk)
        for job, spec, since, deadline, remind, overdue in rows:
            out[job] = GateRow(GateSpec.from_json(spec), since, deadline, remind, bool(overdue))
    return out


def next_due(store: Store) -> float | None:
    """The earliest moment a gate's deadline or reminder is due (an index seek)."""
    due: float | None = store._one("SELECT MIN(due) FROM nbq_gate INDEXED BY nbq_gate_due "
                                   "WHERE due IS NOT NULL")
    return due


def drained_noted(store: Store) -> bool:
    """Whether the current drain was recorded already (or no work came since the queue
    was made): a cheap read, polled by dispatchers."""
    return bool(store._one("SELECT value FROM nbq_meta WHERE key = 'drained'") != 0)


class GateRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, ``row`` and ``end``."""

    sql: Any
    now: float
    row: Any
    end: Any

    _EVENT = ("INSERT INTO nbq_outbox (job, name, kind, state, reason, error, attempt, parent, "
              "created, started, ended, event, at) SELECT id, name, kind, state, "
              "COALESCE(?, reason), error, attempt, parent, created, started, ended, ?, ? "
              "FROM nbq_job WHERE id = ?")

    _events: set[str] | None = None  # what the registered outputs receive (read once)

    def wants_event(self, event: str) -> bool:
        """Whether some registered output receives this kind of event."""
        if self._events is None:
            self._events = set()
            for (text,) in self.sql("SELECT DISTINCT events FROM nbq_output"):
                self._events.update(text.split(","))
        return event in self._events or "*" in self._events

    def event(self, job_id: str | None, event: str, note: str | None = None) -> None:
        """Record an event for the outputs (``review``, ``reminder``, ``drained``), in this
        transaction, if an output receives it; ``note`` replaces the job's reason in the
        record."""
        if not self.wants_event(event):
            return
        if job_id is None:
            self.sql("INSERT INTO nbq_outbox (job, state, reason, event, at) "
                     "VALUES ('', '', ?, ?, ?)", (note or "", event, self.now))
        else:
            self.sql(self._EVENT, (note, event, self.now, job_id))

    def add_gate(self, job_id: str, spec: str) -> None:
        """Store what a new gate asks for (its ``GateSpec`` as JSON)."""
        self.sql("INSERT OR REPLACE INTO nbq_gate (job, spec) VALUES (?, ?)", (job_id, spec))

    def entered_review(self, job_id: str) -> None:
        """A gate entered review: its deadline and first reminder are set from now, and
        the outputs get a ``review`` event."""
        row = self.sql("SELECT spec FROM nbq_gate WHERE job = ?", (job_id,)).fetchone()
        if row is not None:
            spec = GateSpec.from_json(row[0])
            deadline = spec.deadline_from(self.now)
            remind = self.now + spec.remind_every if spec.remind_every else None
            self.sql("UPDATE nbq_gate SET since = ?, deadline = ?, remind = ?, overdue = 0, "
                     "due = ? WHERE job = ?",
                     (self.now, deadline, remind, _earliest(deadline, remind), job_id))
        self.event(job_id, "review")

    def gate_spec(self, job_id: str) -> GateSpec | None:
        row = self.sql("SELECT spec FROM nbq_gate WHERE job = ?", (job_id,)).fetchone()
        return GateSpec.from_json(row[0]) if row is not None else None

    def decide(self, job_id: str, approved: bool, comment: str,
               values: dict[str, Any] | None = None, *, by: str | None = None) -> None:
        """Approve or reject a gate that is in review, with the answers to its fields
        (checked here: ``InvalidAnswer`` naming the field, and nothing changes); anything
        but a gate in review is a ValueError. ``by="deadline"``: its deadline decided."""
        state, kind = self.row(job_id, "state, kind")
        if kind != J.GATE or state != J.REVIEW:
            what = "a review gate" if kind == J.GATE else f"a {kind} job, not a review gate"
            raise JobStateError(f"job {job_id} is {what} in state {state}; only a gate in review "
                             "can be approved or rejected. Nothing was changed.")
        spec = self.gate_spec(job_id)
        if approved:
            answers = parse_values(spec.fields if spec is not None else (), values)
        elif values:
            raise InvalidAnswer(f"gate {job_id}: answers (values=) go with an approval; a "
                                "rejection takes a comment only. Nothing was changed.")
        else:
            answers = {}
        verb = "approved" if approved else "rejected"
        if by is None:
            decision = J.Decision.now(approved, comment, values=answers)
            reason = f"{verb} by {decision.by}" + (f": {comment}" if comment else "")
        else:
            decision = J.Decision(bool(approved), comment, by, self.now, answers)
            reason = f"{verb} by its {by}" + (f": {comment}" if comment else "")
        self.end(job_id, J.DONE if approved else J.REJECTED, reason,
                 result=pickle.dumps(decision))

    def gate_timers(self) -> int:
        """Apply the deadlines and reminders that are due; returns how many gates changed."""
        rows = self.sql("SELECT job, spec, since, deadline, remind, overdue FROM nbq_gate "
                        "INDEXED BY nbq_gate_due WHERE due <= ? ORDER BY due LIMIT 500",
                        (self.now,)).fetchall()
        changed = 0
        for job_id, spec_text, since, deadline, remind, overdue in rows:
            state = self.sql("SELECT state FROM nbq_job WHERE id = ?", (job_id,)).fetchone()
            if state is None or state[0] != J.REVIEW:  # decided or cancelled meanwhile
                self.sql("UPDATE nbq_gate SET due = NULL WHERE job = ?", (job_id,))
                continue
            spec = GateSpec.from_json(spec_text)
            changed += 1
            # no clock time in what is stored: the writer's would be wrong for a reader
            # elsewhere; Decision.at and the event's time say when
            if deadline is not None and not overdue and deadline <= self.now:
                if spec.on_deadline != "keep":
                    self.decide(job_id, spec.on_deadline == "approve",
                                "no decision in time", by="deadline")
                    self.sql("UPDATE nbq_gate SET due = NULL WHERE job = ?", (job_id,))
                    continue
                overdue = 1
                self.event(job_id, "reminder", "its deadline passed with no decision; it "
                                               "keeps waiting")
                remind = self.now + spec.remind_every if spec.remind_every else None
            elif remind is not None and remind <= self.now:
                waited = f" for {_ago(self.now - since)}" if since is not None else ""
                self.event(job_id, "reminder", f"still waiting for a decision{waited}")
                assert spec.remind_every is not None
                remind = self.now + spec.remind_every  # no burst after a pause: one, then on
            due = _earliest(None if overdue else deadline, remind)
            self.sql("UPDATE nbq_gate SET remind = ?, overdue = ?, due = ? WHERE job = ?",
                     (remind, overdue, due, job_id))
        return changed

    def note_drained(self) -> bool:
        """Record ``drained`` if nothing is ready, running or due within ``DRAIN_SOON``,
        and it was not recorded since work last came; returns whether it was."""
        if self.sql("SELECT value FROM nbq_meta WHERE key = 'drained'").fetchone() != (0,):
            return False
        busy = self.sql("SELECT COALESCE(SUM(n), 0) FROM nbq_count "
                        "WHERE state IN ('ready', 'running')").fetchone()[0]
        if busy:
            return False
        due = self.sql("SELECT MIN(not_before) FROM nbq_job INDEXED BY nbq_job_time "
                       "WHERE state = 'waiting' AND blocker = 'time'").fetchone()[0]
        if due is not None and due < self.now + DRAIN_SOON:
            return False
        self.sql("UPDATE nbq_meta SET value = 1 WHERE key = 'drained'")
        self.event(None, "drained", "nothing ready, running or due")
        return True


def _earliest(*moments: float | None) -> float | None:
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def _ago(seconds: float) -> str:
    from ..reviewing import duration_text

    return duration_text(seconds)
