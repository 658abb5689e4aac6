"""Submit rate: ``q.map`` of many calls into a queue opened with ``start=False``.

Two figures: ``key=None`` (always a new job) and automatic content keys (the
default, ``key="auto"``: one hash of the function and the arguments per call, and
a key lookup per job in the store). The time covers the whole ``q.map`` call:
packing every call, one transaction, one durable commit. A baseline from the same
run is printed next to them: ``pickle.dumps`` of the same argument tuples, the
floor of any pickled message.

Run: ``python benchmarks/submit.py [--small]``
"""

from __future__ import annotations

import pickle
import time

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402

TARGET_NONE = 50_000
TARGET_AUTO = 25_000


def submit_rate(path: object, n: int, key: str | None) -> float:
    """jobs/s of one ``q.map(noop, range(n), key=key)`` on a fresh queue."""
    with nbqueue.Queue(path, workers=2, start=False) as q:
        q.map(bench_jobs.noop, range(3), key=key)  # function row written, code paths warm
        t0 = time.perf_counter()
        handles = q.map(bench_jobs.noop, range(3, n + 3), key=key)
        took = time.perf_counter() - t0
        counts = q.counts()
    if len(handles) != n or counts["ready"] != n + 3:
        raise RuntimeError(f"expected {n + 3} ready jobs, found {counts}")
    return n / took


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = 2_000 if args.small else 100_000
    header("submit: q.map into a stopped queue", args.small)
    with scratch() as root:
        fsync_probe(root)
        t0 = time.perf_counter()
        for i in range(n):
            pickle.dumps(((i,), {}), 5)
        floor = n / (time.perf_counter() - t0)
        print(f"  baseline: pickle.dumps of {n:,} argument tuples: {floor:,.0f} /s")
        none = submit_rate(root / "none", n, None)
        figure(f"q.map(noop, range({n:,}), key=None)", f"{none:,.0f} jobs/s "
               f"({1e6 / none:.1f} us/job, {none / floor:.3f} of the pickle floor)",
               f">= {TARGET_NONE:,} jobs/s", none >= TARGET_NONE)
        auto = submit_rate(root / "auto", n, "auto")
        figure(f"q.map(noop, range({n:,})) automatic keys", f"{auto:,.0f} jobs/s "
               f"({1e6 / auto:.1f} us/job, {auto / none:.2f} of key=None)",
               f">= {TARGET_AUTO:,} jobs/s", auto >= TARGET_AUTO)


if __name__ == "__main__":
    main()
