"""Schedules: their rules in a transaction (``ScheduleRules``, a mixin of ``Tx``) and the
store's verbs and reads (``ScheduleStore``, a mixin of ``Store``).

A schedule is a row of ``nbq_schedule``: the call it makes (function, arguments and
options, stored as a job stores them), its ``ScheduleSpec`` and its next firing. A
dispatcher that finds a firing due (``next_firing``: an index seek, no lock) makes its
jobs in one transaction (``fire_schedules``): each firing is a job keyed
``schedule:NAME@TIME`` (UTC), made in the transaction that moves the schedule's next
firing past it. So a firing makes one job, whichever dispatcher gets to it first, however
often processes die on the way, and a firing whose job exists already makes none.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .. import job as J
from ..errors import NoSuchSchedule
from ..job import NewJob
from ..recurrence import AT, ScheduleRecord, ScheduleSpec, plan
from .faults import transient_cause
from .ids import new_id

if TYPE_CHECKING:
    from .transitions import Tx

KEY_PREFIX = "schedule:"
DUE_BATCH = 100  # schedules looked at per firing transaction

_COLUMNS = ("name, spec, created, paused, next, last, last_job, fired, missed, skipped, note, "
            "note_at, (SELECT label FROM nbq_fn WHERE id = fn)")


def firing_key(name: str, at: float) -> str:
    """The key of the job a firing makes.

    >>> firing_key("report", 1796115600.0), firing_key("poll", 1796115600.25)
    ('schedule:report@2026-12-01T09:00:00Z', 'schedule:poll@2026-12-01T09:00:00.250Z')
    """
    moment = datetime.fromtimestamp(at, timezone.utc)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return f"{KEY_PREFIX}{name}@{moment.replace(tzinfo=None).isoformat(timespec=spec)}Z"


def key_range(name: str) -> tuple[str, str]:
    """The bounds of the keys of a schedule's jobs (for an index range)."""
    return f"{KEY_PREFIX}{name}@", f"{KEY_PREFIX}{name}A"  # "A" follows "@"


class ScheduleRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, ``insert``, ``function``, ``options``
    and ``existing_keys``."""

    sql: Any
    now: float
    insert: Any
    function: Any
    options: Any
    existing_keys: Any
    _counts: Any

    def put_schedule(self, name: str, spec: ScheduleSpec, new: NewJob, first: float) -> str:
        """Record a schedule, or replace the one of this name if it fires otherwise or makes
        another call; returns ``"created"``, ``"replaced"`` or ``"kept"`` (the same
        schedule again: its firings go on as they were)."""
        assert new.function is not None
        f = new.function
        self.sql("INSERT OR IGNORE INTO nbq_fn VALUES (?, ?, ?, ?, ?, ?)",
                 (f.id, f.blob, int(f.by_value), f.python, f.cloudpickle, f.label))
        call = (f.id, new.args, json.dumps(list(new.refs)) if new.refs else None,
                json.dumps(list(new.needs)) if new.needs else None,
                json.dumps(new.options.to_dict()))
        row = self.sql("SELECT spec, fn, args, refs, needs, options FROM nbq_schedule "
                       "WHERE name = ?", (name,)).fetchone()
        if row is None:
            self.sql("INSERT INTO nbq_schedule (name, spec, fn, args, refs, needs, options, "
                     "created, next) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (name, spec.to_json(), *call, self.now, first))
            return "created"
        if ScheduleSpec.from_json(row[0]).same_rules(spec) and tuple(row[1:]) == call:
            return "kept"
        self.sql("UPDATE nbq_schedule SET spec = ?, fn = ?, args = ?, refs = ?, needs = ?, "
                 "options = ?, next = CASE WHEN paused THEN NULL ELSE ? END, note = NULL, "
                 "note_at = NULL WHERE name = ?", (spec.to_json(), *call, first, name))
        return "replaced"

    def pause_schedule(self, name: str, paused: bool) -> None:
        """Stop a schedule's firings, or let them go on from now (those due while it was
        paused are not made: a pause is no outage)."""
        row = self.sql("SELECT spec, paused FROM nbq_schedule WHERE name = ?",
                       (name,)).fetchone()
        if row is None:
            raise _no_such(name)
        if bool(row[1]) == paused:
            return
        following = None if paused else ScheduleSpec.from_json(row[0]).timing.after(self.now)
        self.sql("UPDATE nbq_schedule SET paused = ?, next = ? WHERE name = ?",
                 (int(paused), following, name))

    def delete_schedule(self, name: str) -> None:
        """Delete a schedule (the jobs it made stay)."""
        if self.sql("DELETE FROM nbq_schedule WHERE name = ?", (name,)).rowcount != 1:
            raise _no_such(name)

    def fire_schedules(self) -> int:
        """Make the jobs of the firings due by ``now``; returns how many were made."""
        rows = self.sql("SELECT name, spec, fn, args, refs, needs, options, next, last_job "
                        "FROM nbq_schedule INDEXED BY nbq_schedule_due WHERE next IS NOT NULL "
                        "AND next <= ? ORDER BY next LIMIT ?", (self.now, DUE_BATCH)).fetchall()
        made = 0
        for name, spec_text, fn_id, args, refs, needs, options_text, first, last_job in rows:
            spec = ScheduleSpec.from_json(spec_text)
            step = plan(spec.timing, spec.catch_up, first, self.now)
            # a note's moment is a fact (note_at), put in at AT when read (recurrence.py)
            fire, following, skipped, note, note_at = list(step.fire), step.next, 0, None, None
            if step.missed:
                note = (f"{step.missed} firing{'s' if step.missed > 1 else ''} missed while "
                        f"nothing served the queue (catch_up={spec.catch_up!r})")
            if fire and not spec.overlap:
                if self._running(last_job):
                    if spec.catch_up == "all":
                        continue  # every firing runs, one after the other: this one waits
                    skipped, fire = len(fire), []
                    note, note_at = (f"skipped the firing of {AT}: job {last_job}, of the "
                                     "firing before, had not ended (overlap=False)",
                                     step.fire[-1])
                elif spec.catch_up == "all" and len(fire) > 1:
                    fire = fire[:1]  # the others wait for it to end
                    following = spec.timing.after(fire[0])
            made_ids: list[str] = []
            for at in fire:
                job_id, error = self._make_firing(name, at, fn_id, args, refs, needs,
                                                  options_text)
                if job_id is not None:
                    made_ids.append(job_id)
                if error is not None:
                    note, note_at = f"the firing of {AT} made no job: {error}", at
            self.sql("UPDATE nbq_schedule SET next = ?, last = COALESCE(?, last), "
                     "last_job = COALESCE(?, last_job), fired = fired + ?, missed = missed + ?, "
                     "skipped = skipped + ?, note = COALESCE(?, note), "
                     "note_at = CASE WHEN ? IS NULL THEN note_at ELSE ? END WHERE name = ?",
                     (following, fire[-1] if made_ids else None,
                      made_ids[-1] if made_ids else None, len(made_ids), step.missed, skipped,
                      note, note, note_at, name))
            made += len(made_ids)
        return made

    def _running(self, job_id: str | None) -> bool:
        """Whether a schedule's last job has not ended (a forgotten one has)."""
        if job_id is None:
            return False
        row = self.sql("SELECT state FROM nbq_job WHERE id = ?", (job_id,)).fetchone()
        return row is not None and row[0] not in J.ENDED

    def _make_firing(self, name: str, at: float, fn_id: str, args: bytes | None,
                     refs: str | None, needs: str | None,
                     options_text: str) -> tuple[str | None, str | None]:
        """The job of one firing (None if it exists already), inside a savepoint: a firing
        that cannot make its job (a job it needs was deleted) records why and lets the
        schedule go on. Returns its id, and the error if any."""
        key = firing_key(name, at)
        if self.existing_keys([key]):
            return None, None
        options = self.options(options_text)
        new = NewJob(id=new_id(), name=options.name or name, options=options, key=key,
                     function=self.function(fn_id), args=args,
                     refs=tuple(json.loads(refs)) if refs else (),
                     needs=tuple(json.loads(needs)) if needs else ())
        self.sql("SAVEPOINT firing")
        counts = self._counts.copy()
        try:
            self.insert([new])
        except Exception as exc:
            if transient_cause(exc) is not None:
                raise
            self.sql("ROLLBACK TO firing")
            self.sql("RELEASE firing")
            self._counts = counts
            return None, f"{type(exc).__name__}: {exc}"
        self.sql("RELEASE firing")
        return new.id, None


def _no_such(name: str) -> NoSuchSchedule:
    return NoSuchSchedule(f"no schedule {name!r} in this queue; list them with q.schedules() "
                          "or nbqueue schedules DIR")


class ScheduleStore:
    """The schedule verbs and reads of ``Store`` (a mixin)."""

    def _tx(self, now: float) -> AbstractContextManager[Tx]:  # Store's
        raise NotImplementedError

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:  # Store's
        raise NotImplementedError

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:  # Store's
        raise NotImplementedError

    def put_schedule(self, name: str, spec: ScheduleSpec, new: NewJob, first: float,
                     now: float) -> str:
        """Record (or replace, or keep) a schedule; one transaction."""
        with self._tx(now) as tx:
            return tx.put_schedule(name, spec, new, first)

    def pause_schedule(self, name: str, paused: bool, now: float) -> None:
        with self._tx(now) as tx:
            tx.pause_schedule(name, paused)

    def delete_schedule(self, name: str, now: float) -> None:
        with self._tx(now) as tx:
            tx.delete_schedule(name)

    def next_firing(self) -> float | None:
        """The earliest next firing of a schedule not paused (an index seek)."""
        due: float | None = self._one("SELECT MIN(next) FROM nbq_schedule INDEXED BY "
                                      "nbq_schedule_due WHERE next IS NOT NULL")
        return due

    def fire_schedules(self, now: float) -> int:
        """Make the jobs of the firings due by ``now`` (a read first: nothing due takes no
        write lock); returns how many jobs were made."""
        due = self.next_firing()
        if due is None or due > now:
            return 0
        with self._tx(now) as tx:
            return tx.fire_schedules()

    def schedule_records(self, name: str | None = None) -> list[ScheduleRecord]:
        """Every schedule (or the one named), by name."""
        where, params = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        return [_record(row) for row in self._rows(
            f"SELECT {_COLUMNS} FROM nbq_schedule {where} ORDER BY name", params)]

    def schedule_record(self, name: str) -> ScheduleRecord:
        records = self.schedule_records(name)
        if not records:
            raise _no_such(name)
        return records[0]

    def schedule_jobs(self, name: str) -> list[str]:
        """The ids of the jobs a schedule's firings made, oldest firing first."""
        return [r[0] for r in self._rows(
            "SELECT id FROM nbq_job WHERE key >= ? AND key < ? ORDER BY key", key_range(name))]


def _record(row: Sequence[Any]) -> ScheduleRecord:
    (name, spec, created, paused, following, last, last_job, fired, missed, skipped, note,
     note_at, label) = row
    return ScheduleRecord(name=name, spec=ScheduleSpec.from_json(spec), function=label or "?",
                          created=created, paused=bool(paused), next=following, last=last,
                          last_job=last_job, fired=fired, missed=missed, skipped=skipped,
                          note=note or "", note_at=note_at)


def needed_by_schedules(sql: Any) -> Iterator[str]:
    """The jobs schedules take results from or wait for (``forget`` keeps them)."""
    for refs, needs in sql("SELECT refs, needs FROM nbq_schedule WHERE refs IS NOT NULL "
                           "OR needs IS NOT NULL"):
        for text in (refs, needs):
            if text:
                yield from json.loads(text)
