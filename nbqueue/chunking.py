"""Chunked maps, the pure part: ids, chunk sizes, what a chunk covers, how a map reads.

A chunked map (``q.map(fn, items, chunksize="auto")``) is one job row of kind ``map``;
its items are not jobs. They run in *chunks*: a chunk is one task that calls ``fn`` on
some items and returns each item's outcome. Chunks are carved from the map as workers
ask for work, each ``chunksize`` items, or, with ``"auto"``, as many as take a fraction
of a second: the size adapts from measured durations as joblib's automatic batching
does (``next_size``, ``completed``: joblib's ``AutoBatchingMixin``, with a chunk of at
most about a second instead of two).

Ids: a map's chunk ``n`` is the job ``<map>.c<n>``; item ``i`` is ``<map>#<i>``.

>>> chunk_id("00ab", 3), map_of("00ab.c3"), map_of("00ab#7"), map_of("00ab.1")
('00ab.c3', '00ab', '00ab', None)
>>> item_of("00ab#7")
('00ab', 7)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from .arguments import MAX_COUNT
from .errors import InvalidArgument, InvalidArgumentType

AUTO = "auto"
MIN_IDEAL = 0.2  # seconds: a chunk shorter than this grows (joblib's MIN_IDEAL_BATCH_DURATION)
MAX_IDEAL = 1.0  # seconds: a chunk longer than this shrinks (joblib uses 2; "about a second")
TAIL_FLOOR = 0.02  # seconds: the last chunks of a map are split down to this, no further
BLOCK_ITEMS = 1024  # items' arguments are stored in blocks of at most this many items
BLOCK_BYTES = 64 * 1024  # ... and about this many bytes (a big item gets a block of its own)
CHUNK_BYTES = 16 * 1024 * 1024  # a chunk's arguments: at most about this many bytes
RERUN_CHUNK = 1024  # items rerun (resubmitted, retried by hand) together in one chunk

_CHUNK = re.compile(r"^(.+)\.c(\d+)$")
_ITEM = re.compile(r"^(.+)#(\d+)$")


def chunk_id(map_id: str, n: int) -> str:
    return f"{map_id}.c{n}"


def item_id(map_id: str, index: int) -> str:
    return f"{map_id}#{index}"


def is_chunk_id(job_id: str) -> bool:
    return ".c" in job_id and _CHUNK.match(job_id) is not None


def item_of(job_id: str) -> tuple[str, int] | None:
    """``(map id, index)`` of an item id, else None."""
    found = _ITEM.match(job_id) if "#" in job_id else None
    return None if found is None else (found.group(1), int(found.group(2)))


def map_of(job_id: str) -> str | None:
    """The map a chunk or an item belongs to, else None."""
    if "#" in job_id:
        item = item_of(job_id)
        return None if item is None else item[0]
    found = _CHUNK.match(job_id) if ".c" in job_id else None
    return None if found is None else found.group(1)


def check_chunksize(value: Any) -> str | int:
    """``"auto"`` or a whole number of items >= 1.

    >>> check_chunksize("auto"), check_chunksize(100)
    ('auto', 100)
    >>> check_chunksize(0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    nbqueue.errors.InvalidArgument: chunksize=0: give "auto" ...
    """
    what = ('give "auto" (chunks of a fraction of a second, sized from measured durations), '
            "a whole number of items per chunk from 1 to 2**53, or None (one job per call)")
    if isinstance(value, str):
        if value != AUTO:
            raise InvalidArgument(f"chunksize={value!r}: {what}")
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentType(f"chunksize={value!r}: {what}")
    if not 1 <= value <= MAX_COUNT:
        raise InvalidArgument(f"chunksize={value!r}: {what}")
    return value


# -- automatic chunk sizes (joblib's AutoBatchingMixin) -------------------------------------


def next_size(size: int, smoothed: float) -> tuple[int, float]:
    """The size of the next chunk, from the current one and the smoothed duration of
    chunks of that size (0: none measured yet); returns it with the smoothed duration to
    keep (reset to 0 when the size changes).

    Too short: grow towards twice the size that would take ``MIN_IDEAL``, at most
    doubling. Too long: shrink to twice the size that would take ``MIN_IDEAL``.

    >>> next_size(1, 0.0)             # nothing measured yet
    (1, 0.0)
    >>> next_size(8, 0.001)           # far too short: doubles
    (16, 0.0)
    >>> next_size(100, 0.15)          # a little short: 2 x 100 x 0.2 / 0.15
    (200, 0.0)
    >>> next_size(1000, 4.0)          # too long: 2 x 1000 x 0.2 / 4
    (100, 0.0)
    >>> next_size(300, 0.5)           # within bounds: kept
    (300, 0.5)
    """
    if 0 < smoothed < MIN_IDEAL:
        ideal = int(size * MIN_IDEAL / smoothed) * 2
        new = max(min(2 * size, ideal), 1)
    elif smoothed > MAX_IDEAL and size >= 2:
        new = max(2 * int(size * MIN_IDEAL / smoothed), 1)
    else:
        new = size
    return new, (smoothed if new == size else 0.0)


def completed(size: int, smoothed: float, n: int, took: float) -> float:
    """The smoothed duration after a chunk of ``n`` items took ``took`` seconds: only
    chunks of the current size count (an exponentially weighted mean).

    >>> completed(10, 0.0, 10, 0.5), completed(10, 0.5, 10, 3.0), completed(10, 0.5, 3, 9.0)
    (0.5, 1.0, 0.5)
    """
    if n != size:
        return smoothed
    return took if smoothed == 0.0 else 0.8 * smoothed + 0.2 * took


def tail_size(size: int, remaining: int, workers: int, per_item: float | None) -> int:
    """Near the end of a map, smaller chunks, so that no worker is left alone with a long
    one (joblib splits its last batches too), but none shorter than ``TAIL_FLOOR``
    seconds by the measured time an item takes (``per_item``; None: not known, no split).

    >>> tail_size(1000, 10**6, 2, 0.001), tail_size(1000, 1500, 2, 0.001)
    (1000, 375)
    >>> tail_size(1000, 1500, 2, 1e-6), tail_size(1000, 3, 2, 1.0), tail_size(1000, 1500, 2, None)
    (1000, 1, 1000)
    """
    if remaining >= size * max(workers, 1) or per_item is None:
        return min(size, remaining)
    split = remaining // (2 * max(workers, 1))
    floor = int(TAIL_FLOOR / per_item) if per_item > 0 else size
    return max(1, min(size, remaining, max(split, floor)))


# -- what a chunk covers ---------------------------------------------------------------------


def runs(indices: Iterable[int]) -> list[list[int]]:
    """Sorted indices as ``[start, stop)`` runs.

    >>> runs([1, 2, 3, 7, 9, 10])
    [[1, 4], [7, 8], [9, 11]]
    """
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


def encode_spec(ranges: list[list[int]], first: bool) -> bytes:
    """A chunk's items as stored in its row: ``[start, stop)`` runs; ``first``: a map's
    first run of a range of items (its results are stored together, as one range)."""
    return json.dumps({"r": ranges, "f": first}, separators=(",", ":")).encode()


def decode_spec(blob: bytes) -> tuple[list[list[int]], bool]:
    """A chunk's runs and whether it is a first run, from its row.

    >>> decode_spec(encode_spec([[0, 5]], True))
    ([[0, 5]], True)
    """
    data = json.loads(blob)
    return data["r"], bool(data["f"])


def spec_items(ranges: list[list[int]]) -> list[int]:
    return [i for start, stop in ranges for i in range(start, stop)]


def spec_size(ranges: list[list[int]]) -> int:
    return sum(stop - start for start, stop in ranges)


def covers(ranges: list[list[int]], index: int) -> bool:
    return any(start <= index < stop for start, stop in ranges)


# -- how a map reads ---------------------------------------------------------------------------


def map_progress(done: int, failed: int, cancelled: int, total: int) -> dict[str, Any]:
    """A map's ``progress``: the panel's bar and the command line's column.

    >>> map_progress(3, 1, 0, 10)["message"]
    'items: 3 done, 1 failed'
    """
    parts = [f"{done:,} done"] + ([f"{failed:,} failed"] if failed else []) + (
        [f"{cancelled:,} cancelled"] if cancelled else [])
    return {"done": done + failed + cancelled, "total": total, "items_done": done,
            "failed": failed, "cancelled": cancelled, "message": "items: " + ", ".join(parts)}


def map_reason(done: int, failed: int, cancelled: int, total: int) -> str:
    """A map's reason: its counts, as the panel and ``nbqueue jobs`` show it.

    >>> map_reason(2500, 3, 0, 10000)
    '2,500 of 10,000 items done (25%), 3 failed'
    >>> map_reason(10, 0, 0, 10)
    '10 of 10 items done (100%)'
    """
    percent = 100 * done // total if total else 100
    text = f"{done:,} of {total:,} items done ({percent}%)"
    if failed:
        text += f", {failed:,} failed"
    if cancelled:
        text += f", {cancelled:,} cancelled"
    return text
