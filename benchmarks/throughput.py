"""End-to-end throughput of no-op jobs: nbqueue against raw loky, in the same run.

Raw loky: ``loky.ProcessPoolExecutor(max_workers=2)``, submit N no-ops, then
``result()`` of each. nbqueue, on a queue with ``workers=2`` and the default durability
(every commit fsynced), ``q.map(noop, range(N), key=None)`` and then, each on a fresh
queue, one of three ways to wait:

- ``join``: ``q.join()`` (no result is read);
- ``gather``: ``q.gather(hs)``, every result in order;
- ``list of result()``: ``[h.result() for h in hs]``.

jobs/s from the map call to the last result (or the end of the join). All sides are
warmed up first with a few jobs that are not timed (worker processes started and
``bench_jobs`` imported), so none pays process start-up inside the timing.

The four run ``ROUNDS`` times, interleaved; each nbqueue figure is a ratio against raw
loky in the same round, and the figures are the medians of the rounds' ratios (raw loky
alone swings between 12,000 and 17,000 jobs/s on this machine from run to run).

Beside them: the longest time the dispatcher (its threads) held SQLite's write lock in
one transaction during the timed part of the join runs, from BEGIN to the end of COMMIT
(``Store.longest_holds``): while it holds it, no other process can submit, cancel or
approve, so a serving process stopped then (SIGSTOP, a debugger) would freeze the
directory.

Run: ``python benchmarks/throughput.py [--small]``
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402
import loky  # noqa: E402

import nbqueue  # noqa: E402

WARMUP = 20
TARGET_RATIO = 0.5
TARGET_HOLD = 0.020  # seconds
ROUNDS = 7


WAYS = {
    "join": lambda q, hs: q.join(timeout=600),
    "gather": lambda q, hs: q.gather(hs, timeout=600),
    "list of result()": lambda q, hs: [h.result(timeout=600) for h in hs],
}


def nbqueue_throughput(path: Path, n: int, way: str = "join", *, workers: int = 2,
                       warmup: int = WARMUP,
                       on_end: Callable[[nbqueue.Queue], None] | None = None) -> float:
    """jobs/s of ``n`` no-ops through a queue at ``path`` (warm-up excluded), waited for
    one of the ``WAYS``; ``on_end(q)`` runs after the timing, while the dispatcher still
    runs."""
    with nbqueue.Queue(path, workers=workers) as q:
        before = q.counts()["done"]
        for h in q.map(bench_jobs.noop, range(warmup), key=None):
            h.result(timeout=120)
        q.join(timeout=120)
        q._store.clear_holds()
        t0 = time.perf_counter()
        hs = q.map(bench_jobs.noop, range(n), key=None)
        results = WAYS[way](q, hs)
        took = time.perf_counter() - t0
        done = q.counts()["done"] - before
        if on_end is not None:
            on_end(q)
    if done != n + warmup:
        raise RuntimeError(f"expected {n + warmup} done jobs, found {done}")
    if results is not None and results != [None] * n:
        raise RuntimeError(f"{way}: expected {n} results None, got {str(results)[:80]}")
    return n / took


def dispatcher_hold(q: nbqueue.Queue) -> float:
    """The longest one transaction of the dispatcher's threads held the write lock (s)."""
    return max((s for name, s in q._store.longest_holds.items() if name != "MainThread"),
               default=0.0)


def loky_throughput(n: int, *, workers: int = 2, warmup: int = WARMUP) -> float:
    """jobs/s of ``n`` no-ops submitted to a private loky pool (warm-up excluded)."""
    pool = loky.ProcessPoolExecutor(max_workers=workers)
    try:
        for f in [pool.submit(bench_jobs.noop, i) for i in range(warmup)]:
            f.result(timeout=120)
        t0 = time.perf_counter()
        futures = [pool.submit(bench_jobs.noop, i) for i in range(n)]
        for f in futures:
            f.result(timeout=600)
        return n / (time.perf_counter() - t0)
    finally:
        pool.shutdown(wait=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = 200 if args.small else 5000
    rounds = 1 if args.small else ROUNDS
    header("throughput: no-op jobs end to end, nbqueue vs raw loky", args.small)
    with scratch() as root:
        fsync_probe(root)
        print(f"all: {n} no-op jobs, 2 workers, after {WARMUP} untimed warm-up jobs "
              f"(processes started, job module imported); {rounds} rounds, interleaved (the "
              "machine's noise hits all sides alike); each round's ratios, then the medians")
        print(f"raw loky: ProcessPoolExecutor(max_workers=2), submit all then result(); "
              f"nbqueue: q.map(noop, range({n}), key=None), workers=2, durable commits, then "
              "q.join(), q.gather(hs) or [h.result() for h in hs]")
        ratios: dict[str, list[float]] = {way: [] for way in WAYS}
        holds: list[float] = []
        for i in range(rounds):
            raw = loky_throughput(n)
            line = [f"raw loky {raw:,.0f} jobs/s"]
            for way in WAYS:
                on_end = (lambda q: holds.append(dispatcher_hold(q))) if way == "join" else None
                ours = nbqueue_throughput(root / f"q{i}-{way.split()[0]}", n, way,
                                          on_end=on_end)
                ratios[way].append(ours / raw)
                line.append(f"{way} {ours:,.0f} ({ours / raw:.2f})")
            print(f"  round {i + 1}: " + "; ".join(line) + f"; dispatcher held the write lock "
                  f"at most {1000 * holds[-1]:.1f} ms")
        for way in WAYS:
            ratio = statistics.median(ratios[way])
            figure(f"ratio nbqueue ({way}) / raw loky, median of {rounds}", f"{ratio:.2f}",
                   f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
        hold = max(holds)
        figure(f"longest write-lock hold by the dispatcher, over {rounds} rounds "
               f"(median of the rounds' longest {1000 * statistics.median(holds):.1f} ms)",
               f"{1000 * hold:.1f} ms", f"<= {1000 * TARGET_HOLD:.0f} ms", hold <= TARGET_HOLD)


if __name__ == "__main__":
    main()
