"""What runs a chunk of a chunked map inside a worker (``runtime.execute`` hands it here).

A chunk's task carries the pickled argument blocks it needs and which of their items it
runs (``store.maps``, ``chunk_args``); it calls the map's function on each item in
order, each on its own, and returns one outcome for them all.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import cloudpickle

from .job import Outcome, OutcomeKind, Task
from .jobrun import PLAIN, failure, in_job, load_function, user_traceback


def execute_chunk(task: Task) -> Outcome:
    """Run the items of a chunk of a map, in order, each on its own: an item that raises
    fails alone. The outcome is ``done`` with ``(seconds the items took, results,
    {position: (exc_type, exc_value, traceback)})``, plain data the dispatcher reads;
    the results are one pickle for a first run (stored together), else one per item.
    It fails as a whole only if the chunk cannot run at all (its function or arguments do
    not load)."""
    started = time.time()
    with in_job(task) as ctx:
        try:
            fn, _ = load_function(task.function)
            blobs, picks, skip, apart = pickle.loads(task.args)
            blocks = [pickle.loads(blob) for blob in blobs]
            items: list[Any] = []
            for block, lo, hi in picks:
                items += blocks[block][lo:hi]
            with _scheduled_normally():
                t0 = time.perf_counter()
                results, errors = _run_items(fn, items, set(skip))
                took = time.perf_counter() - t0
            packed = _pack_results(results, errors, apart)
            return Outcome(task.id, task.claim, OutcomeKind.DONE,
                           result=pickle.dumps((took, packed, errors), protocol=5),
                           log=ctx.final_log(), started=started)
        except BaseException as exc:  # noqa: B036 - a chunk that cannot run fails its items
            return failure(ctx, exc, started)


@contextmanager
def _scheduled_normally() -> Iterator[None]:
    """Run a chunk's items under the normal scheduling policy. A local worker is a batch
    process (``init_worker``) so that being handed a job does not preempt its dispatcher;
    but a batch process that sleeps or waits for I/O is woken late on a busy machine (a
    loop of ``time.sleep(0.001)`` took more than twice as long), and a chunk's items
    sleep and wake many times with nothing to hand over meanwhile."""
    batch = getattr(os, "SCHED_BATCH", None)
    try:
        switched = batch is not None and os.sched_getscheduler(0) == batch
        if switched:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        switched = False
    try:
        yield
    finally:
        if switched:
            try:
                os.sched_setscheduler(0, batch, os.sched_param(0))  # type: ignore[arg-type]
            except OSError:
                pass


def _run_items(fn: Callable[..., Any], items: list[Any],
               skip: set[int]) -> tuple[list[Any], dict[int, tuple[str, str, str]]]:
    results: list[Any] = [None] * len(items)
    errors: dict[int, tuple[str, str, str]] = {}
    for pos, args in enumerate(items):
        if skip and pos in skip:
            continue
        try:
            results[pos] = fn(*args)
        except (Exception, SystemExit) as exc:  # other BaseExceptions stop the chunk
            if isinstance(exc, SystemExit) and exc.code in (None, 0):
                continue
            errors[pos] = (type(exc).__qualname__, str(exc), user_traceback(exc))
    return results, errors


def _pack_results(results: list[Any], errors: dict[int, tuple[str, str, str]],
                  apart: bool) -> bytes | list[bytes]:
    """The results as one pickle (``apart``: one per item); a result that cannot be
    pickled fails its item instead."""
    if all(type(r) in PLAIN for r in results):
        return [pickle.dumps(r, protocol=5) for r in results] if apart else \
            pickle.dumps(results, protocol=5)
    try:
        return [_dump(r) for r in results] if apart else cloudpickle.dumps(results, protocol=5)
    except Exception:
        pass
    for pos, value in enumerate(results):
        try:
            _dump(value)
        except Exception as exc:
            results[pos] = None
            errors[pos] = ("SubmitError", f"the result of this item ({type(value).__name__}) "
                           f"cannot be pickled: {exc}. Return plain data (or save it to a file "
                           "and return the path).", "")
    return _pack_results(results, errors, apart)


def _dump(value: Any) -> bytes:
    return (pickle.dumps(value, protocol=5) if type(value) in PLAIN
            else cloudpickle.dumps(value, protocol=5))
