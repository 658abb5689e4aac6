"""A generator handler fanning out N children and reducing, against N plain jobs.

Baseline (same run, fresh queue): ``q.map(ident, range(N), key=None)`` then
``q.join()``. Fan-out (fresh queue): one job ``fan_out(N)`` whose body is
``results = yield [nbqueue.call(ident, i) for i in range(N)]; return sum(results)``,
timed from ``q.submit`` to its ``result()``: the first step builds the N child
messages (automatic keys, as ``call`` gives), the store commits them with the
journal row, the children run, the parent is replayed with their N results and
reduces. Both queues use ``workers=2`` and are warmed up first.

Run: ``python benchmarks/fanout.py [--small]``
"""

from __future__ import annotations

import time
from pathlib import Path

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402

TARGET = 1.5


def warm(q: nbqueue.Queue) -> None:
    for h in q.map(bench_jobs.ident, range(20), key=None):
        h.result(timeout=120)
    q.join(timeout=120)


def plain(path: Path, n: int) -> float:
    with nbqueue.Queue(path, workers=2) as q:
        warm(q)
        t0 = time.perf_counter()
        q.map(bench_jobs.ident, range(n), key=None)
        q.join(timeout=600)
        took = time.perf_counter() - t0
        done = q.counts()["done"]
    if done != n + 20:
        raise RuntimeError(f"expected {n + 20} done jobs, found {done}")
    return took


def fanned(path: Path, n: int) -> tuple[float, float]:
    """(total seconds, seconds until the first step had committed its children)."""
    with nbqueue.Queue(path, workers=2) as q:
        warm(q)
        t0 = time.perf_counter()
        h = q.submit(bench_jobs.fan_out, n, key=None)
        while h.state != "waiting":
            time.sleep(0.01)
        t_children = time.perf_counter() - t0
        total = h.result(timeout=600)
        took = time.perf_counter() - t0
    if total != n * (n - 1) // 2:
        raise RuntimeError(f"fan_out({n}) returned {total}")
    return took, t_children


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = 300 if args.small else 10_000
    header("fan-out: a generator handler with N children vs N plain jobs", args.small)
    with scratch() as root:
        fsync_probe(root)
        base = plain(root / "plain", n)
        print(f"  {n:,} plain jobs (q.map + q.join): {base:.2f} s ({n / base:,.0f} jobs/s)")
        took, first = fanned(root / "fan", n)
        print(f"  fan_out({n:,}): {took:.2f} s, of which {first:.2f} s until the "
              "children were committed (parent running its first step)")
        figure("fan-out time / plain jobs time", f"{took / base:.2f}", f"<= {TARGET}",
               took / base <= TARGET)


if __name__ == "__main__":
    main()
