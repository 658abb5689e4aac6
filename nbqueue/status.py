"""The queue's status as one dict: what ``q.status()`` returns and ``nbqueue status --json`` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import job as J

if TYPE_CHECKING:
    from .queue import Queue


def queue_status(queue: Queue, *, limit: int = 50) -> dict[str, Any]:
    store = queue.store
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
                entry["this_process"] = True
    return {
        "path": str(queue.path),
        "format": store.format,
        "counts": {state: counts.get(state, 0) for state in J.STATES},
        "running": running,
        "reviews": reviews,
        "resources": store.resources(),
        "dispatchers": [d for d in dispatchers if d["alive"] or d["error"]],
    }


def _brief(record: J.JobRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "state": record.state,
            "reason": record.reason, "started": record.started, "attempt": record.attempt,
            "progress": record.progress}
