"""What the review page reads and decides, through the queue API.

A ``ReviewDesk`` knows which queues the page shows: the directories it was given
(``NbqueueReviews.queues``, or ``nbqueue serve PATH`` naming a queue) and the queues
recorded in the per-user registry (``registry.py``) that lie under one of its roots (the
Jupyter server's root directory, or ``nbqueue serve PATH`` naming a folder), as long as
they still exist. It opens each once, without a dispatcher (no kernel, no worker needed:
deciding a gate is one transaction in the directory), and polls its change counter so
that a page asking "anything new since version V?" costs one small read per queue.

Its methods block (SQLite): the servers run them on the desk's own thread
(``call``), never on their event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import job as J
from ..cellview import RESULT_REF_MIME, outputs_html
from ..display import bundle, bundle_html
from ..errors import InvalidAnswer, InvalidArgument, NbqueueError, NoSuchJob
from ..queue import Queue
from ..registry import is_queue_directory, known_queues
from ..reviewing import Review, parse_values
from ..reviews import pending_reviews, review_of
from . import render
from .render import QueueView

log = logging.getLogger(__name__)
T = TypeVar("T")
SOURCES_EVERY = 1.0  # seconds between looks at the registry and the configured paths


def queue_id(path: Path) -> str:
    """A short stable id of a queue directory, used in the page's requests.

    >>> queue_id(Path("/home/me/runs/q")) == queue_id(Path("/home/me/runs/q"))
    True
    """
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


@dataclass
class _Seen:
    changes: int
    reviews: list[Review]


class ReviewDesk:
    """The queues a review page shows, their pending reviews, and decisions on them.

    Parameters
    ----------
    roots : paths
        Show the registered queues under these folders.
    queues : paths
        Show these queue directories too (when they exist).
    """

    def __init__(self, *, roots: Iterable[str | Path] = (),
                 queues: Iterable[str | Path] = ()) -> None:
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.queues = [Path(q).expanduser().absolute() for q in queues]
        self._open: dict[Path, Queue] = {}
        self._seen: dict[Path, _Seen] = {}
        self._results: dict[str, str] = {}  # job id -> its outputs as HTML (see _with_result)
        self._paths: list[Path] = []
        self._paths_at = -SOURCES_EVERY
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nbqueue-review-page")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the desk's thread (all its reads and writes happen there)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        """Close the queues it opened and its thread."""
        self._pool.shutdown(wait=True)
        for q in self._open.values():
            q.close()
        self._open.clear()

    # -- which queues ---------------------------------------------------------------------

    def paths(self) -> list[Path]:
        """The queue directories shown: the given ones, then the registered ones under a
        root, oldest first; only those that hold a queue. Looked up at most once a second."""
        now = time.monotonic()
        if now - self._paths_at < SOURCES_EVERY:
            return self._paths
        found = [p for p in self.queues if is_queue_directory(p)]
        for p in known_queues():
            if p not in found and self._under_root(p):
                found.append(p)
        for gone in set(self._open) - set(found):  # deleted, or moved out of the registry
            self._open.pop(gone).close()
            self._seen.pop(gone, None)
        self._paths, self._paths_at = found, now
        return found

    def _under_root(self, path: Path) -> bool:
        real = path.resolve()
        return any(real == root or root in real.parents for root in self.roots)

    def _queue(self, path: Path) -> Queue:
        q = self._open.get(path)
        if q is None:
            q = self._open[path] = Queue(path, start=False)
        return q

    # -- reading ---------------------------------------------------------------------------

    def views(self, only: str | None = None) -> tuple[list[QueueView], str]:
        """Each shown queue's pending reviews (``only``: just the queue at that path, if
        shown), and a version that changes when and only when they do."""
        paths = self.paths()
        if only:
            wanted = Path(only).expanduser().absolute()
            paths = [p for p in paths if p == wanted] or paths
        views = [self._view(p) for p in paths]
        if self._results:  # keep the outputs of the reviews still shown only
            shown = {_outputs_of(r) for seen in self._seen.values() for r in seen.reviews}
            self._results = {k: v for k, v in self._results.items() if k in shown}
        return views, _version(views)

    def _view(self, path: Path) -> QueueView:
        try:
            q = self._queue(path)
            changes = q.changes()
            seen = self._seen.get(path)
            if seen is None or seen.changes != changes:
                reviews = [self._with_result(q, r) for r in pending_reviews(q)]
                seen = self._seen[path] = _Seen(changes, reviews)
            return QueueView(queue_id(path), path, seen.reviews)
        except (NbqueueError, OSError) as exc:  # unsafe, damaged, unreadable: say so
            log.warning("review page: cannot read queue %s: %s", path, exc)
            stale = self._open.pop(path, None)
            if stale is not None:
                stale.close()
            self._seen.pop(path, None)
            return QueueView(queue_id(path), path, error=str(exc).splitlines()[0])

    def _with_result(self, q: Queue, review: Review) -> Review:
        """A review whose payload stands for a job's outputs (``%%enqueue --review``)
        shows them once that job is done, as the panel does: its result is loaded (here,
        in the server) once and kept."""
        job_id = _outputs_of(review)
        if job_id is None:
            return review
        try:
            shown = self._results.get(job_id)
            if shown is None:
                job = q.job(job_id)
                if job.state != J.DONE:
                    return review
                value = job.result()
                html = (outputs_html(value) if isinstance(value, dict)
                        and hasattr(value, "dropped") else bundle_html(bundle(value)))
                shown = self._results[job_id] = html
        except Exception as exc:  # forgotten, or a result the server cannot load: the text
            log.info("review page: cannot show the outputs of gate %s: %s", review.id, exc)
            return review
        return dataclasses.replace(review, payload_bundle={
            **review.payload_bundle, "text/html": shown})

    def page(self, only: str | None = None) -> tuple[list[QueueView], str, float]:
        """What the page shows when it opens: views, version, the time they are of."""
        views, version = self.views(only)
        return views, version, time.time()

    def state(self, since: str | None = None, only: str | None = None) -> dict[str, Any]:
        """The page's JSON: the queues' headings and cards, or ``unchanged`` when the
        version is still ``since``."""
        views, version = self.views(only)
        now = time.time()
        if since == version:
            return {"version": version, "now": now, "unchanged": True}
        return render.state(views, version, now)

    # -- deciding --------------------------------------------------------------------------

    def decide(self, queue: str, gate: str, action: str, comment: str,
               values: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Approve (with the answers to its fields) or reject a gate of a shown queue.

        Returns an HTTP status and its JSON: 200; 400 with ``errors`` (field -> what is
        wrong) when answers do not validate; 404 for an unknown queue or gate; 409 when
        the gate is no longer in review; 503 when the store refused the write. Only a
        200 changed anything.
        """
        path = {queue_id(p): p for p in self.paths()}.get(queue)
        if path is None:
            return 404, {"message": "This queue is not shown here any more (deleted or moved); "
                                    "reload the page. Nothing was changed."}
        q = self._queue(path)
        try:
            review = review_of(q, gate)
        except (NoSuchJob, InvalidArgument) as exc:
            return 404, {"message": f"{exc}. Nothing was changed."}
        if review.state != J.REVIEW:
            verb = {J.DONE: "approved", J.REJECTED: "rejected"}.get(review.state, review.state)
            return 409, {"message": f"{review.title!r} was {verb} already. Nothing was "
                                    "changed."}
        try:
            if action == "approve":
                errors = field_errors(review, values)
                if errors:
                    return 400, {"errors": errors,
                                 "message": "Nothing was changed: see the fields marked."}
                q.approve(gate, comment=comment, values=dict(values))
                return 200, {"message": "Approved.", "state": J.DONE}
            q.reject(gate, comment=comment)
            return 200, {"message": "Rejected.", "state": J.REJECTED}
        except InvalidAnswer as exc:
            return 400, {"errors": {}, "message": f"{exc}"}
        except ValueError as exc:  # decided elsewhere since it was read
            return 409, {"message": str(exc)}
        except NbqueueError as exc:  # the store could not take it (locked, full): unchanged
            return 503, {"message": str(exc).splitlines()[0]}


def field_errors(review: Review, values: Mapping[str, Any]) -> dict[str, str]:
    """What is wrong with each answer (field name -> message; empty when all validate),
    with ``parse_values``'s own check, one field at a time."""
    errors = {}
    for f in review.fields:
        raw = values.get(f.name)
        if f.required and (raw is None or (isinstance(raw, str) and not raw.strip())):
            errors[f.name] = "needs a value"  # an empty box is no answer, also for a text
            continue
        try:
            parse_values([f], {} if raw is None else {f.name: raw})
        except InvalidAnswer as exc:
            errors[f.name] = str(exc).removeprefix(f"field {f.name!r}: ")
    for name in values:
        if name not in {f.name for f in review.fields}:
            errors[name] = "this gate does not ask for it"
    return errors


def _outputs_of(review: Review) -> str | None:
    """The job whose outputs the review's payload stands for (None: a payload of its own)."""
    ref = review.payload_bundle.get(RESULT_REF_MIME)
    try:
        return str(json.loads(ref)["job"]) if ref else None
    except (ValueError, KeyError, TypeError):
        return None


def _version(views: list[QueueView]) -> str:
    """A digest of what the page shows (the queues, each gate and its deadline state)."""
    h = hashlib.sha256()
    for v in views:
        h.update(f"{v.id}|{v.error}\n".encode())
        for r in v.reviews:
            h.update(f"{r.id}|{r.state}|{r.deadline!r}|{r.overdue}\n".encode())
    return h.hexdigest()[:16]
