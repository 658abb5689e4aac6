"""Chunked maps, the queue's side: packing a map's items, and the handles of its items.

``q.map(fn, items, chunksize="auto")`` stores one map (``build_map``): its job and its
items' arguments pickled in blocks, in one transaction. It returns a ``MapJobs``, a
sequence of ``MapItem`` handles made as they are asked for (a million items cost no
million objects), each a ``Job``: ``hs[i].result()``, ``.exception()``, ``.state``,
``.cancel()``, ``.retry()``. The items of a map share a ``MapView``, which reads the
results of a chunk once, all together, and keeps them: reading every result in turn
costs a read per chunk, not per item.
"""

from __future__ import annotations

import bisect
import hashlib
import inspect
import io
import itertools
import pickle
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, overload

import joblib

from . import chunking as C
from . import job as J
from .arguments import check_wait
from .errors import JobFailed, NoSuchJob, SubmitError, UnreadableResult
from .handle import Job
from .message import (
    PROTOCOL,
    _ArgPickler,
    _find_culprit,
    _shared_options,
    default_name,
    function_fingerprint,
    function_label,
    job_id_of,
    pack_function,
)
from .store.ids import new_id
from .waiting import POLL, failure

if TYPE_CHECKING:
    from .queue import Queue

_MISSING: Any = object()
_PLAIN_TYPES = frozenset({int, float, str, bytes, bool, type(None)})
CACHED_ITEMS = 2_000_000  # results a map's view keeps decoded, at most (oldest chunks go)


# -- storing a map -----------------------------------------------------------------------------


def build_map(fn: Callable[..., Any], iterables: Sequence[Iterable[Any]],
              options: dict[str, Any], chunksize: str | int, now: float) -> J.NewMap | None:
    """Everything ``q.map(..., chunksize=...)`` stores, or None for no items; raises (a
    ``SubmitError`` naming the item and argument) before anything is written."""
    label = f"{function_label(fn) if callable(fn) else repr(fn)}(...)"
    function = pack_function(fn)
    if inspect.isgeneratorfunction(fn):
        raise SubmitError(f"cannot map {label} in chunks: it is a generator handler, whose "
                          "steps are jobs of their own. Map it with chunksize=None; nothing "
                          "was stored")
    opts = dict(options)
    job_options, not_before, needs = _shared_options(fn, opts, now, label)
    if job_options.timeout is not None:
        if chunksize not in (C.AUTO, 1):
            raise SubmitError(f"map(): chunksize={chunksize!r} with timeout=: a timeout stops "
                              "its item by killing the worker process, which would take the "
                              "other items of its chunk with it. Give chunksize='auto' (each "
                              "item then runs alone) or drop the timeout; nothing was stored")
        chunksize = 1
    key = opts.get("key", "auto")
    if key is not None and key != "auto" and (not isinstance(key, str) or not key.strip()):
        raise SubmitError(f"cannot submit {label}: key={key!r}; give 'auto', None or a "
                          "non-empty string; nothing was stored")
    blocks, digest = pack_items(zip(*iterables, strict=False), label)
    total = sum(n for _, n, _ in blocks)
    if not total:
        return None
    if key == "auto":
        fingerprint = function_fingerprint(fn)
        key = "auto:" + hashlib.blake2b(
            pickle.dumps(("map", fingerprint, sorted(needs), total, digest), PROTOCOL),
            digest_size=16).hexdigest()
    job = J.NewJob(id=new_id(), name=job_options.name or default_name(fn), options=job_options,
                   kind=J.MAP, key=key, function=function, needs=needs, not_before=not_before)
    return J.NewMap(job, total, tuple(blocks), None if chunksize == C.AUTO else int(chunksize))


def pack_items(calls: Iterator[tuple[Any, ...]],
               label: str) -> tuple[list[tuple[int, int, bytes]], str]:
    """The items' argument tuples pickled in blocks ``(start, n, blob)`` of about
    ``BLOCK_BYTES`` (at most ``BLOCK_ITEMS`` items), and a digest of them all for the
    map's automatic key (equal items, equal digest)."""
    blocks: list[tuple[int, int, bytes]] = []
    digest = hashlib.blake2b(digest_size=16)
    start, n = 0, 64
    while True:
        items = list(itertools.islice(calls, n))
        if not items:
            return blocks, digest.hexdigest()
        for blob, count, key in _blocks(items, start, label):
            blocks.append((start, count, blob))
            digest.update(count.to_bytes(8, "little") + key)
            start += count
        last = blocks[-1]  # the next block: about BLOCK_BYTES, at the last one's item size
        n = max(1, min(C.BLOCK_ITEMS, C.BLOCK_BYTES * last[1] // max(len(last[2]), 1)))


def _blocks(items: list[tuple[Any, ...]], start: int,
            label: str) -> list[tuple[bytes, int, bytes]]:
    """One block of items, or more if its pickle is far over ``BLOCK_BYTES``: each as
    (blob, items, bytes for the digest)."""
    if _plain(items):
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=PROTOCOL)
        pickler.fast = True  # no memo: equal items pickle to equal bytes (see content_key)
        pickler.dump(items)
        blob = buf.getvalue()
        key = blob
    else:
        blob = _pickle_items(items, start, label)
        key = joblib.hash(items).encode()
    if len(blob) > 4 * C.BLOCK_BYTES and len(items) > 1:
        half = len(items) // 2
        return (_blocks(items[:half], start, label)
                + _blocks(items[half:], start + half, label))
    return [(blob, len(items), key)]


def _plain(items: list[tuple[Any, ...]]) -> bool:
    """Whether every argument is a built-in scalar (or a tuple or list of them): their
    pickle is canonical (see ``message.content_key``)."""
    plain = _PLAIN_TYPES
    for args in items:
        for value in args:
            kind = type(value)
            if kind not in plain and not ((kind is tuple or kind is list) and _plain([value])):
                return False
    return True


class _ItemPickler(_ArgPickler):
    """Pickles items; a job handle among them is refused (a map's items are arguments,
    not jobs to wait for: give those as ``needs=``)."""

    def persistent_id(self, obj: Any) -> Any:
        job_id = job_id_of(obj)
        if job_id is not None:
            raise SubmitError(f"job {job_id} is among the arguments: a chunked map's items "
                              "cannot take other jobs' results; give them as needs= (and "
                              "read their results in the function), or map with "
                              "chunksize=None")
        return None


def _pickle_items(items: list[tuple[Any, ...]], start: int, label: str) -> bytes:
    buf = io.BytesIO()
    try:
        _ItemPickler(buf).dump(items)
    except Exception as exc:
        for i, args in enumerate(items):
            try:
                _ItemPickler(io.BytesIO()).dump(args)
            except Exception:
                culprit = _find_culprit(args, {}, lambda v: _ItemPickler(io.BytesIO()).dump(v))
                raise SubmitError(
                    f"cannot submit map of {label}: item #{start + i}, argument {culprit} "
                    f"cannot be pickled ({type(exc).__name__}: {exc}). Pass something "
                    "picklable (a path instead of an open file, data instead of a "
                    "connection); nothing was stored.") from None
        raise SubmitError(f"cannot submit map of {label}: its items cannot be pickled "
                          f"({type(exc).__name__}: {exc}); nothing was stored") from None
    return buf.getvalue()


# -- reading a map's items ---------------------------------------------------------------------


class _Range:
    """A first run's results, decoded, and the items of it that have a row of their own
    (read again each time: their state may change)."""

    __slots__ = ("start", "stop", "values", "own", "error")

    def __init__(self, start: int, stop: int, values: list[Any] | None, own: set[int],
                 error: BaseException | None) -> None:
        self.start, self.stop, self.values, self.own, self.error = start, stop, values, own, error


class MapView:
    """What the item handles of one map read, shared by them: the results of each chunk's
    first run, loaded once (one read and one unpickling per chunk) and kept, up to
    ``CACHED_ITEMS`` items; an item with a row of its own is read from it each time."""

    def __init__(self, queue: Queue, map_id: str, total: int) -> None:
        self.queue = queue
        self.map_id = map_id
        self.total = total
        self._ranges: dict[int, _Range] = {}
        self._starts: list[int] = []
        self._last: _Range | None = None
        self._lock = threading.Lock()
        self._name: str | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = self.queue._store.get(self.map_id).name
        return self._name

    def value(self, index: int) -> Any:
        """The result of a done item whose chunk's results are loaded, else ``_MISSING``."""
        r = self._last
        if r is None or not r.start <= index < r.stop:
            r = self._find(index)
            if r is None:
                return _MISSING
            self._last = r
        if r.values is None or index in r.own:
            return _MISSING
        return r.values[index - r.start]

    def _find(self, index: int) -> _Range | None:
        at = bisect.bisect_right(self._starts, index) - 1
        if at < 0:
            return None
        r = self._ranges.get(self._starts[at])
        return r if r is not None and index < r.stop else None

    def _keep(self, r: _Range) -> None:
        with self._lock:
            if r.start in self._ranges:
                return
            kept = sum(x.stop - x.start for x in self._ranges.values())
            while self._ranges and kept + r.stop - r.start > CACHED_ITEMS:
                oldest = next(iter(self._ranges))
                gone = self._ranges.pop(oldest)
                kept -= gone.stop - gone.start
                self._starts.remove(oldest)
            self._ranges[r.start] = r
            bisect.insort(self._starts, r.start)

    def outcome(self, index: int) -> tuple[str, Any, int]:
        """(state, result or error or None, attempts) of an item, read from the store."""
        value = self.value(index)
        if value is not _MISSING:
            return J.DONE, value, 1
        ended, found, attempts = self._read(index)
        if ended is not None:
            return ended, found, attempts
        retrying = found  # not ended: its last error's text if it waits for a retry
        state = self._pending(index, retrying)
        if state in J.ENDED:
            # the map ended after the read above (each read sees the store as it is then):
            # what its items became was committed by then, so one more read tells
            ended, found, again = self._read(index)
            if ended is not None:
                return ended, found, again
        return state, (self.queue._store.item_error(self.map_id, retrying) if retrying
                       else None), attempts

    def _read(self, index: int) -> tuple[str | None, Any, int]:
        """An item's outcome if it ended (state, result or error, attempts), else (None,
        its last error's text if it waits for a retry, attempts)."""
        store = self.queue._store
        found = store.map_range(self.map_id, index)
        if found is not None:
            start, n, blob = found
            own = store.map_items(self.map_id, start, start + n)
            try:
                values, error = pickle.loads(blob), None
            except Exception as exc:
                values, error = None, exc
            r = _Range(start, start + n, values, set(own), error)
            self._keep(r)
            row = own.get(index)
            if row is None:
                if r.values is None:
                    raise self._unreadable(index, r.error)
                return J.DONE, r.values[index - start], 1
        else:
            row = store.map_items(self.map_id, index, index + 1).get(index)
        if row is None:
            return None, None, 0
        state, attempt, result, error_text = row
        if state == J.DONE:
            try:
                return J.DONE, pickle.loads(result), attempt
            except Exception as exc:
                raise self._unreadable(index, exc) from exc
        if state == J.FAILED:
            return J.FAILED, store.item_error(self.map_id, error_text), attempt
        if state == J.CANCELLED:
            return J.CANCELLED, None, attempt
        return None, error_text, attempt

    def _pending(self, index: int, retrying: str | None) -> str:
        """Where an item that has not ended is: the state of its chunk, else its map's."""
        info = self.queue._store.map_info(self.map_id)
        if info is None:
            raise NoSuchJob(f"map {self.map_id} is no longer in queue {self.queue.path} "
                            "(forgotten)")
        if info["stopped"] and index >= info["cursor"]:
            return J.CANCELLED
        if info["state"] != J.RUNNING:
            return info["state"] if info["state"] not in J.ENDED else J.CANCELLED
        for state, ranges in self.queue._store.map_chunks(self.map_id):
            if C.covers(ranges, index):
                return state
        return J.WAITING if retrying else J.READY

    def _unreadable(self, index: int, exc: BaseException | None) -> UnreadableResult:
        return UnreadableResult(
            f"item {index} of map {self.map_id} ({self.name}) succeeded, but its result cannot "
            f"be loaded in this process ({type(exc).__name__}: {exc}). Load it where the "
            "modules and classes it uses are importable (the same environment as its "
            "worker), or have the function return plain data")

    def record(self, index: int) -> J.JobRecord:
        state, found, attempt = self.outcome(index)
        reason, error = "", None
        if state == J.FAILED:
            error = found
            reason = f"{found.exc_type}: {found.exc_value}"[:300]
        elif state == J.CANCELLED:
            reason = "cancelled"
        elif state not in J.ENDED and found is not None:  # waiting for a retry
            reason = f"retry after {found.exc_type}: {found.exc_value}"[:300]
        return J.JobRecord(id=C.item_id(self.map_id, index), name=self.name, state=state,
                           kind=J.ITEM, reason=reason, parent=self.map_id, attempt=attempt,
                           error=error)


class MapItem(Job):
    """The handle of one item of a chunked map: a ``Job`` whose id is ``<map id>#<index>``.

    Made by a ``MapJobs`` when asked for (``hs[i]``, iterating) and by
    ``q.job("<map id>#<index>")``. It answers as a job does (``result``,
    ``exception``, ``wait``, ``state``, ``reason``, ``cancel``, ``retry``), but an item
    is no job of its own in the store: it runs in a chunk, a task of the map's, and the
    items of one map share a ``MapView`` that reads a chunk's results once, together.
    Its output is kept with the map's (``logs``); it has no children; its ``parent`` is
    the map's own job. An item cannot be passed as an argument to ``submit``; give it
    (or the map) as ``needs=`` instead, which waits for the whole map.

    Attributes
    ----------
    queue : Queue
        The queue of the map.
    index : int
        Its position among the map's items, from 0.
    """

    def __init__(self, view: MapView, index: int) -> None:  # noqa: D107 - no Job.__init__
        self._view = view
        self.index = index
        self.queue = view.queue
        self._record = None

    @property
    def id(self) -> str:  # type: ignore[override]  # made from its map's id, not set
        """``<map id>#<index>``."""
        return C.item_id(self._view.map_id, self.index)

    def record(self) -> J.JobRecord:
        """The item as a job record, made from its map's row and the item's outcome."""
        self._record = self._view.record(self.index)
        return self._record

    @property
    def logs(self) -> str:
        """The output of the whole map (its items' output is kept together)."""
        return self.queue._store.log_text(self._view.map_id)

    @property
    def children(self) -> list[Job]:
        """Always empty: an item cannot spawn or yield."""
        return []

    @property
    def parent(self) -> Job:
        """The map's own job."""
        return Job(self.queue, self._view.map_id)

    def result(self, timeout: float | None = None) -> Any:
        """The item's committed result, once it has ended.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; None (default) waits as long as it takes.

        Returns
        -------
        object
            What the call returned. The first read of a chunk's results loads them all
            for the other items' handles.

        Raises
        ------
        JobFailed, JobCancelled
            The item failed (after its retries) or was cancelled.
        TimeoutError
            The built-in one: the item had not ended after ``timeout`` seconds.
        DispatcherDied
            Nothing would ever run it.
        """
        value = self._view.value(self.index)
        if value is not _MISSING:
            return value
        state, found, _ = self._ended(timeout)
        if state == J.DONE:
            return found
        raise self._failure(self._view.record(self.index))

    def exception(self, timeout: float | None = None) -> JobFailed | None:
        """The failure ``result()`` would raise, or None if the item succeeded; waits as
        ``result`` does."""
        state, _, _ = self._ended(timeout)
        return None if state == J.DONE else self._failure(self._view.record(self.index))

    def wait(self, timeout: float | None = None) -> J.JobRecord:
        """Block until the item has ended (``TimeoutError`` after ``timeout``); its record."""
        self._ended(timeout)
        return self.record()

    def _failure(self, record: J.JobRecord) -> JobFailed:
        """What ``result()`` raises for an item that failed or was cancelled."""
        error = failure(self.queue, J.ResultRecord(record.id, record.state, record.name,
                                                   record.reason, record.error))
        assert isinstance(error, JobFailed), "an item that did not end done"
        return error

    def _ended(self, timeout: float | None) -> tuple[str, Any, int]:
        timeout = check_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        view = self._view
        event = threading.Event()
        d = self.queue.dispatcher
        # this process's dispatcher wakes the wait when it commits a chunk of the map;
        # what other processes commit is seen by reading every POLL seconds
        waiters = d.waiters if d is not None and d.alive else None
        ticket = None if waiters is None else waiters.open([view.map_id], event, each=True)[0]
        try:
            while True:
                event.clear()
                state, found, attempt = view.outcome(self.index)
                if state in J.ENDED:
                    return state, found, attempt
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"item {self.id} ({view.name}) is still {state} after "
                                       f"{timeout}s")
                left = POLL if deadline is None else min(POLL, max(deadline - time.monotonic(),
                                                                   0))
                self.queue._check_served(f"item {self.id} ({view.name})",
                                         needs_run=state in (J.READY, J.RUNNING))
                event.wait(left)
                if ticket is not None:
                    waiters.take(ticket)  # type: ignore[union-attr]
        finally:
            if ticket is not None:
                waiters.close(ticket)  # type: ignore[union-attr]

    def done(self) -> bool:
        """Whether the item has ended."""
        return self._view.value(self.index) is not _MISSING or self.state in J.ENDED

    def cancel(self) -> bool:
        """Cancel the item: it will not run.

        One running now in its chunk runs to its end, and its outcome is dropped.

        Returns
        -------
        bool
            False if it had already ended, else True.
        """
        before = self.queue._store.cancel_item(self._view.map_id, self.index)
        self.queue._wake()
        return before not in J.ENDED

    def retry(self) -> Job:
        """Run the failed or cancelled item again (its map runs again if it had ended).

        Returns
        -------
        Job
            This handle.

        Raises
        ------
        JobStateError
            A ``ValueError``: the item neither failed nor was cancelled.
        """
        self.queue._store.retry_item(self._view.map_id, self.index)
        self.queue._wake()
        return self


class MapJobs(Sequence[Job]):
    """What ``q.map(..., chunksize=...)`` returns: a sequence of the map's item handles.

    The handles (``MapItem``) are made when asked for (``hs[i]``, ``hs[a:b]``,
    iterating), so a million items cost no million objects. ``map`` is the map's own
    handle: cancel, retry, state and progress of the whole map. Given as ``needs=``, the
    sequence stands for its map; ``q.gather(hs)`` and ``nbqueue.as_completed(hs)`` take
    it.

    Attributes
    ----------
    queue : Queue
        The queue of the map.
    id : str or None
        The map's job id (None for a map of no items).
    """

    def __init__(self, queue: Queue, map_id: str | None, total: int) -> None:
        self.queue = queue
        self.id = map_id
        self._total = total
        self._view = MapView(queue, map_id, total) if map_id is not None else None

    @property
    def __nbqueue_needs__(self) -> tuple[str, ...]:
        # needs=hs: the map (a million item ids would name it a million times)
        return () if self.id is None else (self.id,)

    @property
    def map(self) -> Job | None:
        """The map's own job (None for a map of no items)."""
        return None if self.id is None else Job(self.queue, self.id)

    def __len__(self) -> int:
        return self._total

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> list[Job]: ...

    def __getitem__(self, index: int | slice) -> Job | list[Job]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._total))]
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"map item indices must be integers or slices, not "
                            f"{type(index).__name__}")
        if index < 0:
            index += self._total
        if not 0 <= index < self._total or self._view is None:
            raise IndexError("map item index out of range")
        return MapItem(self._view, index)

    def __iter__(self) -> Iterator[Job]:
        view = self._view
        for index in range(self._total):
            yield MapItem(view, index)  # type: ignore[arg-type]

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every item's result in order, read a chunk at a time.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for all of them; None (default) waits as long as it takes.

        Returns
        -------
        list

        Raises
        ------
        JobFailed, JobCancelled
            For the first item, in order, that did not succeed.
        TimeoutError
            The built-in one: items had not ended after ``timeout`` seconds.
        """
        timeout = check_wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for item in self:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            out.append(item.result(left))
        return out

    def __repr__(self) -> str:
        if self.id is None:
            return "<nbqueue.MapJobs (no items)>"
        return f"<nbqueue.MapJobs map {self.id}: {self._total:,} items>"


def item_handle(queue: Queue, job_id: str) -> MapItem | None:
    """The handle of an item id (``<map>#<index>``), None if it names no item."""
    found = C.item_of(job_id)
    if found is None:
        return None
    map_id, index = found
    info = queue._store.map_info(map_id)
    if info is None or not 0 <= index < info["total"]:
        return None
    return MapItem(MapView(queue, map_id, info["total"]), index)
