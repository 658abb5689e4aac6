"""Where the time of a dispatch cycle goes while short jobs stream (a diagnostic).

While no-op jobs stream through ``workers=2``, each cycle of the dispatcher hands each
worker two jobs (one to run, one ahead: the redo bound allows no more, see
docs/concepts.md, "Short jobs"), waits for their outcomes, commits them (one fsync) and
hands out the next. So the throughput is about ``2 x workers`` jobs per cycle, and a
cycle is the sum of four stretches, timed here by watching the dispatcher's own calls
(its slots' ``flush`` and ``collect``, its ``_commit``):

- *workers*: from the hand-out to the last outcome of the cycle read back (a worker
  wakes, runs its two jobs, sends both outcomes, the dispatcher wakes; the slower of the
  two workers counts; a refill of the reserve may keep the dispatcher busy meanwhile);
- *to commit*: from the last outcome read to the start of the commit;
- *commit*: the transaction that settles the outcomes, its fsync included (the fsync
  probe beside it says what one fsync costs on this disk);
- *to hand-out*: from the end of the commit to the next jobs sent.

Each stretch is printed as its median and mean over the cycles of the run, beside
jobs/s and raw loky's jobs/s measured in the same run (``throughput.py`` is the
benchmark of record; this script says where a change of its figure comes from).

Run: ``python benchmarks/cycle.py [--small]``
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from _common import fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402
from throughput import WARMUP, loky_throughput  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue import dispatcher, executors  # noqa: E402

STRETCHES = ("workers", "to commit", "commit", "to hand-out")


class Timeline:
    """Moments of the dispatcher's calls while ``on``: ("flush" | "collect" | "commit" |
    "committed", perf_counter)."""

    def __init__(self) -> None:
        self.on = False
        self.events: list[tuple[str, float]] = []

    def watch(self) -> None:
        slot_flush, slot_collect = executors.LokySlot.flush, executors.LokySlot.collect
        commit = dispatcher.Dispatcher._commit
        events, clock = self.events, time.perf_counter
        timeline = self

        def flush(slot: Any) -> None:
            sent = bool(slot._unsent)
            slot_flush(slot)
            if timeline.on and sent:
                events.append(("flush", clock()))

        def collect(slot: Any) -> Any:
            ended = slot_collect(slot)
            if timeline.on and ended:
                events.append(("collect", clock()))
            return ended

        def timed_commit(self: Any, *args: Any) -> Any:
            if timeline.on:
                events.append(("commit", clock()))
            try:
                return commit(self, *args)
            finally:
                if timeline.on:
                    events.append(("committed", clock()))

        executors.LokySlot.flush = flush  # type: ignore[method-assign]
        executors.LokySlot.collect = collect  # type: ignore[method-assign]
        dispatcher.Dispatcher._commit = timed_commit  # type: ignore[method-assign]

    def stretches(self) -> dict[str, list[float]]:
        """Per cycle (hand-out, outcomes, commit, next hand-out), each stretch in µs."""
        out: dict[str, list[float]] = {name: [] for name in STRETCHES}
        handed = last = began = ended = None
        for kind, at in self.events:
            if kind == "flush":
                if None not in (handed, last, began, ended) and handed < last < began < ended:
                    out["workers"].append(last - handed)
                    out["to commit"].append(began - last)
                    out["commit"].append(ended - began)
                    out["to hand-out"].append(at - ended)
                if ended is not None or handed is None:  # the first flush after a commit
                    handed, last, began, ended = at, None, None, None
            elif kind == "collect":
                last = at
            elif kind == "commit":
                began = at
            elif kind == "committed":
                ended = at
        return {name: [1e6 * s for s in values] for name, values in out.items()}


def run(path: Any, n: int, timeline: Timeline) -> float:
    with nbqueue.Queue(path, workers=2) as q:
        for h in q.map(bench_jobs.noop, range(WARMUP), key=None):
            h.result(timeout=120)
        q.join(timeout=120)
        timeline.events.clear()
        timeline.on = True
        t0 = time.perf_counter()
        q.map(bench_jobs.noop, range(n), key=None)
        q.join(timeout=600)
        took = time.perf_counter() - t0
        timeline.on = False
    return n / took


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = 300 if args.small else 10_000
    header("cycle: where a dispatch cycle's time goes while no-op jobs stream", args.small)
    timeline = Timeline()
    timeline.watch()
    with scratch() as root:
        fsync_probe(root)
        raw = loky_throughput(n)
        ours = run(root / "q", n, timeline)
    found = timeline.stretches()
    cycles = len(found["workers"])
    print(f"{n} no-op jobs, workers=2, q.map then q.join(): {ours:,.0f} jobs/s; raw loky "
          f"(ProcessPoolExecutor(max_workers=2)) {raw:,.0f} jobs/s in the same run: "
          f"ratio {ours / raw:.2f}")
    if not cycles:
        print("no complete cycle seen (too few jobs)")
        return
    print(f"{cycles} cycles timed, {n / cycles:.1f} jobs per cycle; per cycle, in µs:")
    total = 0.0
    for name in STRETCHES:
        values = found[name]
        mean = statistics.fmean(values)
        total += mean
        print(f"  {name:<12} median {statistics.median(values):6.0f}   mean {mean:6.0f}")
    print(f"  {'sum':<12} {'':13} mean {total:6.0f}   (cycles timed: {cycles * ours / n:,.0f} "
          f"per second; the stretches' means add up to {1e6 / total:,.0f} per second)")

if __name__ == "__main__":
    main()
