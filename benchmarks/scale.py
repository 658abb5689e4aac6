"""Cost of a big queue: the throughput benchmark with a million jobs in the directory.

A subprocess fills a queue with M jobs that wait on a future ``after`` (``q.map``
in chunks of 50,000, ``key=None``, opened with ``start=False``). Then, each in a
fresh interpreter so memory figures compare, the throughput benchmark
(``throughput.nbqueue_throughput``: no-op jobs, ``workers=2``) runs on an empty
queue (the baseline) and on the full one, twice each, interleaved, and the best of
each is compared (the machine's noise hits both alike). Printed: the ratio, how much
the dispatcher's process grows in RSS while it opens the queue and runs the
benchmark, and how long reopening the full queue takes (``Queue(path,
start=False)``, recovery included).

Run: ``python benchmarks/scale.py [--small]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402
import psutil  # noqa: E402
from throughput import nbqueue_throughput  # noqa: E402

import nbqueue  # noqa: E402

CHUNK = 50_000
ROUNDS = 2
MB = 1024 * 1024


def populate(path: str, m: int) -> None:
    q = nbqueue.Queue(path, workers=1, start=False)
    t0 = time.perf_counter()
    for start in range(0, m, CHUNK):
        q.map(bench_jobs.noop, range(start, min(m, start + CHUNK)), key=None, after="in 6h")
    took = time.perf_counter() - t0
    counts = q.counts()
    q.close()
    print(json.dumps({"seconds": took, "waiting": counts["waiting"]}))


def measure(path: str, n: int) -> None:
    me = psutil.Process()
    rss0 = me.memory_info().rss
    t0 = time.perf_counter()
    q = nbqueue.Queue(path, workers=2, start=False)
    reopen = time.perf_counter() - t0
    q.close()
    seen: dict[str, float] = {}

    def at_end(q: nbqueue.Queue) -> None:
        seen["rss"] = me.memory_info().rss
        seen["waiting"] = q.counts()["waiting"]

    rate = nbqueue_throughput(Path(path), n, on_end=at_end)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rate": rate, "reopen": reopen, "rss0": rss0, "rss_end": seen["rss"],
                      "peak": peak, "waiting": seen["waiting"]}))


def rates(results: list[dict[str, float]]) -> str:
    return ", ".join(f"{r['rate']:,.0f}" for r in results)


def run(*args: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, *args], check=True, text=True,
                         stdout=subprocess.PIPE).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populate", nargs=2, metavar=("DIR", "M"), help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = parse_args("", argv, parser)
    if args.populate:
        populate(args.populate[0], int(args.populate[1]))
        return
    if args.measure:
        measure(args.measure[0], int(args.measure[1]))
        return
    m, n = (20_000, 500) if args.small else (1_000_000, 5_000)
    header(f"scale: throughput with {m:,} jobs waiting in the directory", args.small)
    with scratch() as root:
        fsync_probe(root)
        filled = run("--populate", str(root / "full"), str(m))
        size = sum(f.stat().st_size for f in (root / "full").iterdir() if f.is_file())
        print(f"  filled a queue with {int(filled['waiting']):,} waiting jobs in "
              f"{filled['seconds']:.1f} s ({m / filled['seconds']:,.0f} jobs/s), "
              f"{size / MB:,.0f} MB on disk")
        # interleaved, best of ROUNDS each: the machine's noise hits both sides alike
        empties, fulls = [], []
        for i in range(ROUNDS):
            empties.append(run("--measure", str(root / f"empty{i}"), str(n)))
            fulls.append(run("--measure", str(root / "full"), str(n)))
        for result in fulls:
            if result["waiting"] != m:
                raise RuntimeError(f"expected {m} waiting jobs, found {result['waiting']}")
        empty = max(empties, key=lambda r: r["rate"])
        full = max(fulls, key=lambda r: r["rate"])
        print(f"  empty queue, {ROUNDS} runs: {rates(empties)} jobs/s ({n:,} no-ops, workers=2), "
              f"RSS {empty['rss0'] / MB:.0f} -> {empty['rss_end'] / MB:.0f} MB")
        print(f"  full queue, {ROUNDS} runs: {rates(fulls)} jobs/s, RSS {full['rss0'] / MB:.0f} -> "
              f"{full['rss_end'] / MB:.0f} MB (peak {full['peak'] / MB:.0f} MB)")
        ratio = full["rate"] / empty["rate"]
        figure("throughput full / empty (best of each)", f"{ratio:.2f}", ">= 0.8", ratio >= 0.8)
        grew = max(r["rss_end"] - r["rss0"] for r in fulls) / MB
        print(f"  (on the empty queue the same process grew by at most "
              f"{max(r['rss_end'] - r['rss0'] for r in empties) / MB:.0f} MB)")
        figure("dispatcher process RSS growth, full queue", f"{grew:.0f} MB", "<= 100 MB",
               grew <= 100)
        reopen = max(r["reopen"] for r in fulls)
        figure("reopening the full queue (slowest)", f"{reopen:.3f} s", "<= 2 s", reopen <= 2)


if __name__ == "__main__":
    main()
