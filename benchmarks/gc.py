"""Retention and disk space: how long a gc holds the write lock, and what it gives back.

One queue directory is built, then copied for each measure: ``N`` ended jobs (cancelled as
they are submitted, since they need a rejected gate; a 1 kB argument each), ``A`` active
jobs (waiting for an unavailable resource: ``forget``'s rules read what they need in every
transaction) and ``L`` jobs run for real, each with a 64 kB result (a value file).

- baseline: ``q.forget()`` of every ended job, one transaction: the write lock held
  throughout, as before this change;
- ``q.gc(older_than=0)``: the same jobs forgotten in transactions of 500;
- the keeper: a dispatcher serving a queue with ``keep={"cancelled": "1s"}`` (and
  ``$NBQUEUE_KEEP_EVERY=1``) forgets them in the background.

Printed: the longest time each held the write lock (``Store.longest_holds``), as a ratio
to the baseline's; the bytes the gc gave back over those the ended jobs' results,
arguments and logs held (``du``: it gives back their rows and indexes too, so at least
1); how long the keeper took;
and, as an absolute figure for docs/concepts.md, the seconds a VACUUM of the full
``cache.db`` took per 100 MB.

Run: ``python benchmarks/gc.py [--small]``
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from _common import figure, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.store import cleanup  # noqa: E402

TARGET = 0.1  # the longest hold of a gc / that of a forget in one transaction


def build(path: Path, n: int, active: int, large: int) -> None:
    with nbqueue.Queue(path, workers=2) as q:
        if large:
            q.map(bench_jobs.blob, [64_000] * large, key=None)
            q.join(timeout=600)
        q.set_resource("closed", available=False)
        q.map(bench_jobs.noop, range(active), resources=["closed"], key=None)
        no = q.review("no")
        q.reject(no)
        for start in range(0, n, 20_000):
            q.map(bench_jobs.noop, [os.urandom(1000) for _ in range(min(20_000, n - start))],
                  needs=[no], key=None)


def on_disk(path: Path) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(path) for f in fs)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n, active, large = (2_000, 200, 5) if args.small else (100_000, 100_000, 60)
    header("gc: the write lock, and the space given back", args.small)
    with scratch() as root:
        t0 = time.perf_counter()
        build(root / "built", n, active, large)
        print(f"{n:,} ended jobs, {active:,} active ones, {large} large results: built in "
              f"{time.perf_counter() - t0:.1f} s, {on_disk(root / 'built') / 1e6:.1f} MB")
        for name in ("forget", "gc", "keeper", "vacuum"):
            shutil.copytree(root / "built", root / name)

        q = nbqueue.Queue(root / "forget", start=False)
        t0 = time.perf_counter()
        forgotten = q.forget()
        took = time.perf_counter() - t0
        baseline = max(q._store.longest_holds.values())
        q.close()
        print(f"  baseline, q.forget(): {int(forgotten):,} jobs in {took:.2f} s, the write lock "
              f"held {baseline * 1000:.0f} ms at once")

        q = nbqueue.Queue(root / "gc", start=False)
        before = on_disk(root / "gc")
        held_by_ended = sum(s.total for state, s in q.du().states.items()
                            if state not in ("waiting", "ready", "running", "review"))
        t0 = time.perf_counter()
        done = q.gc(older_than=0)
        took = time.perf_counter() - t0
        held = max(q._store.longest_holds.values())
        q.close()
        after = on_disk(root / "gc")
        print(f"  q.gc(older_than=0): {done.forgotten:,} jobs in {took:.2f} s, the write lock "
              f"held {held * 1000:.0f} ms at most; {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB"
              f" ({done.vacuum})")
        figure("longest hold, gc / forget in one transaction", f"{held / baseline:.3f}",
               f"<= {TARGET:g}", held / baseline <= TARGET)
        given = (before - after) / held_by_ended
        figure("bytes given back / bytes the ended jobs held (results, arguments, logs)",
               f"{given:.2f}", ">= 1", given >= 1)

        os.environ["NBQUEUE_KEEP_EVERY"] = "1"
        t0 = time.perf_counter()
        with nbqueue.Queue(root / "keeper", workers=1, keep={"cancelled": "1s"}) as q:
            while q.counts()["cancelled"]:
                if time.perf_counter() - t0 > 1200:
                    raise RuntimeError("the keeper did not forget the jobs in 20 minutes")
                time.sleep(0.1)
            took = time.perf_counter() - t0
            kept = q._store.longest_holds.get("nbqueue-keeper", 0.0)
        print(f"  the keeper: {n:,} jobs forgotten {took:.1f} s after the dispatcher started "
              f"(its first pass within 1 s), the write lock held {kept * 1000:.0f} ms at most")
        figure("longest hold, keeper / forget in one transaction", f"{kept / baseline:.3f}",
               f"<= {TARGET:g}", kept / baseline <= TARGET)

        q = nbqueue.Queue(root / "vacuum", start=False)
        size = (root / "vacuum" / "cache.db").stat().st_size
        t0 = time.perf_counter()
        cleanup.vacuum(q._store)
        took = time.perf_counter() - t0
        q.close()
        print(f"  VACUUM of a {size / 1e6:.0f} MB cache.db: {took:.2f} s, "
              f"{took / (size / 1e8):.2f} s per 100 MB (absolute: docs/concepts.md quotes it)")


if __name__ == "__main__":
    main()
