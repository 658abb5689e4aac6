"""Reading jobs' results in bulk: state, error and result of many jobs, 500 per query.

``Store`` inherits this (``ResultReads``), as it does the listing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import job as J
from .blobs import load_blob

if TYPE_CHECKING:
    from pathlib import Path

BATCH = 500  # ids per query: SQLite bounds the parameters of a statement


class ResultReads:
    """``results``: what ``result()`` needs of each job, in as few queries as possible."""

    path: Path

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:  # Store's
        raise NotImplementedError

    def results(self, ids: Sequence[str]) -> dict[str, J.ResultRecord]:
        """Job id -> its ``ResultRecord``, for the ids that are in the queue (a forgotten
        job is missing). Each query reads 500 rows by their primary key; a result stored
        apart (32 KiB and more) is read from its value file."""
        out: dict[str, J.ResultRecord] = {}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            rows = self._rows("SELECT id, state, name, reason, error, result, result_ref "
                              f"FROM nbq_job WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            for job_id, state, name, reason, error, result, ref in rows:
                ended = state in J.ENDED
                out[job_id] = J.ResultRecord(
                    job_id, state, name, reason or "",
                    J.RemoteError.from_dict(json.loads(error)) if error and ended else None,
                    load_blob(self, result, ref) if state == J.DONE else None)  # type: ignore[arg-type]
        return out
