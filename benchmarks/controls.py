"""What schedules, pauses and rate limits cost the jobs they do not concern.

A claim reads one flag for pauses and rate limits; a dispatcher reads a schedule's next
firing once per change made by another process. Two queues, measured in the same run:
*plain*, and *controlled*, which has a schedule (next firing in a day), a paused job name
and a rate-limited resource, none of which the measured jobs use.

- end to end: ``q.map(noop, range(N))`` + ``q.join()`` through each queue (workers=2,
  durable commits), interleaved rounds (which goes first alternates), the median of the
  rounds' ratios;
- claims alone: ``Store.claim`` of N ready jobs 50 at a time, no workers (what a
  dispatcher's transaction costs), the two queues' transactions in turns, the median
  ratio of the rounds.

Run: ``python benchmarks/controls.py [--small]``
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs
from throughput import nbqueue_throughput

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.store import Owner  # noqa: E402

ROUNDS = 6
TARGET = 0.95  # controlled / plain


def prepare(path: Path, controlled: bool) -> None:
    """A new queue at ``path``; ``controlled``: with a schedule, a pause and a rate."""
    with nbqueue.Queue(path, start=False) as q:
        if controlled:
            q.schedule(bench_jobs.noop, 0, every="1d", name="nightly")
            q.pause(name="other")
            q.set_resource("api", rate="10/min")
        q.close()


def claim_ratio(plain: Path, controlled: Path, n: int, batch: int = 50) -> tuple[float, float]:
    """Claims/s of ``n`` ready jobs in each queue, ``batch`` per transaction (no worker
    runs them), the two queues' transactions taken in turns (which goes first
    alternates), so that the machine's drift hits both alike."""
    queues = [nbqueue.Queue(path, start=False) for path in (plain, controlled)]
    owner = str(Owner.current())
    took, claimed = [0.0, 0.0], [0, 0]
    try:
        for q in queues:
            q.map(bench_jobs.noop, range(n), key=None)
        turn = 0
        while min(claimed) < n:
            turn += 1
            for i in (0, 1) if turn % 2 else (1, 0):
                t0 = time.perf_counter()
                got = queues[i]._store.claim(owner, batch, lease=3600)
                took[i] += time.perf_counter() - t0
                claimed[i] += len(got)
                if not got and claimed[i] < n:
                    raise RuntimeError(f"claimed {claimed[i]} of {n}")
    finally:
        for q in queues:
            q.close()
    return n / took[0], n / took[1]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    n = 200 if args.small else 5000
    claims = 1000 if args.small else 20000
    rounds = 1 if args.small else ROUNDS
    header("controls: schedules, pauses and rates left unused by the jobs measured", args.small)
    with scratch() as root:
        fsync_probe(root)
        ends, claim_ratios = [], []
        for i in range(rounds):
            # which goes first alternates: the second of a pair runs on a warmer machine
            order = ("plain", "controlled") if i % 2 == 0 else ("controlled", "plain")
            rates = {}
            for kind in order:
                prepare(root / f"{kind}{i}", kind == "controlled")
                rates[kind] = nbqueue_throughput(root / f"{kind}{i}", n)
            ends.append(rates["controlled"] / rates["plain"])
            for kind in order:
                prepare(root / f"claims-{kind}{i}", kind == "controlled")
            plain, controlled = claim_ratio(root / f"claims-plain{i}",
                                            root / f"claims-controlled{i}", claims)
            claimed = {"plain": plain, "controlled": controlled}
            claim_ratios.append(controlled / plain)
            print(f"  round {i + 1}: end to end {rates['plain']:,.0f} vs {rates['controlled']:,.0f}"
                  f" jobs/s (ratio {ends[-1]:.2f}); claims {claimed['plain']:,.0f} vs "
                  f"{claimed['controlled']:,.0f} /s (ratio {claim_ratios[-1]:.2f})")
        ratio = statistics.median(ends)
        figure(f"end to end, controlled / plain, median of {rounds} ({n} no-op jobs)",
               f"{ratio:.2f}", f">= {TARGET}", ratio >= TARGET)
        ratio = statistics.median(claim_ratios)
        figure(f"claims alone, controlled / plain, median of {rounds} ({claims} jobs, 50 per "
               "transaction)", f"{ratio:.2f}", f">= {TARGET}", ratio >= TARGET)


if __name__ == "__main__":
    main()
