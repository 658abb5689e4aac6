"""The store's side of the output queue: registered outputs, the outbox, cursors.

Every job that ends while an output is registered gets an outbox row, written by
``Tx.end`` in the transaction that ends it (a snapshot of the job as it ended). Each
output keeps a cursor: the last outbox ``seq`` it holds. Rows every output has passed
are deleted. ``seq`` comes from ``AUTOINCREMENT``, so it is never reused, even after
the outbox was emptied: an output file can carry it as the mark of what it holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .. import job as J
from .blobs import load_blob

if TYPE_CHECKING:
    from . import Store

_OUTBOX_COLUMNS = ("seq, job, name, kind, state, reason, error, attempt, parent, created, "
                   "started, ended, event, at")
_LAST_SEQ = "COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'nbq_outbox'), 0)"

# What an outbox row is: an ending (the ``event`` column is NULL) or one of these events.
ENDED = "ended"  # a job ended (done, failed, cancelled, rejected)
REVIEW = "review"  # a gate entered review: a person is asked to decide
REMINDER = "reminder"  # a gate still waits (remind_every), or its kept deadline passed
DRAINED = "drained"  # nothing ready, running or due (once per drain)


def register(store: Store, name: str, kind: str, spec: dict[str, Any],
             events: Sequence[str] | None = (ENDED,)) -> bool:
    """Record an output (idempotent; a new one starts after the last ending so far) and
    the events it receives (None: all; the outbox records an event only while some
    output receives it). Returns whether it was new."""
    wanted = "*" if events is None else ",".join(events)
    with store._txn() as sql:
        exists = sql("SELECT 1 FROM nbq_output WHERE name = ?", (name,)).fetchone()
        if exists:
            sql("UPDATE nbq_output SET spec = ?, events = ? WHERE name = ?",
                (json.dumps(spec), wanted, name))
            return False
        sql(f"INSERT INTO nbq_output (name, kind, spec, cursor, created, events) "
            f"VALUES (?, ?, ?, {_LAST_SEQ}, ?, ?)",
            (name, kind, json.dumps(spec), time.time(), wanted))
        return True


def unregister(store: Store, name: str) -> bool:
    """Forget an output; returns whether it was registered."""
    with store._txn() as sql:
        gone: bool = sql("DELETE FROM nbq_output WHERE name = ?", (name,)).rowcount > 0
        _prune(sql)
        return gone


def registered(store: Store) -> list[dict[str, Any]]:
    """Every registered output: name, kind, spec, cursor, how many endings it lacks, error."""
    last = store._one(f"SELECT {_LAST_SEQ}")
    rows = store._rows("SELECT name, kind, spec, cursor, created, delivered, error, failures, "
                       "retry_at FROM nbq_output ORDER BY created, name")
    return [{"name": name, "kind": kind, "spec": json.loads(spec), "cursor": cursor,
             "created": created, "delivered": delivered, "error": error,
             "failures": failures, "retry_at": retry_at,
             "behind": store._one("SELECT COUNT(*) FROM nbq_outbox WHERE seq > ?", (cursor,))
             if cursor < last else 0}
            for name, kind, spec, cursor, created, delivered, error, failures, retry_at in rows]


def queue_id(store: Store) -> str:
    """The queue's id: random, made with the queue (an older queue's at its upgrade)."""
    return str(store._one("SELECT value FROM nbq_meta WHERE key = 'id'") or "")


def behind(store: Store) -> bool:
    """Whether some output lacks an ending (a cheap read, polled by dispatchers)."""
    return store._one("SELECT 1 FROM nbq_output WHERE cursor < " + _LAST_SEQ + " LIMIT 1") \
        is not None


def pending(store: Store, name: str, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """An output's cursor and the next ``limit`` endings after it, in order."""
    cursor = store._one("SELECT cursor FROM nbq_output WHERE name = ?", (name,))
    if cursor is None:
        return 0, []
    rows = store._rows(f"SELECT {_OUTBOX_COLUMNS} FROM nbq_outbox WHERE seq > ? ORDER BY seq "
                       "LIMIT ?", (cursor, limit))
    return int(cursor), [_ending(row) for row in rows]


def advance(store: Store, name: str, seq: int) -> None:
    """An output holds everything up to ``seq`` (durably): move its cursor, prune."""
    with store._txn() as sql:
        sql("UPDATE nbq_output SET cursor = MAX(cursor, ?), delivered = ?, error = NULL, "
            "failures = 0, retry_at = NULL WHERE name = ?", (seq, time.time(), name))
        _prune(sql)


def failed(store: Store, name: str, error: str, backoff: float = 0.0) -> None:
    """Note why an output could not be written; it is tried again later, not before
    ``backoff`` seconds from now (``failures`` counts the failures in a row)."""
    now = time.time()
    with store._txn() as sql:
        sql("UPDATE nbq_output SET error = ?, failures = failures + 1, retry_at = ? "
            "WHERE name = ?", (error[:2000], now + backoff if backoff else None, name))


def _prune(sql: Any) -> None:
    low = sql("SELECT MIN(cursor) FROM nbq_output").fetchone()[0]
    if low is None:
        sql("DELETE FROM nbq_outbox")
    else:
        sql("DELETE FROM nbq_outbox WHERE seq <= ?", (low,))


def ended_jobs(store: Store) -> Iterator[dict[str, Any]]:
    """Every ended job as an ending (``seq`` None), in the order they ended (one read)."""
    states = tuple(sorted(J.ENDED))
    cursor = store._execute(
        "SELECT NULL, id, name, kind, state, reason, error, attempt, parent, created, "
        f"started, ended, NULL, ended FROM nbq_job WHERE state IN ({','.join('?' * len(states))}) "
        "ORDER BY ended, seq", states)
    for row in cursor:
        yield _ending(row)


def result_and_payload(store: Store, job_id: str) -> tuple[bytes | None, bytes | None]:
    """A job's result blob and (for a gate) its payload; (None, None) once forgotten."""
    row = store._rows("SELECT result, result_ref, payload FROM nbq_job WHERE id = ?", (job_id,))
    if not row:
        return None, None
    inline, ref, payload = row[0]
    try:
        blob = load_blob(store, inline, ref)
    except Exception:  # a large result lost from disk: report it without the value
        blob = None
    return blob, payload


def _ending(row: Sequence[Any]) -> dict[str, Any]:
    (seq, job, name, kind, state, reason, error, attempt, parent, created, started,
     ended, event, at) = row
    return {"seq": seq, "event": event or ENDED, "id": job or None, "name": name,
            "kind": kind, "state": state or None, "reason": reason or "",
            "error": json.loads(error) if error else None, "attempt": attempt,
            "parent": parent, "created": created, "started": started, "ended": ended,
            "at": at if at is not None else ended}
