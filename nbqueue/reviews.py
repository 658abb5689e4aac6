"""The gates of a queue as reviewers see them, read: what the panel, the review page, the
CLI and other front ends show (``Review`` records, ``nbqueue.reviewing``).

The notifiers, below the api, read a gate the same way (``outputs.delivery._review``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from . import job as J
from .display import payload_bundle
from .errors import InvalidArgument
from .reviewing import Review, review_from
from .store import gates

if TYPE_CHECKING:
    from .queue import Queue
    from .store import Store


def pending_reviews(queue: Queue | Store) -> list[Review]:
    """The gates waiting for a decision in ``queue`` (a ``Queue`` or its store), oldest
    first."""
    store = _store_of(queue)
    records = store.list_jobs(state=J.REVIEW)
    return _reviews(store, [r for r in records if r.kind == J.GATE])


def review_of(queue: Queue | Store, gate_id: Any) -> Review:
    """One gate of ``queue`` (a ``Queue`` or its store; ``gate_id`` an id or a handle) as a
    reviewer sees it, in whatever state it is (``NoSuchJob`` if there is none;
    ``InvalidArgument`` for a job that is not a gate)."""
    store = _store_of(queue)
    record = store.get(str(getattr(gate_id, "id", gate_id)))
    if record.kind != J.GATE:
        raise InvalidArgument(f"job {record.id} ({record.name}) is a {record.kind} job, not a "
                              "review gate")
    return _reviews(store, [record])[0]


def _store_of(queue: Queue | Store) -> Store:
    return cast("Store", getattr(queue, "_store", queue))


def _reviews(store: Store, records: Sequence[J.JobRecord]) -> list[Review]:
    rows = gates.read(store, [r.id for r in records])
    return [review_from(r, rows.get(r.id), payload_bundle(store.payload(r.id)))
            for r in records]
