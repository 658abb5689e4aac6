"""Reading a chunked map (a mixin of ``Store``): what its item handles show
(``mapjobs.MapView``), without a transaction. See ``store.maps`` for what the tables hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .. import chunking as C
from .. import job as J
from ..errors import NoSuchJob

_LIVE = ("queued", "rerun")  # an item row not ended: in a chunk, or to be put in one


class MapReading:
    """Mixin of ``Store``: what a map's item handles read (``mapjobs.MapView``)."""

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:  # Store's
        raise NotImplementedError

    def _execute(self, query: str, params: Sequence[Any] = ()) -> Any:  # Store's
        raise NotImplementedError

    def map_info(self, map_id: str) -> dict[str, Any] | None:
        """The map's chunking and counts with its job's state, or None if it is gone."""
        rows = self._rows("SELECT m.total, m.cursor, m.stopped, m.done, m.failed, m.cancelled, "
                          "m.chunksize, m.size, m.chunks, j.state, j.name FROM nbq_map m "
                          "JOIN nbq_job j ON j.id = m.id WHERE m.id = ?", (map_id,))
        if not rows:
            return None
        keys = ("total", "cursor", "stopped", "done", "failed", "cancelled", "chunksize", "size",
                "chunks", "state", "name")
        return dict(zip(keys, rows[0], strict=True))

    def map_range(self, map_id: str, index: int) -> tuple[int, int, bytes] | None:
        """The first run's results holding item ``index``: (start, n, pickled results)."""
        rows = self._rows("SELECT start, n, results FROM nbq_map_out WHERE map = ? AND "
                          "start <= ? ORDER BY start DESC LIMIT 1", (map_id, index))
        if not rows or rows[0][0] + rows[0][1] <= index:
            return None
        return rows[0][0], rows[0][1], rows[0][2]

    def map_items(self, map_id: str, start: int, stop: int) -> dict[int, tuple[Any, ...]]:
        """idx -> (state, attempt, result, error) of the items in ``[start, stop)`` with a
        row of their own."""
        return {r[0]: tuple(r[1:]) for r in self._rows(
            "SELECT idx, state, attempt, result, error FROM nbq_map_item WHERE map = ? AND "
            "idx >= ? AND idx < ?", (map_id, start, stop))}

    def map_chunks(self, map_id: str) -> list[tuple[str, list[list[int]]]]:
        """(state, runs of items) of the map's chunks."""
        return [(state, C.decode_spec(spec)[0]) for state, spec in self._rows(
            "SELECT state, args FROM nbq_job INDEXED BY nbq_job_parent WHERE parent = ? AND "
            "kind = 'chunk'", (map_id,))]

    def item_error(self, map_id: str, text: str | None) -> J.RemoteError:
        """An item's stored error, with its traceback."""
        if not text:
            return J.RemoteError("JobFailed", "no error recorded")
        data = json.loads(text)
        tb = ""
        if data.get("tb"):
            rows = self._rows("SELECT text FROM nbq_map_tb WHERE map = ? AND hash = ?",
                              (map_id, data["tb"]))
            tb = rows[0][0] if rows else ""
        return J.RemoteError(data["exc_type"], data["exc_value"], tb)

    def item_state_in(self, sql: Any, map_id: str, idx: int) -> str:
        """An item's state as the transaction ``sql`` sees it (its own row, else its range,
        else where its map is)."""
        row = sql("SELECT state FROM nbq_map_item WHERE map = ? AND idx = ?",
                  (map_id, idx)).fetchone()
        if row is not None:
            return J.WAITING if row[0] in _LIVE else str(row[0])
        info = sql("SELECT m.total, m.cursor, m.stopped, j.state FROM nbq_map m JOIN nbq_job j "
                   "ON j.id = m.id WHERE m.id = ?", (map_id,)).fetchone()
        if info is None or not 0 <= idx < info[0]:
            raise NoSuchJob(f"no item {idx} in map {map_id}")
        out = sql("SELECT start, n FROM nbq_map_out WHERE map = ? AND start <= ? "
                  "ORDER BY start DESC LIMIT 1", (map_id, idx)).fetchone()
        if out is not None and idx < out[0] + out[1]:
            return J.DONE
        if info[2] and idx >= info[1]:
            return J.CANCELLED
        return J.READY
