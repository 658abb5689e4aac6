"""The bodies of the store's transactions: every state change of a job happens here.

A ``Tx`` lives for one transaction and applies the rules of ``job.py``: the
transition table, needs, resources, retries, poisoning, generator children. The
resource rules live in ``resources.py`` and the generator steps in
``continuations.py``, as mixins of ``Tx``.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import job as J
from ..chunking import is_chunk_id
from ..errors import IncompatibleQueue, JobStateError, NoSuchJob
from ..job import Task
from ..message import Function
from .blobs import load_blob
from .continuations import Continuations
from .controls import ControlFlags
from .faults import transient_cause
from .gates import GateRules
from .maps import MapRules
from .pauses import QUEUE, PauseRules, blocker_of
from .rates import RateRules
from .recovery import RecoveryRules
from .resources import ResourceRules
from .schedules import ScheduleRules

if TYPE_CHECKING:
    from . import NewJob, Outcome, Store

log = logging.getLogger(__name__)

INLINE_LIMIT = 32 * 1024  # larger results go to diskcache as write-once keys
# larger arguments go to diskcache as write-once keys "args:<id>": into its own table
# below INLINE_LIMIT (diskcache's disk_min_file_size), into a value file above
ARGS_APART = 4 * 1024


_KEEP: Any = object()  # set_log: leave the log of earlier attempts as it is
_DONE = J.OutcomeKind.DONE  # a module name: compared for every outcome (settle_many)
# what a job asked to cancel ends as cancelled from (done: it finished first, it is done)
_ENDS_CANCELLED = frozenset({J.OutcomeKind.FAILED, J.OutcomeKind.YIELDED, J.OutcomeKind.DIED})


class Tx(ResourceRules, RateRules, Continuations, GateRules, MapRules, ScheduleRules,
         PauseRules, RecoveryRules, ControlFlags):
    def __init__(self, store: Store, sql: Any, now: float) -> None:
        self.store = store
        self.sql = sql
        self.now = now
        self.many = store.cache.connection.executemany
        self.parked: set[str] = set()  # jobs hold() parked in this transaction
        self._options: dict[tuple[Any, ...], str] = {}  # options' values -> their JSON
        self._counts: Counter[str] = Counter()  # jobs per state, added by this transaction
        self._has_outputs: bool | None = None

    # -- small helpers ------------------------------------------------------------------

    def row(self, job_id: str, columns: str) -> Any:
        row = self.sql(f"SELECT {columns} FROM nbq_job WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NoSuchJob(f"no job {job_id!r} in queue {self.store.path}; list them with q.jobs()")
        return row

    def move(self, job_id: str, src: str, dst: str, **columns: Any) -> None:
        J.check_move(job_id, src, dst)
        columns["state"] = dst
        names = ", ".join(f"{k} = ?" for k in columns)
        cursor = self.sql(f"UPDATE nbq_job SET {names} WHERE id = ? AND state = ?",
                          (*columns.values(), job_id, src))
        if cursor.rowcount != 1:  # the counts per state rest on src being true
            raise RuntimeError(f"job {job_id} was not {src} (moving it to {dst})")
        if not is_chunk_id(job_id):  # a map's chunks are not counted: their map is
            self.count(src, dst)
        if dst == J.REVIEW:
            self.entered_review(job_id)

    def count(self, src: str | None, dst: str, n: int = 1) -> None:
        """``n`` jobs went from ``src`` (None: inserted) to ``dst``."""
        if src is not None:
            self._counts[src] -= n
        self._counts[dst] += n

    def write_counts(self) -> None:
        """Add this transaction's changes to the counts per state (at its end)."""
        changes = [(n, state) for state, n in self._counts.items() if n]
        if changes:
            self.many("UPDATE nbq_count SET n = n + ? WHERE state = ?", changes)
        if self._counts[J.READY] > 0 or self._counts[J.RUNNING] > 0:  # work came: see gates.py
            self.sql("UPDATE nbq_meta SET value = 0 WHERE key = 'drained' AND value != 0")
        self._counts.clear()

    def options(self, text: str) -> J.Options:
        """A job's stored options (parsed once per distinct text: a map's jobs share it)."""
        cache = self.store._options
        options: J.Options | None = cache.get(text)
        if options is None:
            if len(cache) > 256:
                cache.clear()
            options = cache[text] = J.Options.from_dict(json.loads(text))
        return options

    def has_outputs(self) -> bool:
        if self._has_outputs is None:
            self._has_outputs = bool(self.sql("SELECT EXISTS (SELECT 1 FROM nbq_output)")
                                     .fetchone()[0])
        return self._has_outputs

    def next_seq(self, n: int) -> int:
        self.sql("UPDATE nbq_meta SET value = value + ? WHERE key = 'seq'", (n,))
        return int(self.sql("SELECT value FROM nbq_meta WHERE key = 'seq'").fetchone()[0]) - n + 1

    # -- insert -------------------------------------------------------------------------

    _INSERT = ("INSERT INTO nbq_job (id, seq, key, name, kind, state, blocker, reason, wait, "
               "priority, not_before, fn, args, refs, needs, options, pending, parent, step, "
               "position, created, ended, payload, args_ref) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")

    def insert(self, jobs: Sequence[NewJob]) -> list[tuple[str, bool]]:
        seq = self.next_seq(len(jobs))
        out: list[tuple[str, bool]] = []
        seen_fns: set[str] = set()
        rows: list[tuple[Any, ...]] = []  # inserted together, before any lookup that needs them

        def flush() -> None:
            if rows:
                self.many(self._INSERT, rows)
                rows.clear()

        # the jobs already stored under these keys, read at once; keys new in this batch
        # are added as they are inserted (a repeated key attaches to the first)
        keyed = self.existing_keys([new.key for new in jobs if new.key is not None])
        for offset, new in enumerate(jobs):
            if new.key is not None:
                existing = keyed.get(new.key)
                if existing is not None:
                    job_id, state = existing
                    if state in (J.FAILED, J.CANCELLED):
                        flush()
                        self.rerun(job_id, reason="resubmitted", needs=new.needs)
                        keyed[new.key] = (job_id, J.READY)  # rerun: not ended any more
                    out.append((job_id, False))
                    continue
                keyed[new.key] = (new.id, J.READY)
            if new.function is not None and new.function.id not in seen_fns:
                f = new.function
                self.sql("INSERT OR IGNORE INTO nbq_fn VALUES (?, ?, ?, ?, ?, ?)",
                         (f.id, f.blob, int(f.by_value), f.python, f.cloudpickle, f.label))
                seen_fns.add(f.id)
            if new.needs:
                flush()
            state, row = self.job_row(new, seq + offset)
            rows.append(row)
            self.count(None, state)
            if new.gate is not None:
                self.add_gate(new.id, new.gate)
            if state == J.REVIEW:
                flush()
                self.entered_review(new.id)
            if state in J.ENDED:  # cancelled at submit (a need had failed), or a timer due
                flush()
                self.outbox(new.id)
            out.append((new.id, True))
        flush()
        return out

    def existing_keys(self, keys: list[str]) -> dict[str, tuple[str, str]]:
        """key -> (id, state) of the stored jobs with these keys."""
        return {key: (job_id, state)
                for key, job_id, state in self.rows_where_in("key, id, state", "key", keys)}

    def rows_where_in(self, columns: str, column: str, values: Sequence[Any]) -> list[Any]:
        """``columns`` of the jobs whose ``column`` is one of ``values`` (500 at a time:
        SQLite bounds the parameters of a statement)."""
        rows: list[Any] = []
        for start in range(0, len(values), 500):
            chunk = values[start:start + 500]
            rows += self.sql(f"SELECT {columns} FROM nbq_job WHERE {column} IN "
                             f"({','.join('?' * len(chunk))})", chunk).fetchall()
        return rows

    def job_row(self, new: NewJob, seq: int) -> tuple[str, tuple[Any, ...]]:
        """The state and row of a new job (its needs recorded); the caller inserts and
        counts it."""
        pending, cancel_reason = 0, None
        for need in dict.fromkeys(new.needs):
            row = self.sql("SELECT state FROM nbq_job WHERE id = ?", (need,)).fetchone()
            if row is None:
                raise NoSuchJob(f"job {new.name!r} needs job {need!r}, which is not in queue "
                                f"{self.store.path}; nothing was submitted")
            if row[0] == J.DONE:
                continue
            if row[0] in J.ENDED:
                cancel_reason = f"needs job {need}, which ended {row[0]}"
                break
            self.sql("INSERT INTO nbq_need VALUES (?, ?, 0)", (need, new.id))
            pending += 1
        state, blocker, reason, wait = self.initial_state(new, pending)
        ended = self.now if state == J.DONE else None
        if cancel_reason is not None:
            state, blocker, reason, wait, ended = J.CANCELLED, None, cancel_reason, None, self.now
            self.sql("DELETE FROM nbq_need WHERE job = ?", (new.id,))
            pending = 0
        args, args_ref = new.args, None
        if args is not None and len(args) >= ARGS_APART:
            # apart from the row, written once: SQLite rewrites a whole row at each change
            # (claim, heartbeat, progress), and with it arguments kept inline
            args, args_ref = None, f"args:{new.id}"
            self.store.cache.set(args_ref, new.args)
        return state, (new.id, seq, new.key, new.name, new.kind, state, blocker, reason, wait,
                      new.options.priority, new.not_before,
                      new.function.id if new.function else None, args,
                      json.dumps(list(new.refs)) if new.refs else None,
                      json.dumps(list(new.needs)) if new.needs else None,
                      self.options_json(new.options), pending, new.parent, new.step, new.position,
                      self.now, ended, new.payload, args_ref)

    def options_json(self, options: J.Options) -> str:
        # the jobs of a map share one Options object, a fan-out's children equal ones:
        # encode each distinct value once per transaction
        value = (options.name, options.priority, options.retries, options.retry_delay,
                 options.timeout, tuple(options.resources.items()), options.memory)
        text = self._options.get(value)
        if text is None:
            text = self._options[value] = json.dumps(options.to_dict())
        return text

    def initial_state(self, new: NewJob, pending: int
                      ) -> tuple[str, str | None, str, str | None]:
        """A new job's state, blocker, reason and what it waits for (``wait``: facts as
        stored; none for a time or a pause, which its blocker and ``not_before`` say)."""
        if pending:
            return J.WAITING, J.BLOCK_NEEDS, "", self.needs_wait(new.id)
        if new.not_before is not None and new.not_before > self.now:
            return J.WAITING, J.BLOCK_TIME, "", None
        if new.kind == J.GATE:
            return J.REVIEW, None, "review", None
        if new.kind == J.TIMER:
            return J.DONE, None, "slept", None
        pause = self.held(new.name)
        if pause is not None:
            return J.WAITING, blocker_of(pause), "", None
        return J.READY, None, "", None

    def needs_wait(self, job_id: str) -> str | None:
        """What a job waits for while jobs it needs have not ended (facts, as stored)."""
        needs = [r[0] for r in self.sql("SELECT need FROM nbq_need WHERE job = ? AND soft = 0 LIMIT 4",
                                        (job_id,)).fetchall()]
        if not needs:
            return None
        if len(needs) > 3:
            return J.facts_json({"kind": J.WAIT_NEEDS, "jobs": needs[:3], "more": True})
        return J.facts_json({"kind": J.WAIT_NEEDS, "jobs": needs})

    def advance(self, job_id: str) -> None:
        """A waiting job whose needs are all met: wait for its time, or become ready."""
        kind, not_before, state = self.row(job_id, "kind, not_before, state")
        if state != J.WAITING:
            return
        if not_before is not None and not_before > self.now:
            self.move(job_id, state, J.WAITING, blocker=J.BLOCK_TIME, reason="", wait=None)
        elif kind == J.GATE:
            self.move(job_id, state, J.REVIEW, blocker=None, reason="review")
        else:
            self.move(job_id, state, J.READY, blocker=None, reason="")

    # -- claim --------------------------------------------------------------------------

    def promote_due(self) -> None:
        # INDEXED BY: without statistics SQLite picks a state index and scans every
        # waiting job; the partial indexes keep these seeks O(log n) (invariant 4)
        due = self.sql("SELECT id FROM nbq_job INDEXED BY nbq_job_time "
                       "WHERE state = 'waiting' AND blocker = 'time' "
                       "AND not_before <= ? ORDER BY not_before LIMIT 1000",
                       (self.now,)).fetchall()
        for (job_id,) in due:
            kind = self.row(job_id, "kind")[0]
            if kind == J.TIMER:
                self.end(job_id, J.DONE, "slept")
            elif kind == J.GATE:
                self.move(job_id, J.WAITING, J.REVIEW, blocker=None, reason="review")
            else:
                self.move(job_id, J.WAITING, J.READY, blocker=None, reason="")
        self.wake_rates()  # resources whose next start came (nothing read without rates)

    def claim(self, owner: str, n: int, lease: float, ahead: int) -> list[Task]:
        """Claim up to ``n`` ready jobs for ``owner`` until ``lease``; the last ``ahead``
        of them are handed ahead (``Task.handed``: not started by this claim)."""
        self.promote_due()
        pauses = self.pauses()  # one read while nothing is paused
        if QUEUE in pauses:
            self.park_ready(QUEUE)
            return []
        claimed: list[Task] = []
        uncarvable: set[str] = set()  # maps that made no chunk in this claim
        while len(claimed) < n:
            rows = self.sql(
                "SELECT id, name, fn, args, refs, options, attempt, claim, steps, args_ref, "
                "kind, parent, priority, seq "
                "FROM nbq_job INDEXED BY nbq_job_ready WHERE state = 'ready' "
                "ORDER BY priority DESC, seq LIMIT ?",
                (max(n - len(claimed), 1) * 2,)).fetchall()
            # a running map whose place in line comes before the first ready job makes a
            # chunk, which is ready with the map's place (store/maps.py)
            best = self.best_carvable(uncarvable)
            if best is not None and pauses and self.row(best[0], "name")[0] in pauses:
                uncarvable.add(best[0])  # a paused map makes no chunk (its items wait)
                continue
            if best is not None and (not rows or (best[1], -best[2]) > (rows[0][12],
                                                                          -rows[0][13])):
                if not self.carve(best[0], owner):
                    uncarvable.add(best[0])
                continue
            if not rows:
                break
            updates = []
            chunks = 0
            for (job_id, name, fn_id, args, refs, options_text, attempt, claim, steps,
                 args_ref, kind, parent, priority, seq) in rows:
                if len(claimed) >= n or (best is not None and (best[1], -best[2]) > (priority,
                                                                                     -seq)):
                    break
                if pauses and name in pauses:
                    self.park_paused(job_id, name, kind)
                    continue
                if kind == J.MAP:
                    self.start_map(job_id)
                    continue
                options = self.options(options_text)
                is_handed = len(claimed) >= n - ahead
                if is_handed and options.resources and self.rate_limited(options.resources):
                    n = len(claimed)  # not handed ahead: a start counts when it is claimed
                    break
                if options.resources and not self.hold(job_id, options.resources, options.priority):
                    continue
                try:
                    if kind == J.CHUNK:
                        args = self.chunk_args(parent, args)
                        chunks += 1
                    elif args_ref is not None:
                        args = self.blob(None, args_ref)
                    ref_results = self.ref_results(job_id, json.loads(refs)) if refs else {}
                    journal = self.journal(job_id) if steps else []
                except (NoSuchJob, IncompatibleQueue) as missing:
                    self.fail_unclaimable(job_id, owner, attempt, claim, missing)
                    continue
                updates.append((attempt + 1, claim + 1, owner, self.now + lease, int(is_handed),
                                None if is_handed else self.now, job_id))
                claimed.append(Task(
                    id=job_id, claim=claim + 1, name=name, attempt=attempt + 1,
                    function=self.function(fn_id), args=args, options=options,
                    memory=options.memory, ref_results=ref_results, journal=journal,
                    handed=is_handed, kind=kind,
                ))
            # one statement for the batch (READY -> RUNNING, see job.TRANSITIONS)
            self.many("UPDATE nbq_job SET state = 'running', attempt = ?, claim = ?, owner = ?, "
                      "lease_until = ?, handed = ?, started = ?, reason = '', "
                      "cancel_requested = 0 WHERE id = ? AND state = 'ready'", updates)
            self.count(J.READY, J.RUNNING, len(updates) - chunks)
        return claimed

    def function(self, fn_id: str) -> Any:
        cache = self.store._functions
        if fn_id not in cache:
            blob, by_value, python, cp, label = self.sql(
                "SELECT blob, by_value, python, cloudpickle, label FROM nbq_fn WHERE id = ?",
                (fn_id,)).fetchone()
            if len(cache) > 512:
                cache.clear()
            cache[fn_id] = Function(fn_id, blob, bool(by_value), python, cp, label)
        return cache[fn_id]

    def ref_results(self, job_id: str, refs: list[str]) -> dict[str, bytes]:
        """The results ``job_id`` takes as arguments (``NoSuchJob`` if one is gone)."""
        out = {}
        for ref in refs:
            row = self.sql("SELECT result, result_ref FROM nbq_job WHERE id = ?",
                           (ref,)).fetchone()
            if row is None:
                raise NoSuchJob(f"job {job_id} takes the result of job {ref}, which is no "
                                f"longer in queue {self.store.path} (forgotten by an older "
                                "nbqueue, or deleted by hand)")
            out[ref] = self.blob(*row)
        return out

    def fail_unclaimable(self, job_id: str, owner: str, attempt: int, claim: int,
                         missing: Exception) -> None:
        """A ready job whose inputs are gone (a result it takes, its arguments, a child's
        outcome its generator replays) fails alone, in the claim's transaction; the
        other jobs of the claim go on (READY -> RUNNING -> FAILED, one attempt)."""
        error = J.RemoteError("MissingInput", f"{missing}; job {job_id} cannot run. Submit it "
                                              "again with its inputs")
        log.warning("job %s: %s", job_id, error.exc_value)
        self.move(job_id, J.READY, J.RUNNING, attempt=attempt + 1, claim=claim + 1, owner=owner,
                  started=self.now, reason="")
        self.end(job_id, J.FAILED, f"MissingInput: {missing}"[:300],
                 error=json.dumps(error.to_dict()))

    def blob(self, inline: bytes | None, ref: str | None) -> bytes:
        blob = load_blob(self.store, inline, ref)
        return blob if blob is not None else pickle.dumps(None)

    # -- ending -------------------------------------------------------------------------

    def end(self, job_id: str, state: str, reason: str = "", **columns: Any) -> None:
        """Move a job to an ended state and let everything that waited on it go on."""
        stack = [(job_id, state, reason, columns)]
        while stack:
            jid, dst, why, cols = stack.pop()
            src, kind = self.row(jid, "state, kind")
            if src in J.ENDED:
                continue
            if kind == J.CHUNK:  # its items end so; its row goes (store/maps.py)
                self.chunk_ended(jid, dst, cols)
                continue
            self.move(jid, src, dst, reason=why, ended=self.now, owner=None, lease_until=None,
                      blocker=None, handed=0, **cols)
            if kind == J.MAP and dst != J.DONE:
                self.stop_map(jid)
            self.outbox(jid)
            self.release(jid)
            if src == J.READY:  # a woken resource waiter cancelled before its claim
                options = J.Options.from_dict(json.loads(self.row(jid, "options")[0]))
                for name in options.resources:
                    self.wake_resource(name)
            if dst != J.DONE:
                stack += self.orphans(jid, dst)
            stack += self.tell_dependents(jid, dst)

    def tell_dependents(self, job_id: str, state: str) -> list[tuple[str, str, str, dict[str, Any]]]:
        """``job_id`` ended in ``state``: its dependents go on, or are returned to be
        cancelled (``end`` does that)."""
        if state == J.DONE:
            self.needs_done([job_id])
            return []
        out: list[tuple[str, str, str, dict[str, Any]]] = []
        dependents = self.sql("SELECT job, soft AS any_end FROM nbq_need WHERE need = ?",
                              (job_id,)).fetchall()
        if dependents:
            self.sql("DELETE FROM nbq_need WHERE need = ?", (job_id,))
        for dep, any_end in dependents:
            if any_end:  # a generator waiting for its children: any ending counts
                self.child_ended(dep)
            else:
                self.sql("DELETE FROM nbq_need WHERE job = ?", (dep,))
                out.append((dep, J.CANCELLED, f"needs job {job_id}, which ended {state}", {}))
        return out

    _OUTBOX = ("INSERT INTO nbq_outbox (job, name, kind, state, reason, error, attempt, "
               "parent, created, started, ended) SELECT id, name, kind, state, reason, error, "
               "attempt, parent, created, started, ended FROM nbq_job WHERE id = ?")

    def outbox(self, job_id: str) -> None:
        """Record a job's ending for the outputs, in the transaction that ends it (only
        while an output is registered: a new output starts from its registration)."""
        if self.has_outputs():
            self.sql(self._OUTBOX, (job_id,))

    # -- settling outcomes ----------------------------------------------------------------

    def settle_many(self, owner: str, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply a dispatcher's outcomes; returns which took effect (the fence).

        The common case, a job done with a small result that spawned nothing and held
        no resource, is settled for the whole batch at once (``settle_done``). Every
        other outcome goes through ``settle_one``."""
        plain = [o for o in outcomes if o.kind == _DONE and not o.spawned
                 and (o.result is None or len(o.result) < INLINE_LIMIT)
                 and not is_chunk_id(o.id)]
        if plain and self.settle_done(owner, plain):
            done = {id(o) for o in plain}
            return [True if id(o) in done else self.settle_one(owner, o) for o in outcomes]
        return [self.settle_one(owner, o) for o in outcomes]

    def settle_done(self, owner: str, outcomes: list[Outcome]) -> bool:
        """Settle plain done jobs in one statement, fenced in it: if any of them is not
        held by ``owner`` under its claim any more, or holds a resource, nothing is
        changed and False returned (each then goes through ``settle_one``)."""
        rows = [(self.now, o.result, o.started, o.id, owner, o.claim) for o in outcomes]
        self.sql("SAVEPOINT done")
        # RUNNING -> DONE (see job.TRANSITIONS); what end() does, for the whole batch
        cursor = self.many(
            "UPDATE nbq_job SET state = 'done', reason = '', ended = ?, owner = NULL, "
            "lease_until = NULL, blocker = NULL, handed = 0, result = ?, result_ref = NULL, "
            "progress = NULL, started = COALESCE(?, started) "
            "WHERE id = ? AND state = 'running' AND owner = ? AND claim = ? AND log_before IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM nbq_hold WHERE job = nbq_job.id)", rows)
        if cursor.rowcount != len(rows):
            self.sql("ROLLBACK TO done")
            self.sql("RELEASE done")
            return False
        self.sql("RELEASE done")
        self.count(J.RUNNING, J.DONE, len(rows))
        logged = [o for o in outcomes if o.log]
        if logged:
            self.keep_logs(logged)
        ids = [o.id for o in outcomes]
        if self.has_outputs():
            self.many(self._OUTBOX, [(job_id,) for job_id in ids])
        self.needs_done(ids)
        return True

    def needs_done(self, ids: list[str]) -> None:
        """The jobs ``ids`` ended done: what waited on them goes on. One read and one
        delete for the batch, then one update per job that waited (a generator's fan-out
        has one parent for all its children)."""
        marks = ",".join("?" * len(ids))
        rows = self.sql(f"SELECT job, soft AS any_end FROM nbq_need WHERE need IN ({marks})",
                        ids).fetchall()
        if not rows:
            return
        self.sql(f"DELETE FROM nbq_need WHERE need IN ({marks})", ids)
        met: dict[tuple[str, int], int] = {}
        for dependent, any_end in rows:
            met[(dependent, any_end)] = met.get((dependent, any_end), 0) + 1
        for (dependent, any_end), n in met.items():
            if any_end:  # a generator waiting for its children
                self.child_ended(dependent, n)
                continue
            self.sql("UPDATE nbq_job SET pending = pending - ? WHERE id = ?", (n, dependent))
            if self.row(dependent, "pending")[0] <= 0:
                self.advance(dependent)
            else:
                self.sql("UPDATE nbq_job SET reason = '', wait = ? WHERE id = ?",
                         (self.needs_wait(dependent), dependent))

    def settle_one(self, owner: str, outcome: Outcome) -> bool:
        """Settle one outcome inside a savepoint: an outcome that cannot be committed
        (a spawn that needs an unknown job, ...) fails its own job, not the batch. An
        error of the store (a full disk, an I/O error) is no fault of the job: it is
        raised, the whole transaction rolls back and the dispatcher keeps the outcome
        to commit it again later."""
        self.sql("SAVEPOINT outcome")
        counts = self._counts.copy()
        try:
            applied = self.settle(owner, outcome)
        except Exception as exc:
            if transient_cause(exc) is not None:
                raise  # SQLite may have rolled the whole transaction back already
            self.sql("ROLLBACK TO outcome")
            self._counts = counts
            self.sql("RELEASE outcome")
            log.warning("job %s: its outcome could not be committed: %s", outcome.id, exc)
            failed = J.Outcome(outcome.id, outcome.claim, J.OutcomeKind.FAILED, retryable=False,
                               log=outcome.log, error=J.RemoteError(
                                   type(exc).__name__,
                                   f"the outcome of job {outcome.id} could not be committed: "
                                   f"{exc}"))
            return self.settle(owner, failed)
        self.sql("RELEASE outcome")
        return applied

    def settle(self, owner: str, outcome: Outcome) -> bool:
        """Apply one outcome if this owner still holds this claim (the fence)."""
        row = self.sql("SELECT state, owner, claim, attempt, retry_base, options, "
                       "cancel_requested FROM nbq_job WHERE id = ?", (outcome.id,)).fetchone()
        if row is None or row[0] != J.RUNNING or row[1] != owner or row[2] != outcome.claim:
            return False
        _, _, _, attempt, retry_base, options_text, cancel_requested = row
        if is_chunk_id(outcome.id):
            self.settle_chunk(outcome, bool(cancel_requested))
            return True
        extra: dict[str, Any] = {}
        if outcome.started is not None:
            extra["started"] = outcome.started
        kind = outcome.kind
        if kind == J.OutcomeKind.RELEASED:
            self.put_back(outcome.id)
        elif kind == J.OutcomeKind.DIED and not cancel_requested:
            how = outcome.error.exc_value if outcome.error is not None else ""
            self.put_back(outcome.id, cause=f"its worker process died{how and f' ({how})'}",
                          death=True)
        elif kind == J.OutcomeKind.CANCELLED or (cancel_requested and kind in _ENDS_CANCELLED):
            self.keep_logs([outcome])
            self.end(outcome.id, J.CANCELLED, "cancelled while running", **extra)
        elif kind == J.OutcomeKind.DONE:
            self.insert_spawned(outcome)
            result, ref = self.store_result(outcome.id, outcome.claim, outcome.result)
            self.keep_logs([outcome])
            self.end(outcome.id, J.DONE, "", result=result, result_ref=ref, progress=None,
                     **extra)
        elif kind == J.OutcomeKind.YIELDED:
            self.keep_logs([outcome])
            self.yield_step(outcome, extra)
        else:
            error = outcome.error or J.RemoteError("RuntimeError", "unknown failure")
            options = J.Options.from_dict(json.loads(options_text))
            used = attempt - retry_base
            if outcome.retryable and used <= options.retries:
                delay = J.retry_delay_for(used, options.retry_delay)
                why = f"attempt {attempt} failed with {error.exc_type}"
                self.keep_logs([outcome])
                before = self.next_attempt_log(self.log_of(outcome.id)[0], attempt, why)
                self.set_log(outcome.id, before, before=before)
                self.release(outcome.id)
                self.move(outcome.id, J.RUNNING, J.WAITING, blocker=J.BLOCK_TIME,
                          not_before=self.now + delay, owner=None, lease_until=None,
                          error=json.dumps(error.to_dict()), why=why, reason="",
                          wait=J.facts_json({"kind": J.WAIT_RETRY, "until": self.now + delay,
                                             "n": used, "of": options.retries,
                                             "error": error.exc_type}),
                          **extra)
            else:
                self.keep_logs([outcome])
                self.end(outcome.id, J.FAILED, f"{error.exc_type}: {error.exc_value}"[:300],
                         error=json.dumps(error.to_dict()), **extra)
        return True

    def store_result(self, job_id: str, claim: int, blob: bytes | None) -> tuple[Any, Any]:
        if blob is None or len(blob) < INLINE_LIMIT:
            return blob, None
        ref = f"result:{job_id}:{claim}"  # write-once: never overwritten inside a transition
        self.store.cache.set(ref, blob)
        return None, ref

    def insert_spawned(self, outcome: Outcome) -> None:
        if outcome.spawned:
            self.insert(list(outcome.spawned))

    @staticmethod
    def next_attempt_log(log: str | None, attempt: int, why: str) -> str:
        """The log an attempt starts with: what the earlier ones wrote, then a header."""
        header = f"--- attempt {attempt + 1}: {why} ---\n"
        if log and not log.endswith("\n"):
            log += "\n"
        return J.cap_log((log or "") + header)

    # -- logs: apart from the job's row (nbq_log) ---------------------------------------------

    def log_of(self, job_id: str) -> tuple[str | None, str | None]:
        """A job's output so far and that of its earlier attempts (``before``). A job of a
        queue an older nbqueue wrote may still have them in its row."""
        row = self.sql("SELECT log, before FROM nbq_log WHERE job = ?", (job_id,)).fetchone()
        if row is None:
            row = self.sql("SELECT log, log_before FROM nbq_job WHERE id = ?",
                           (job_id,)).fetchone()
        return (row[0], row[1]) if row is not None else (None, None)

    def set_log(self, job_id: str, log: str, *, before: Any = _KEEP) -> None:
        """Write a job's log, and ``before`` if given (else it is kept as it is)."""
        if before is _KEEP:  # a first row takes what an older nbqueue kept in the job's row
            self.sql("INSERT INTO nbq_log (job, log, before) SELECT ?, ?, log_before FROM nbq_job "
                     "WHERE id = ? ON CONFLICT (job) DO UPDATE SET log = excluded.log",
                     (job_id, log, job_id))
        else:
            self.sql("INSERT INTO nbq_log (job, log, before) VALUES (?, ?, ?) ON CONFLICT (job) "
                     "DO UPDATE SET log = excluded.log, before = excluded.before",
                     (job_id, log, before))

    def append_log(self, job_id: str, chunk: str) -> None:
        """Live output of a running job, about once a second."""
        self.set_log(job_id, J.cap_log((self.log_of(job_id)[0] or "") + chunk))

    def keep_logs(self, outcomes: Sequence[Outcome]) -> None:
        """Each outcome's log (the attempt's whole output) after its job's earlier attempts'."""
        logged = [o for o in outcomes if o.log]
        befores: dict[str, str | None] = {}
        for start in range(0, len(logged), 500):
            chunk = [o.id for o in logged[start:start + 500]]
            befores.update(self.sql(f"SELECT job, before FROM nbq_log "
                                    f"WHERE job IN ({','.join('?' * len(chunk))})", chunk))
        for o in logged:
            before = befores[o.id] if o.id in befores else self.log_of(o.id)[1]
            self.set_log(o.id, J.cap_log((before or "") + (o.log or "")))

    # -- user actions -----------------------------------------------------------------------

    def cancel(self, job_id: str) -> str:
        state: str
        state, kind = self.row(job_id, "state, kind")
        if state in J.ENDED:
            return state
        if state == J.RUNNING and kind != J.MAP:  # a map ends at once: its chunks are stopped
            self.sql("UPDATE nbq_job SET cancel_requested = 1, reason = 'cancelling' WHERE id = ?",
                     (job_id,))
            return state
        self.sql("DELETE FROM nbq_need WHERE job = ?", (job_id,))
        self.end(job_id, J.CANCELLED, "cancelled")
        return J.CANCELLED

    def rerun(self, job_id: str, *, reason: str, needs: Sequence[str] | None = None) -> None:
        """Run a failed or cancelled job again under its id, as a new attempt.

        ``needs`` (its key resubmitted, gates included) are waited for again, as at
        submit; without them (a retry by hand) the jobs it takes results from must be done.
        """
        state, kind, attempt, refs, stored = self.row(job_id, "state, kind, attempt, refs, needs")
        if kind == J.MAP:
            self.rerun_map(job_id, reason=reason, needs=needs)
            return
        if state not in (J.FAILED, J.CANCELLED) or (kind == J.GATE and needs is None):
            raise JobStateError(f"job {job_id} is {state}; only a failed or cancelled job can be "
                             "retried")
        by_hand = needs is None
        if needs is None:
            needs = json.loads(stored) if stored else []
        waiting = []
        for need in dict.fromkeys(needs):
            need_state = self.row(need, "state")[0]
            if need_state in J.ENDED and need_state != J.DONE:
                if by_hand:  # a retry by hand: what it needs must not have failed
                    what = "takes the result of" if refs and need in json.loads(refs) else "needs"
                    raise JobStateError(f"job {job_id} {what} job {need}, which is "
                                     f"{need_state}; retry job {need} first")
                return  # resubmitted: it still cannot run, it stays as it ended
            if need_state != J.DONE:
                waiting.append(need)
        why = f"run again after attempt {attempt} ended {state}" if attempt else ""
        before = self.next_attempt_log(self.log_of(job_id)[0], attempt, why) if why else None
        self.sql("UPDATE nbq_job SET retry_base = ?, deaths = 0, error = NULL, ended = NULL, "
                 "result = NULL, result_ref = NULL, progress = NULL, cancel_requested = 0, "
                 "not_before = NULL, pending = ?, why = ?, log_before = NULL WHERE id = ?",
                 (attempt, len(waiting), why or None, job_id))
        if before is not None:
            self.set_log(job_id, before, before=before)
        else:
            self.sql("UPDATE nbq_log SET before = NULL WHERE job = ?", (job_id,))
        for need in waiting:
            self.sql("INSERT OR IGNORE INTO nbq_need VALUES (?, ?, 0)", (need, job_id))
        if waiting:
            self.move(job_id, state, J.WAITING, blocker=J.BLOCK_NEEDS, reason="",
                      wait=self.needs_wait(job_id))
        elif kind == J.GATE:  # the table has no ended -> review: back through waiting
            self.move(job_id, state, J.WAITING, blocker=None, reason="")
            self.move(job_id, J.WAITING, J.REVIEW, blocker=None, reason="review")
        else:
            self.move(job_id, state, J.READY, reason="", blocker=None)
            self.rerun_children(job_id)
