"""Chunked maps against joblib.Parallel(n_jobs=2) with its automatic batching, same run.

1. No-ops, every result gathered: nbqueue ``hs = q.map(noop, range(N), chunksize="auto",
   key=None)`` then ``[h.result() for h in hs]`` on a queue with ``workers=2`` and the
   default durability (every commit fsynced), timed from the map call to the last result;
   joblib ``Parallel(n_jobs=2)(delayed(noop)(i) for i in range(N))`` (``batch_size=
   "auto"``, its default). Calls/s, nbqueue over joblib: ``ROUNDS`` rounds interleaved,
   the median of their ratios. Target >= 0.5.
2. ``time.sleep(0.001)`` calls, the same two ways: time, nbqueue over joblib (one round:
   a round takes about a minute each side). Target <= 1.2.
3. The map's memory: in a fresh interpreter each, the peak RSS growth of the process
   (which runs the dispatcher too) over ``q.map`` of N no-op items and gathering every
   result, from its RSS once the queue is open and its workers warm; joblib's growth the
   same way beside it, and nbqueue's when a list of every item's handle is kept while the
   results are read. Target <= 300 MB.

Both sides are warmed up first (worker processes started, ``bench_jobs`` imported) and
neither pays process start-up inside the timing.

Run: ``python benchmarks/map.py [--small]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402
import psutil  # noqa: E402
from joblib import Parallel, delayed  # noqa: E402

import nbqueue  # noqa: E402

ROUNDS = 3
TARGET_RATIO = 0.5
TARGET_SLEEP = 1.2
TARGET_RSS = 300  # MB
MB = 1024 * 1024


def warm(q: nbqueue.Queue) -> None:
    for h in q.map(bench_jobs.noop, range(20), key=None):
        h.result(timeout=120)
    Parallel(n_jobs=2)(delayed(bench_jobs.noop)(i) for i in range(20))


def nbqueue_seconds(q: nbqueue.Queue, fn: Any, args: Any, n: int, *, hold: bool = False,
                    ) -> float:
    """Seconds to map ``fn`` over ``args`` in chunks and gather every result (``hold``:
    from a list of every item's handle, kept meanwhile)."""
    t0 = time.perf_counter()
    hs = q.map(fn, args, chunksize="auto", key=None)
    results = [h.result() for h in (list(hs) if hold else hs)]
    took = time.perf_counter() - t0
    if len(results) != n or hs.map.state != "done":
        raise RuntimeError(f"expected {n} results of a done map, got {len(results)} "
                           f"({hs.map.state})")
    return took


def joblib_seconds(fn: Any, args: Any, n: int) -> float:
    t0 = time.perf_counter()
    results = Parallel(n_jobs=2)(delayed(fn)(a) for a in args)
    took = time.perf_counter() - t0
    if len(results) != n:
        raise RuntimeError(f"expected {n} results from joblib, got {len(results)}")
    return took


def chunking(q: nbqueue.Queue) -> str:
    """The sizes of the chunks of the last map run."""
    (map_id,) = q._store._rows("SELECT id FROM nbq_map ORDER BY seq DESC LIMIT 1")[0]
    sizes = [n for n, in q._store._rows("SELECT n FROM nbq_map_out WHERE map = ? ORDER BY start",
                                       (map_id,))]
    return f"{len(sizes)} chunks, largest {max(sizes):,} items"


def rss_growth(side: str, n: int, path: str) -> None:
    """In this fresh interpreter: the peak RSS growth over one map of ``n`` no-ops with
    every result gathered (``side``: nbqueue or joblib), printed as JSON. The peak is
    sampled every 5 ms while the map runs (the process's lifetime peak, ``ru_maxrss``,
    may have come before)."""
    me = psutil.Process()
    q = nbqueue.Queue(path, workers=2)
    peak, running = [0], threading.Event()

    def sample() -> None:
        while running.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.005)

    try:
        warm(q)
        base = me.memory_info().rss
        running.set()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if side.startswith("nbqueue"):
            nbqueue_seconds(q, bench_jobs.noop, range(n), n, hold=side == "nbqueue-held")
        else:
            joblib_seconds(bench_jobs.noop, range(n), n)
        running.clear()
        sampler.join()
    finally:
        q.stop()
    print(json.dumps({"growth": (max(peak[0], me.memory_info().rss) - base) / MB}))


def measure_rss(side: str, n: int, path: Path) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss", side, str(n), str(path)],
                         check=True, text=True, stdout=subprocess.PIPE).stdout
    return float(json.loads(out.strip().splitlines()[-1])["growth"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rss", nargs=3, metavar=("SIDE", "N", "PATH"), help=argparse.SUPPRESS)
    known, rest = parser.parse_known_args(argv)
    if known.rss:
        rss_growth(known.rss[0], int(known.rss[1]), known.rss[2])
        return
    args = parse_args(__doc__.splitlines()[0], rest)
    noops, sleeps, items = (20_000, 2_000, 20_000) if args.small else \
        (1_000_000, 100_000, 1_000_000)
    rounds = 1 if args.small else ROUNDS
    header("chunked maps vs joblib.Parallel(n_jobs=2), automatic batching", args.small)
    with scratch() as root:
        fsync_probe(root)
        q = nbqueue.Queue(root / "q", workers=2)
        try:
            warm(q)
            print(f"1. {noops:,} no-op calls, every result gathered; {rounds} rounds, "
                  "interleaved; each round's ratio of calls/s, then the median")
            ratios = []
            for i in range(rounds):
                theirs = joblib_seconds(bench_jobs.noop, range(noops), noops)
                ours = nbqueue_seconds(q, bench_jobs.noop, range(noops), noops)
                ratios.append(theirs / ours)
                print(f"  round {i + 1}: joblib {noops / theirs:,.0f} calls/s; nbqueue "
                      f"{noops / ours:,.0f} calls/s ({chunking(q)}); ratio {theirs / ours:.2f}")
            ratio = statistics.median(ratios)
            figure(f"no-ops: calls/s nbqueue / joblib, median of {rounds}", f"{ratio:.2f}",
                   f">= {TARGET_RATIO}", ratio >= TARGET_RATIO)
            print(f"2. {sleeps:,} calls of time.sleep(0.001), every result gathered")
            delays = [0.001] * sleeps
            theirs = joblib_seconds(time.sleep, delays, sleeps)
            ours = nbqueue_seconds(q, time.sleep, delays, sleeps)
            print(f"  joblib {theirs:.2f} s; nbqueue {ours:.2f} s ({chunking(q)})")
            figure("sleeps: time nbqueue / joblib", f"{ours / theirs:.3f}", f"<= {TARGET_SLEEP}",
                   ours / theirs <= TARGET_SLEEP)
        finally:
            q.stop()
        print(f"3. memory: peak RSS growth over one map of {items:,} no-ops with every result "
              "gathered, each in a fresh interpreter (the dispatcher runs in it too)")
        ours_mb = measure_rss("nbqueue", items, root / "rss")
        theirs_mb = measure_rss("joblib", items, root / "rss-joblib")
        held_mb = measure_rss("nbqueue-held", items, root / "rss-held")
        print(f"  nbqueue +{ours_mb:.0f} MB; joblib +{theirs_mb:.0f} MB; nbqueue with a list of "
              f"every item's handle kept (list(hs)) +{held_mb:.0f} MB")
        figure("nbqueue's RSS growth", f"{ours_mb:.0f} MB", f"<= {TARGET_RSS} MB",
               ours_mb <= TARGET_RSS)


if __name__ == "__main__":
    main()
