"""The queue's status as one dict: what ``q.status()`` returns and ``nbqueue status --json`` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import job as J
from .service import find_service, running_jobs

if TYPE_CHECKING:
    from .queue import Queue


def queue_status(queue: Queue, *, limit: int = 50) -> dict[str, Any]:
    store = queue._store
    counts = store.counts()
    running = [_brief(r) for r in store.list_jobs(state=J.RUNNING, limit=limit)]
    reviews = [_brief(r) for r in store.list_jobs(state=J.REVIEW, limit=limit)]
    dispatchers = store.dispatchers()
    local = queue.dispatcher
    if local is not None:
        for entry in dispatchers:
            if entry["owner"] == local.owner:
                entry["alive"] = local.alive
                entry["error"] = local.error or entry["error"]
                # an error of the store it is waiting out (a full disk): docs/concepts.md
                entry["store_error"] = local.store_error
                entry["this_process"] = True
    return {
        "path": str(queue.path),
        "format": store.format,
        "counts": {state: counts.get(state, 0) for state in J.STATES},
        "running": running,
        "reviews": reviews,
        "resources": store.resources(),
        "schedules": [r.to_dict() for r in store.schedule_records()],
        "paused": queue.paused(),
        "dispatchers": [d for d in dispatchers if d["alive"] or d["error"]],
        "service": _service(queue),
    }


def _service(queue: Queue) -> dict[str, Any] | None:
    """The directory's service (``nbqueue.service``): its record, whether it is alive and
    how many jobs it runs; a record left by one that died has ``alive`` false."""
    record = find_service(queue.path)
    if record is None:
        return None
    return {**record.to_dict(), "running": running_jobs(queue._store, record)}


def _brief(record: J.JobRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "state": record.state,
            "reason": record.note, "started": record.started, "attempt": record.attempt,
            "progress": record.progress}
