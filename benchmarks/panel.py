"""Cost of the panel on a big queue: one refresh of ``QueuePanel`` and the reads behind
its pager, on a queue of a million top-level jobs against one of a thousand.

Both queues hold the same mix (``start=False``, nothing runs): half the jobs wait for a
time (``after="in 6h"``), half were cancelled (they needed a gate that was rejected:
one transaction cancels them all), all named ``noop``; plus 200 earlier runs of a
notebook cell ``fit`` (keys ``cell:...``, cancelled, folded under the newest) and a
gate in review. Each read is timed as the best of ``REPEAT`` in this process: a full
``refresh()`` of a panel (counts, resources, the review, a page of ten jobs with their
earlier runs and children), the first page, page 1,000 of the ended jobs, a filter by
state, a filter by a rare name, and a filter by the name of half the queue (the worst
case: it reads the jobs of that name).

Run: ``python benchmarks/panel.py [--small]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from _common import figure, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.widgets import QueuePanel  # noqa: E402
from nbqueue.widgets.tree import JobFilter, top_page  # noqa: E402

CHUNK = 50_000
RUNS = 200  # earlier runs of the cell "fit"
REPEAT = 5


def populate(path: Path, m: int) -> float:
    """Fill a queue with ``m`` jobs as described above; returns the seconds it took."""
    t0 = time.perf_counter()
    q = nbqueue.Queue(path, workers=1, start=False)
    gate = q.review("hold", key=None)
    for start in range(0, m // 2, CHUNK):
        q.map(bench_jobs.noop, range(start, min(m // 2, start + CHUNK)), key=None,
              after="in 6h")
        q.map(bench_jobs.noop, range(start, min(m // 2, start + CHUNK)), key=None,
              needs=[gate])
    for i in range(RUNS):
        q.submit(bench_jobs.noop, i, name="fit", key=f"cell:{i}", needs=[gate])
    q.reject(gate.id)
    q.submit(bench_jobs.noop, -1, name="fit", key="cell:newest", after="in 6h")
    q.review("Check the numbers", payload="rows: 1,000,000")
    q.close()
    return time.perf_counter() - t0


def best(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure(path: Path) -> dict[str, float]:
    q = nbqueue.Queue(path, workers=1, start=False)
    tree = q.tree()  # what the panel pages with
    panel = QueuePanel(q, interval=3600)
    try:
        return {
            "refresh": best(panel.refresh),
            "first page": best(lambda: top_page(tree, JobFilter(), 0, 10)),
            "ended page 1000": best(lambda: top_page(tree, JobFilter(state="ended"),
                                                     10_000, 10)),
            "state filter": best(lambda: top_page(tree, JobFilter(state="cancelled"), 0, 10)),
            "rare name": best(lambda: top_page(tree, JobFilter(name="fit"), 0, 10)),
            "name of half": best(lambda: top_page(tree, JobFilter(name="noop"), 0, 10)),
        }
    finally:
        panel.close()
        q.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the big queue")
    args = parse_args("", argv, parser)
    m, small = (20_000, 1_000) if args.small else (args.jobs, 1_000)
    header(f"panel: a refresh and its pages, {m:,} jobs against {small:,}", args.small)
    with scratch() as root:
        took = populate(root / "big", m)
        print(f"  filled a queue with {m:,} jobs (and {RUNS} earlier runs of a cell) in "
              f"{took:.1f} s")
        populate(root / "small", small)
        base, big = measure(root / "small"), measure(root / "big")
    for what in base:
        print(f"  {what}: {1000 * base[what]:.1f} ms with {small:,} jobs, "
              f"{1000 * big[what]:.1f} ms with {m:,} ({big[what] / base[what]:.1f}x)")
    ratio = big["refresh"] / base["refresh"]
    figure("a panel refresh, big / small queue", f"{ratio:.1f}x", "<= 3x", ratio <= 3)
    figure("a panel refresh on the big queue", f"{1000 * big['refresh']:.0f} ms", "<= 100 ms",
           big["refresh"] <= 0.1)
    figure("page 1,000 of the ended jobs", f"{1000 * big['ended page 1000']:.0f} ms",
           "<= 200 ms", big["ended page 1000"] <= 0.2)


if __name__ == "__main__":
    main()
