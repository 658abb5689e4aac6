"""nbqueue on a dask cluster against raw dask, on the same cluster, in the same run.

The cluster: a ``LocalCluster`` of 2 single-threaded worker processes on 127.0.0.1.

nbqueue: ``q.map(noop, range(N), key=None)`` on a queue with ``executor=client``
(``workers`` = the cluster's 2 threads, every commit fsynced), then ``q.join()`` and
every result read with ``h.result()``; jobs/s from the map call to the last result.
Raw dask: ``client.map(noop, range(N), pure=False)`` then ``client.gather``. Both are
warmed up first (workers started, ``bench_jobs`` imported there). ``ROUNDS`` rounds,
interleaved (the machine's noise hits both sides alike); the figure is the median of
the rounds' ratios.

Beside it, for reference: raw dask with at most ``2 x workers`` tasks in flight (a new
task submitted as each one's result comes back, in batches, with ``as_completed``).
That is what nbqueue's redo bound would allow with one dask task per job: after a crash
at most two executions per worker are redone, so a slot keeps at most one job running
and one handed ahead. nbqueue's dask slots each run one long task instead (a loop that
takes the slot's jobs over a connection to the dispatcher, ``nbqueue/daskloop.py``),
within the same bound but with no round trip through the scheduler per job, so they
beat this line; the queue opens fresh each round, so each round starts its loops.

Run: ``python benchmarks/dask.py [--small]``
"""

from __future__ import annotations

import os
import sys

# This file is named dask.py: its directory goes to the end of sys.path, so that
# ``import dask`` (by distributed, here and in the spawned worker processes, which inherit
# sys.path) finds the real package, and ``_common`` and ``bench_jobs`` are still found.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]

import itertools  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import bench_jobs  # noqa: E402
import distributed  # noqa: E402
from _common import figure, fsync_probe, header, parse_args, scratch  # noqa: E402
from distributed import as_completed  # noqa: E402

import nbqueue  # noqa: E402

WARMUP = 20
ROUNDS = 5
TARGET_RATIO = 0.6
WORKERS = 2


def nbqueue_rate(client: Any, path: Path, n: int) -> tuple[float, float]:
    """jobs/s of ``n`` no-ops through a queue on ``client``: to the end of ``q.join()``,
    and to the last result read (warm-up excluded)."""
    with nbqueue.Queue(path, executor=client) as q:
        assert q.workers == WORKERS
        for h in q.map(bench_jobs.noop, range(WARMUP), key=None):
            h.result(timeout=120)
        t0 = time.perf_counter()
        handles = q.map(bench_jobs.noop, range(n), key=None)
        q.join(timeout=600)
        joined = time.perf_counter() - t0
        results = [h.result(timeout=60) for h in handles]
        took = time.perf_counter() - t0
    if results != [None] * n:
        raise RuntimeError("nbqueue lost or changed results")
    return n / joined, n / took


def dask_rate(client: Any, n: int) -> float:
    """jobs/s of ``client.map`` + ``client.gather`` of ``n`` no-ops."""
    t0 = time.perf_counter()
    futures = client.map(bench_jobs.noop, range(n), pure=False)
    results = client.gather(futures)
    took = time.perf_counter() - t0
    del futures
    if results != [None] * n:
        raise RuntimeError("dask lost results")
    return n / took


def dask_window_rate(client: Any, n: int, window: int) -> float:
    """jobs/s of ``n`` no-ops through dask with at most ``window`` tasks in flight: as
    results come back (a batch at a time), as many new tasks go out in one ``client.map``."""
    items = iter(range(n))
    t0 = time.perf_counter()
    first = list(itertools.islice(items, window))
    done = as_completed(client.map(bench_jobs.noop, first, pure=False), with_results=True)
    count = 0
    for batch in done.batches():
        count += len(batch)
        more = list(itertools.islice(items, len(batch)))
        if more:
            done.update(client.map(bench_jobs.noop, more, pure=False))
    took = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"expected {n} results, got {count}")
    return n / took


# -- chunked maps (issue 13, item 2: ``q.map(fn, items, chunksize=...)``) ---------------------
# A chunked map of 1,000,000 no-ops through nbqueue on this cluster against ``client.map``
# over chunks of the size nbqueue's automatic sizing chose (``dask_chunks_rate``), same run.

CHUNKED_ITEMS = 1_000_000
CHUNKED_TARGET = 0.5


def run_chunk(items: range) -> list[None]:
    """One chunk of no-op calls, as one dask task (the raw side of the chunked figure)."""
    return [bench_jobs.noop(i) for i in items]


def dask_chunks_rate(client: Any, n: int, chunksize: int) -> float:
    """calls/s of ``n`` no-op calls as ``client.map`` over chunks of ``chunksize``."""
    chunks = [range(i, min(i + chunksize, n)) for i in range(0, n, chunksize)]
    t0 = time.perf_counter()
    results = client.gather(client.map(run_chunk, chunks, pure=False))
    took = time.perf_counter() - t0
    if sum(len(r) for r in results) != n:
        raise RuntimeError("dask lost results of a chunk")
    return n / took


def nbqueue_chunked_rate(client: Any, path: Path, n: int) -> tuple[float, int]:
    """calls/s of a chunked map of ``n`` no-ops through nbqueue on ``client``, every
    result gathered, and the mean size of its chunks (automatic sizing)."""
    with nbqueue.Queue(path, executor=client) as q:
        t0 = time.perf_counter()
        items = q.map(bench_jobs.noop, range(n), chunksize="auto")
        results = q.gather(items, timeout=1800)
        took = time.perf_counter() - t0
        info = q._store.map_info(items.id)
    if results != [None] * n:
        raise RuntimeError("nbqueue lost or changed results of the chunked map")
    return n / took, max(1, round(info["total"] / max(info["chunks"], 1)))


# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = 100 if args.small else 1000
    rounds = 1 if args.small else ROUNDS
    header("dask: no-op jobs on a LocalCluster, nbqueue vs raw dask", args.small)
    with scratch() as root:
        fsync_probe(root)
        cluster = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1,
                                           processes=True, host="127.0.0.1",
                                           dashboard_address=":0",
                                           local_directory=str(root / "dask"))
        client = distributed.Client(cluster)
        try:
            client.wait_for_workers(WORKERS, timeout=120)
            client.gather(client.map(bench_jobs.noop, range(WARMUP), pure=False))
            print(f"{n} no-op jobs, LocalCluster of {WORKERS} worker processes x 1 thread, after "
                  f"{WARMUP} untimed warm-up jobs; {rounds} round(s), interleaved; each round's "
                  "ratio, then the median")
            ratios, joined_ratios, window_ratios = [], [], []
            for i in range(rounds):
                raw = dask_rate(client, n)
                windowed = dask_window_rate(client, n, 2 * WORKERS)
                joined, ours = nbqueue_rate(client, root / f"q{i}", n)
                ratios.append(ours / raw)
                joined_ratios.append(joined / raw)
                window_ratios.append(windowed / raw)
                print(f"  round {i + 1}: raw dask client.map + client.gather: {raw:,.0f} jobs/s; "
                      f"nbqueue q.map + q.join + every h.result(): {ours:,.0f} jobs/s (to the "
                      f"join: {joined:,.0f}); ratio {ours / raw:.2f}; raw dask with at most "
                      f"{2 * WORKERS} tasks in flight: {windowed:,.0f} jobs/s "
                      f"({windowed / raw:.2f} of client.map)")
            ratio = statistics.median(ratios)
            figure(f"ratio nbqueue (every result read) / raw dask, median of {rounds}",
                   f"{ratio:.2f}", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
            print(f"  for reference, medians: nbqueue to the join / raw dask "
                  f"{statistics.median(joined_ratios):.2f}; raw dask with at most "
                  f"{2 * WORKERS} tasks in flight (the redo bound's window with a task "
                  f"per job) / raw dask {statistics.median(window_ratios):.2f}")
            items = 10_000 if args.small else CHUNKED_ITEMS
            rate, chunksize = nbqueue_chunked_rate(client, root / "chunked", items)
            raw_chunks = dask_chunks_rate(client, items, chunksize)
            print(f"  chunked map of {items:,} no-ops, every result gathered: nbqueue "
                  f"{rate:,.0f} calls/s; client.map + gather over the same {chunksize}-item "
                  f"chunks: {raw_chunks:,.0f} calls/s")
            figure(f"chunked map of {items:,} no-ops, chunks of {chunksize} on average: "
                   "nbqueue / client.map over the same chunks",
                   f"{rate / raw_chunks:.2f}", f">= {CHUNKED_TARGET}",
                   rate / raw_chunks >= CHUNKED_TARGET)
        finally:
            client.close()
            cluster.close()


if __name__ == "__main__":
    main()
