"""Chunked maps in a transaction (a mixin of ``Tx``) and their reads (a mixin of ``Store``).

A map is one job row (kind ``map``) plus its chunking in ``nbq_map`` and its items'
arguments in blocks (``nbq_map_args``). Its items are no rows: a ready map that is
claimed starts running, and while it runs, claims *carve* chunks from it, the next
items each time (``carve``). A chunk is a job row (kind ``chunk``, id ``<map>.c<n>``,
the map's priority and place in line) that is claimed, leased, put back after a crash
and killed at a timeout like any job; it is not counted among the jobs, nor listed.

A chunk's outcome commits in one transaction: the results of a chunk's first run go
into one row of ``nbq_map_out`` (one pickle for them all); an item whose ending is its
own (it failed, waits for a retry, was cancelled, ran again) has a row in
``nbq_map_item``, which wins over the range's. A failed item with retries left waits in
a chunk of its own kind (the items that failed alike, run again after the backoff).
A chunk whose worker died is split in two (a crash in one item ends up alone in a
chunk of one, poisoned after ``POISON_DEATHS`` like a job). The map ends when its
last item ends: done, failed if an item failed, else cancelled.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import chunking as C
from .. import job as J
from ..errors import JobStateError, NoSuchJob, SubmitError

if TYPE_CHECKING:
    from ..job import NewMap, Outcome

# a map's own tables, by the column naming it (its job row aside)
MAP_TABLES = (("nbq_map", "id"), ("nbq_map_args", "map"), ("nbq_map_out", "map"),
              ("nbq_map_item", "map"), ("nbq_map_tb", "map"))


class MapRules:
    """Mixin of ``Tx``: uses its ``sql``, ``many``, ``now``, ``row``, ``move``, ``end``,
    ``job_row``, ``count``, ``outbox``, ``next_seq``, ``options``, ``put_back``,
    ``release``, ``log_of``, ``set_log`` and ``store``."""

    sql: Any
    many: Any
    now: float
    store: Any
    _INSERT: str

    # -- submitting -----------------------------------------------------------------------

    def insert_map(self, new: NewMap) -> tuple[str, bool]:
        """Insert a map, or attach to the map stored under its key: then its items that
        failed or were cancelled run again (``rerun_map``). Returns (id, created)."""
        job = new.job
        if job.key is not None:
            row = self.sql("SELECT id, kind FROM nbq_job WHERE key = ?", (job.key,)).fetchone()
            if row is not None:
                if row[1] != J.MAP:
                    raise SubmitError(f"map(): key={job.key!r} is the key of job {row[0]}, "
                                      "which is not a chunked map; give another key (or "
                                      "key=None); nothing was stored")
                self.rerun_map(row[0], reason="resubmitted", needs=job.needs)
                return row[0], False
        seq = self.next_seq(1)  # type: ignore[attr-defined]
        f = job.function
        if f is not None:
            self.sql("INSERT OR IGNORE INTO nbq_fn VALUES (?, ?, ?, ?, ?, ?)",
                     (f.id, f.blob, int(f.by_value), f.python, f.cloudpickle, f.label))
        state, row = self.job_row(job, seq)  # type: ignore[attr-defined]
        self.sql(self._INSERT, row)
        self.count(None, state)  # type: ignore[attr-defined]
        self.sql("INSERT INTO nbq_map (id, total, chunksize, size, priority, seq) "
                 "VALUES (?, ?, ?, ?, ?, ?)",
                 (job.id, new.total, new.chunksize, new.chunksize or 1, job.options.priority,
                  seq))
        self.many("INSERT INTO nbq_map_args VALUES (?, ?, ?, ?)",
                  [(job.id, start, n, blob) for start, n, blob in new.blocks])
        if state in J.ENDED:  # cancelled at submit: a job it needs had failed
            self.stop_map(job.id)
            self.outbox(job.id)  # type: ignore[attr-defined]
        self.show_map(job.id)
        return job.id, True

    # -- starting and carving ---------------------------------------------------------------

    def start_map(self, map_id: str) -> None:
        """A ready map is claimed: it runs from now on, chunks are carved from it, and its
        items to run again go into chunks."""
        self.move(map_id, J.READY, J.RUNNING, started=self.now, reason="")  # type: ignore[attr-defined]
        self.sql("UPDATE nbq_map SET carving = (cursor < total AND stopped = 0) WHERE id = ?",
                 (map_id,))
        self.chunk_reruns(map_id)
        self.show_map(map_id)

    def best_carvable(self, skip: set[str]) -> tuple[str, int, int] | None:
        """The running map that comes first with items left to carve: (id, priority, seq)."""
        for row in self.sql("SELECT id, priority, seq FROM nbq_map INDEXED BY nbq_map_carve "
                            "WHERE carving = 1 ORDER BY priority DESC, seq LIMIT ?",
                            (len(skip) + 1,)):
            if row[0] not in skip:
                return row[0], int(row[1]), int(row[2])
        return None

    def carve(self, map_id: str, owner: str) -> bool:
        """Put the map's next items in a chunk (ready, with the map's place in line), as
        many as ``chunksize`` or, automatic, as ``chunking.next_size`` says; False if none
        was made (nothing left, or a chunk of it waits for a resource)."""
        total, cursor, chunksize, size, smoothed = self.sql(
            "SELECT total, cursor, chunksize, size, smoothed FROM nbq_map WHERE id = ?",
            (map_id,)).fetchone()
        remaining = total - cursor
        if remaining <= 0:
            self.sql("UPDATE nbq_map SET carving = 0 WHERE id = ?", (map_id,))
            return False
        options = self.options(self.row(map_id, "options")[0])  # type: ignore[attr-defined]
        if options.resources and self.sql(
                "SELECT 1 FROM nbq_job INDEXED BY nbq_job_parent WHERE parent = ? AND "
                "state = 'waiting' AND blocker >= 'resource:' AND blocker < 'resource;' LIMIT 1",
                (map_id,)).fetchone():
            return False  # one chunk at a time waits for the resource
        if chunksize:
            n = chunksize
        else:
            per_item = smoothed / size if smoothed > 0 else None
            size, smoothed = C.next_size(size, smoothed)
            n = C.tail_size(size, remaining, self.workers_of(owner), per_item)
        n = min(n, remaining, self.byte_bound(map_id, cursor))
        self.add_chunk(map_id, [[cursor, cursor + n]], first=True)
        self.sql("UPDATE nbq_map SET cursor = ?, carving = ?, size = ?, smoothed = ? "
                 "WHERE id = ?", (cursor + n, int(cursor + n < total), size, smoothed, map_id))
        return True

    def workers_of(self, owner: str) -> int:
        row = self.sql("SELECT workers FROM nbq_dispatcher WHERE owner = ?", (owner,)).fetchone()
        return int(row[0]) if row and row[0] else 1

    def byte_bound(self, map_id: str, start: int) -> int:
        """How many items from ``start`` make about ``CHUNK_BYTES`` of arguments (as the
        block holding ``start`` has them)."""
        row = self.sql("SELECT n, length(args) FROM nbq_map_args WHERE map = ? AND start <= ? "
                       "ORDER BY start DESC LIMIT 1", (map_id, start)).fetchone()
        if row is None or not row[1]:
            return C.CHUNK_BYTES
        return max(1, C.CHUNK_BYTES * int(row[0]) // int(row[1]))

    def add_chunk(self, map_id: str, ranges: list[list[int]], *, first: bool,
                  state: str = J.READY, not_before: float | None = None,
                  reason: str = "") -> str:
        """A new chunk of a map's items (``[start, stop)`` runs), in line where the map is."""
        (n,) = self.sql("UPDATE nbq_map SET chunks = chunks + 1 WHERE id = ? RETURNING chunks",
                        (map_id,)).fetchone()
        chunk = C.chunk_id(map_id, n - 1)
        name, fn, options, priority, seq = self.sql(
            "SELECT j.name, j.fn, j.options, j.priority, m.seq FROM nbq_job j "
            "JOIN nbq_map m ON m.id = j.id WHERE j.id = ?", (map_id,)).fetchone()
        self.sql("INSERT INTO nbq_job (id, seq, name, kind, state, blocker, reason, priority, "
                 "not_before, fn, args, options, parent, position, created) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (chunk, seq, name, J.CHUNK, state,
                  J.BLOCK_TIME if state == J.WAITING else None, reason, priority, not_before,
                  fn, C.encode_spec(ranges, first), options, map_id, ranges[0][0], self.now))
        return chunk

    def chunk_reruns(self, map_id: str) -> None:
        """The map's items to run again (``rerun``) go into chunks, ``RERUN_CHUNK`` at most each."""
        ids = [i for i, in self.sql("SELECT idx FROM nbq_map_item WHERE map = ? AND "
                                    "state = 'rerun' ORDER BY idx", (map_id,))]
        if not ids:
            return
        self.sql("UPDATE nbq_map_item SET state = 'queued' WHERE map = ? AND state = 'rerun'",
                 (map_id,))
        for start in range(0, len(ids), C.RERUN_CHUNK):
            self.add_chunk(map_id, C.runs(ids[start:start + C.RERUN_CHUNK]), first=False)

    # -- a chunk handed to a worker ------------------------------------------------------------

    def chunk_args(self, map_id: str, spec: bytes) -> bytes:
        """What a worker gets for a chunk (``chunkrun.execute_chunk``): the argument blocks
        it needs, which items of them it runs in order, which positions it skips (items
        handled on their own meanwhile: cancelled, run apart), whether each result is
        pickled apart (a chunk that is not a first run: each item's result is stored
        apart). ``NoSuchJob`` if a block is gone."""
        ranges, first = C.decode_spec(spec)
        rows = self.item_states(map_id, ranges)
        blobs: list[bytes] = []
        where: dict[int, int] = {}
        picks: list[tuple[int, int, int]] = []
        for start, stop in ranges:
            for block, n, args in self.blocks(map_id, start, stop):
                if block not in where:
                    where[block] = len(blobs)
                    blobs.append(args)
                picks.append((where[block], max(start, block) - block,
                              min(stop, block + n) - block))
        if first:
            skip = sorted(idx - ranges[0][0] for idx in rows)
        else:
            skip = [pos for pos, idx in enumerate(C.spec_items(ranges))
                    if rows.get(idx) != "queued"]
        return pickle.dumps((blobs, picks, skip, not first), protocol=pickle.HIGHEST_PROTOCOL)

    def blocks(self, map_id: str, start: int, stop: int) -> list[tuple[int, int, bytes]]:
        """The argument blocks holding items ``[start, stop)``, in order."""
        head = self.sql("SELECT start, n, args FROM nbq_map_args WHERE map = ? AND start <= ? "
                        "ORDER BY start DESC LIMIT 1", (map_id, start)).fetchone()
        out = [] if head is None or head[0] + head[1] <= start else [tuple(head)]
        out += [tuple(r) for r in self.sql(
            "SELECT start, n, args FROM nbq_map_args WHERE map = ? AND start > ? AND start < ? "
            "ORDER BY start", (map_id, start, stop))]
        if sum(min(stop, s + n) - max(start, s) for s, n, _ in out) != stop - start:
            raise NoSuchJob(f"the arguments of items {start} to {stop - 1} of map {map_id} are "
                            f"no longer in queue {self.store.path}")
        return out

    def item_states(self, map_id: str, ranges: list[list[int]]) -> dict[int, str]:
        """idx -> state of the items in these runs that have a row of their own."""
        out: dict[int, str] = {}
        for start, stop in ranges:
            out.update(self.sql("SELECT idx, state FROM nbq_map_item WHERE map = ? AND "
                                "idx >= ? AND idx < ?", (map_id, start, stop)).fetchall())
        return out

    # -- settling a chunk ---------------------------------------------------------------------

    def settle_chunk(self, outcome: Outcome, cancel_requested: bool) -> None:
        """Apply a chunk's outcome (already fenced: its owner still holds this claim)."""
        kind = outcome.kind
        if kind == J.OutcomeKind.RELEASED:
            self.put_back(outcome.id)  # type: ignore[attr-defined]
        elif kind == J.OutcomeKind.DIED and not cancel_requested:
            ranges, first = C.decode_spec(self.row(outcome.id, "args")[0])  # type: ignore[attr-defined]
            if C.spec_size(ranges) > 1:
                self.split_chunk(outcome.id, ranges, first)
            else:
                how = outcome.error.exc_value if outcome.error is not None else ""
                self.put_back(outcome.id, death=True,  # type: ignore[attr-defined]
                              cause=f"its worker process died{how and f' ({how})'}")
        elif kind == J.OutcomeKind.CANCELLED or (cancel_requested and kind != J.OutcomeKind.DONE):
            self.end(outcome.id, J.CANCELLED, "cancelled while running")  # type: ignore[attr-defined]
        elif kind == J.OutcomeKind.DONE:
            self.chunk_done(outcome)
        else:  # failed as a whole: a timeout, a lost dask task, an outcome not committed
            error = outcome.error or J.RemoteError("RuntimeError", "unknown failure")
            map_id, ranges, first = self.chunk_spec(outcome.id)
            self.items_failed(map_id, ranges, first, error, retryable=outcome.retryable)
            self.finish_chunk(outcome.id, map_id, outcome.log)

    def chunk_spec(self, chunk: str) -> tuple[str, list[list[int]], bool]:
        parent, spec = self.row(chunk, "parent, args")  # type: ignore[attr-defined]
        ranges, first = C.decode_spec(spec)
        return parent, ranges, first

    def split_chunk(self, chunk: str, ranges: list[list[int]], first: bool) -> None:
        """A chunk whose worker died runs again as two halves (no death counted): a crash
        in one item ends up in a chunk of its own."""
        map_id = self.row(chunk, "parent")[0]  # type: ignore[attr-defined]
        items = C.spec_items(ranges)
        half = len(items) // 2
        self.release(chunk)  # type: ignore[attr-defined]
        self.sql("DELETE FROM nbq_log WHERE job = ?", (chunk,))
        self.sql("DELETE FROM nbq_job WHERE id = ?", (chunk,))
        for part in (items[:half], items[half:]):
            self.add_chunk(map_id, C.runs(part), first=first)

    def chunk_done(self, outcome: Outcome) -> None:
        """A chunk ran: each item's result or exception, committed together."""
        assert outcome.result is not None
        took, results, errors = pickle.loads(outcome.result)  # plain data: see chunkrun
        map_id, ranges, first = self.chunk_spec(outcome.id)
        rows = self.item_states(map_id, ranges)
        failures: list[tuple[int, J.RemoteError, int, int]] = []
        if first:
            start, stop = ranges[0]
            self.sql("INSERT INTO nbq_map_out VALUES (?, ?, ?, ?)",
                     (map_id, start, stop - start, results))
            failures = [(start + pos, J.RemoteError(*error), 0, 0)
                        for pos, error in errors.items() if start + pos not in rows]
            done = stop - start - len(rows) - len(failures)
            self.note_duration(map_id, stop - start, took)
        else:
            live = self.live_items(map_id, ranges)
            done_rows = []
            for pos, idx in enumerate(C.spec_items(ranges)):
                if idx not in live:
                    continue
                if pos in errors:
                    failures.append((idx, J.RemoteError(*errors[pos]), *live[idx]))
                else:
                    done_rows.append((results[pos], map_id, idx))
            self.many("UPDATE nbq_map_item SET state = 'done', result = ?, error = NULL, "
                      "attempt = attempt + 1 WHERE map = ? AND idx = ?", done_rows)
            done = len(done_rows)
        self.sql("UPDATE nbq_map SET done = done + ? WHERE id = ?", (done, map_id))
        self.fail_items(map_id, failures, retryable=True)
        self.finish_chunk(outcome.id, map_id, outcome.log)

    def note_duration(self, map_id: str, n: int, took: float) -> None:
        """Automatic chunk sizes: a first run of ``n`` items took ``took`` seconds."""
        size, smoothed = self.sql("SELECT size, smoothed FROM nbq_map WHERE id = ?",
                                  (map_id,)).fetchone()
        self.sql("UPDATE nbq_map SET smoothed = ? WHERE id = ? AND chunksize IS NULL",
                 (C.completed(size, smoothed, n, took), map_id))

    def live_items(self, map_id: str, ranges: list[list[int]]) -> dict[int, tuple[int, int]]:
        """idx -> (attempt, base) of the items in these runs whose row says they run."""
        out: dict[int, tuple[int, int]] = {}
        for start, stop in ranges:
            out.update((idx, (attempt, base)) for idx, attempt, base in self.sql(
                "SELECT idx, attempt, base FROM nbq_map_item WHERE map = ? AND idx >= ? AND "
                "idx < ? AND state = 'queued'", (map_id, start, stop)))
        return out

    def items_failed(self, map_id: str, ranges: list[list[int]], first: bool,
                     error: J.RemoteError, *, retryable: bool) -> None:
        """Every item of a chunk that failed as a whole (or was poisoned) fails alike."""
        if first:
            rows = self.item_states(map_id, ranges)
            start, stop = ranges[0]
            failures = [(idx, error, 0, 0) for idx in range(start, stop) if idx not in rows]
        else:
            failures = [(idx, error, *seen) for idx, seen in
                        self.live_items(map_id, ranges).items()]
        self.fail_items(map_id, failures, retryable=retryable)

    def fail_items(self, map_id: str, failures: Sequence[tuple[int, J.RemoteError, int, int]],
                   *, retryable: bool) -> None:
        """Items failed (idx, error, attempts so far, base): each retried after its backoff
        while it has retries left (those failing alike wait in one chunk), else failed."""
        if not failures:
            return
        options = self.options(self.row(map_id, "options")[0])  # type: ignore[attr-defined]
        later: dict[tuple[float, str], list[int]] = defaultdict(list)
        rows, failed = [], 0
        for idx, error, attempt, base in failures:
            attempt += 1
            text = self.error_json(map_id, error)
            if retryable and attempt - base <= options.retries:
                later[(J.retry_delay_for(attempt - base, options.retry_delay),
                       error.exc_type)].append(idx)
                rows.append((map_id, idx, "queued", attempt, base, text))
            else:
                rows.append((map_id, idx, J.FAILED, attempt, base, text))
                failed += 1
        self.many("INSERT INTO nbq_map_item (map, idx, state, attempt, base, error) "
                  "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (map, idx) DO UPDATE SET "
                  "state = excluded.state, attempt = excluded.attempt, base = excluded.base, "
                  "result = NULL, error = excluded.error", rows)
        if failed:
            self.sql("UPDATE nbq_map SET failed = failed + ? WHERE id = ?", (failed, map_id))
        size = max(self.sql("SELECT COALESCE(chunksize, size) FROM nbq_map WHERE id = ?",
                            (map_id,)).fetchone()[0], 1)
        for (delay, exc_type), ids in later.items():
            for start in range(0, len(ids), size):
                part = ids[start:start + size]
                self.add_chunk(map_id, C.runs(part), first=False, state=J.WAITING,
                               not_before=self.now + delay,
                               reason=f"retry of {len(part)} item{'s' if len(part) > 1 else ''} "
                                      f"after {exc_type}")

    def error_json(self, map_id: str, error: J.RemoteError) -> str:
        """An item's error as stored: its traceback once per map, named by its hash."""
        tb = ""
        if error.traceback:
            tb = hashlib.blake2b(error.traceback.encode(), digest_size=12).hexdigest()
            self.sql("INSERT OR IGNORE INTO nbq_map_tb VALUES (?, ?, ?)",
                     (map_id, tb, error.traceback))
        return json.dumps({"exc_type": error.exc_type, "exc_value": error.exc_value[:2000],
                           "tb": tb})

    def items_cancelled(self, map_id: str, ranges: list[list[int]], first: bool) -> None:
        if first:
            rows = self.item_states(map_id, ranges)
            start, stop = ranges[0]
            ids = [idx for idx in range(start, stop) if idx not in rows]
        else:
            ids = list(self.live_items(map_id, ranges))
        self.many("INSERT INTO nbq_map_item (map, idx, state) VALUES (?, ?, 'cancelled') "
                  "ON CONFLICT (map, idx) DO UPDATE SET state = 'cancelled'",
                  [(map_id, idx) for idx in ids])
        self.sql("UPDATE nbq_map SET cancelled = cancelled + ? WHERE id = ?", (len(ids), map_id))

    def chunk_ended(self, chunk: str, state: str, columns: dict[str, Any]) -> None:
        """A chunk ended otherwise than by its outcome: cancelled (its map was), failed (it
        was poisoned, or its inputs are gone): its items end so, no retry."""
        map_id, ranges, first = self.chunk_spec(chunk)
        if state == J.CANCELLED:
            self.items_cancelled(map_id, ranges, first)
        else:
            error = (J.RemoteError.from_dict(json.loads(columns["error"]))
                     if columns.get("error") else J.RemoteError("JobFailed", f"chunk {state}"))
            self.items_failed(map_id, ranges, first, error, retryable=False)
        self.finish_chunk(chunk, map_id, None)

    def finish_chunk(self, chunk: str, map_id: str, log: str | None) -> None:
        """The chunk's row goes; its output is kept in the map's log; the map shows its
        counts, and ends if its last item has."""
        self.release(chunk)  # type: ignore[attr-defined]
        if log:
            self.set_log(map_id, J.cap_log((self.log_of(map_id)[0] or "") + log))  # type: ignore[attr-defined]
        self.sql("DELETE FROM nbq_log WHERE job = ?", (chunk,))
        self.sql("DELETE FROM nbq_job WHERE id = ?", (chunk,))
        self.show_map(map_id)

    # -- the map's counts and ending -------------------------------------------------------------

    def show_map(self, map_id: str) -> None:
        """Write the map's progress and reason from its counts; end it once every item did."""
        total, done, failed, cancelled = self.sql(
            "SELECT total, done, failed, cancelled FROM nbq_map WHERE id = ?",
            (map_id,)).fetchone()
        state = self.row(map_id, "state")[0]  # type: ignore[attr-defined]
        progress = json.dumps(C.map_progress(done, failed, cancelled, total))
        if state in J.ENDED or state == J.WAITING:  # an ended map keeps its reason
            self.sql("UPDATE nbq_job SET progress = ? WHERE id = ?", (progress, map_id))
            return
        if state == J.RUNNING and done + failed + cancelled >= total:
            self.sql("UPDATE nbq_job SET progress = ? WHERE id = ?", (progress, map_id))
            self.end_map(map_id, total, done, failed, cancelled)
            return
        self.sql("UPDATE nbq_job SET progress = ?, reason = ? WHERE id = ?",
                 (progress, C.map_reason(done, failed, cancelled, total), map_id))

    def end_map(self, map_id: str, total: int, done: int, failed: int, cancelled: int) -> None:
        if failed:
            idx, error = self.sql("SELECT idx, error FROM nbq_map_item WHERE map = ? AND "
                                  "state = 'failed' ORDER BY idx LIMIT 1", (map_id,)).fetchone()
            stored = self.store.item_error(map_id, error)
            reason = (f"{failed:,} of {total:,} items failed; first: item {idx}: "
                      f"{stored.exc_type}: {stored.exc_value}")
            first = J.RemoteError(stored.exc_type, f"item {idx}: {stored.exc_value}",
                                  stored.traceback)
            self.end(map_id, J.FAILED, reason[:300], error=json.dumps(first.to_dict()))  # type: ignore[attr-defined]
        elif cancelled:
            self.end(map_id, J.CANCELLED,  # type: ignore[attr-defined]
                     f"{cancelled:,} of {total:,} items cancelled")
        else:
            self.end(map_id, J.DONE, f"{total:,} items done")  # type: ignore[attr-defined]

    def stop_map(self, map_id: str) -> None:
        """A map ends failed or cancelled (cancelled by hand, or a job it needs failed):
        its items not in a chunk yet are cancelled with it, its chunks waiting to run are
        cancelled, and those running are asked to stop."""
        total, cursor, stopped = self.sql("SELECT total, cursor, stopped FROM nbq_map "
                                          "WHERE id = ?", (map_id,)).fetchone()
        left = 0 if stopped else total - cursor
        waiting = self.sql("SELECT COUNT(*) FROM nbq_map_item WHERE map = ? AND state = 'rerun'",
                           (map_id,)).fetchone()[0]
        self.sql("UPDATE nbq_map_item SET state = 'cancelled' WHERE map = ? AND state = 'rerun'",
                 (map_id,))
        self.sql("UPDATE nbq_map SET carving = 0, stopped = 1, cancelled = cancelled + ? "
                 "WHERE id = ?", (left + waiting, map_id))
        for chunk, state in self.sql("SELECT id, state FROM nbq_job INDEXED BY nbq_job_parent "
                                     "WHERE parent = ? AND kind = 'chunk'", (map_id,)).fetchall():
            if state == J.RUNNING:
                self.sql("UPDATE nbq_job SET cancel_requested = 1, reason = 'cancelling' "
                         "WHERE id = ?", (chunk,))
            else:
                self.chunk_ended(chunk, J.CANCELLED, {})

    # -- running items again, cancelling one ---------------------------------------------------

    def rerun_map(self, map_id: str, *, reason: str, needs: Sequence[str] | None) -> None:
        """Run a map's failed and cancelled items again (``needs`` given: it was submitted
        again, and attaches; None: a retry by hand, which a map that did not end failed or
        cancelled refuses). An ended map runs again, as a job that is retried does."""
        state = self.row(map_id, "state")[0]  # type: ignore[attr-defined]
        if state in (J.FAILED, J.CANCELLED):
            if not self.restart_map(map_id, state, needs):
                return
        elif needs is None:
            raise JobStateError(f"map {map_id} is {state}; only a failed or cancelled map can "
                                "be retried (a failed item alone: hs[i].retry())")
        self.rerun_items(map_id)

    def restart_map(self, map_id: str, state: str, needs: Sequence[str] | None) -> bool:
        """An ended map's row runs again (as ``Tx.rerun`` does for a job): False if a job it
        needs did not succeed (submitted again, it stays as it ended; a retry by hand,
        ``needs`` None, raises)."""
        by_hand = needs is None
        if needs is None:
            stored = self.row(map_id, "needs")[0]  # type: ignore[attr-defined]
            needs = json.loads(stored) if stored else []
        waiting = []
        for need in dict.fromkeys(needs):
            need_state = self.row(need, "state")[0]  # type: ignore[attr-defined]
            if need_state in J.ENDED and need_state != J.DONE:
                if not by_hand:
                    return False
                raise JobStateError(f"map {map_id} needs job {need}, which is {need_state}; "
                                    f"retry job {need} first")
            if need_state != J.DONE:
                waiting.append(need)
        self.sql("UPDATE nbq_job SET error = NULL, ended = NULL, cancel_requested = 0, "
                 "not_before = NULL, pending = ? WHERE id = ?", (len(waiting), map_id))
        for need in waiting:
            self.sql("INSERT OR IGNORE INTO nbq_need VALUES (?, ?, 0)", (need, map_id))
        if waiting:
            self.move(map_id, state, J.WAITING, blocker=J.BLOCK_NEEDS,  # type: ignore[attr-defined]
                      reason="", wait=self.needs_wait(map_id))  # type: ignore[attr-defined]
        else:
            self.move(map_id, state, J.READY, blocker=None, reason="")  # type: ignore[attr-defined]
        return True

    def rerun_items(self, map_id: str, ids: Sequence[int] | None = None) -> None:
        """Items that failed or were cancelled (all, or ``ids``) run again: in chunks now if
        the map runs, else once it starts (``start_map``)."""
        if ids is None:
            counts = dict(self.sql("SELECT state, COUNT(*) FROM nbq_map_item WHERE map = ? AND "
                                   "state IN ('failed', 'cancelled') GROUP BY state",
                                   (map_id,)).fetchall())
            self.sql("UPDATE nbq_map_item SET state = 'rerun', base = attempt, error = NULL "
                     "WHERE map = ? AND state IN ('failed', 'cancelled')", (map_id,))
            total, cursor, stopped = self.sql("SELECT total, cursor, stopped FROM nbq_map "
                                              "WHERE id = ?", (map_id,)).fetchone()
            left = total - cursor if stopped else 0
            self.sql("UPDATE nbq_map SET failed = failed - ?, cancelled = cancelled - ?, "
                     "stopped = 0 WHERE id = ?",
                     (counts.get(J.FAILED, 0), counts.get(J.CANCELLED, 0) + left, map_id))
        else:
            for idx in ids:
                self.rerun_item(map_id, idx)
        if self.row(map_id, "state")[0] == J.RUNNING:  # type: ignore[attr-defined]
            self.sql("UPDATE nbq_map SET carving = (cursor < total AND stopped = 0) WHERE id = ?",
                     (map_id,))
            self.chunk_reruns(map_id)
        self.show_map(map_id)

    def rerun_item(self, map_id: str, idx: int) -> None:
        state = self.store.item_state_in(self.sql, map_id, idx)
        if state not in (J.FAILED, J.CANCELLED):
            raise JobStateError(f"item {idx} of map {map_id} is {state}; only a failed or "
                                "cancelled item can be retried")
        counter = "failed" if state == J.FAILED else "cancelled"
        self.sql("INSERT INTO nbq_map_item (map, idx, state) VALUES (?, ?, 'rerun') "
                 "ON CONFLICT (map, idx) DO UPDATE SET state = 'rerun', base = attempt, "
                 "error = NULL", (map_id, idx))
        self.sql(f"UPDATE nbq_map SET {counter} = {counter} - 1 WHERE id = ?", (map_id,))

    def retry_item(self, map_id: str, idx: int) -> None:
        """Run one failed or cancelled item again (its map runs again if it had ended)."""
        state = self.row(map_id, "state")[0]  # type: ignore[attr-defined]
        self.rerun_item(map_id, idx)
        if state in (J.FAILED, J.CANCELLED):
            self.restart_map(map_id, state, None)
        self.rerun_items(map_id, ())

    def cancel_item(self, map_id: str, idx: int) -> str:
        """Cancel one item: it does not run (one in a running chunk runs, and its outcome is
        dropped); returns its state before (an ended item is left as it is)."""
        state: str = self.store.item_state_in(self.sql, map_id, idx)
        if state in J.ENDED:
            return state
        self.sql("INSERT INTO nbq_map_item (map, idx, state) VALUES (?, ?, 'cancelled') "
                 "ON CONFLICT (map, idx) DO UPDATE SET state = 'cancelled'", (map_id, idx))
        self.sql("UPDATE nbq_map SET cancelled = cancelled + 1 WHERE id = ?", (map_id,))
        self.show_map(map_id)
        return state
