"""The review page's costs: what a poll with nothing new costs the server, and what the
registry adds to opening a queue.

1. Poll: ``ReviewDesk.state(since=version)`` when nothing changed (what every open page
   asks once a second), against its floor measured in the same run, ``store.changes()``
   on each queue (one small read). Several queues with a few pending reviews each.
2. A poll after a change in every queue (any commit, a heartbeat too, bumps the change
   counter): the pending reviews are read again (payloads included) and, being the
   same, answered "unchanged".
3. Opening a queue: ``Queue(path, start=False)`` with the registry against
   ``NBQUEUE_REGISTRY=off``, on an existing queue (the registry already lists it).

Run: ``python benchmarks/review_page.py [--small]``
"""

from __future__ import annotations

import os
import statistics
import time

from _common import figure, header, parse_args, scratch

import nbqueue
from nbqueue.web.desk import ReviewDesk


def per_call(fn, n: int) -> float:
    """Median seconds per call of ``fn`` over 5 rounds of ``n`` calls."""
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - t0) / n)
    return statistics.median(rounds)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    header("review page", args.small)
    n_queues, n_gates, n = (2, 2, 20) if args.small else (5, 4, 300)
    with scratch() as where:
        os.environ["NBQUEUE_REGISTRY"] = str(where / "queues.json")
        queues = [nbqueue.Queue(where / f"q{i}", start=False) for i in range(n_queues)]
        for q in queues:
            for g in range(n_gates):
                q.review(f"gate {g}", payload="<b>report</b> " * 200,
                         fields={"threshold": 0.5, "note": str}, key=None)
        desk = ReviewDesk(roots=[where])
        version = desk.state()["version"]
        floor = per_call(lambda: [q.changes() for q in queues], n)
        idle = per_call(lambda: desk.state(since=version), n)
        print(f"{n_queues} queues x {n_gates} pending reviews")
        print(f"  changes() on each queue (floor): {floor * 1e3:.3f} ms")
        print(f"  a poll, nothing new:             {idle * 1e3:.3f} ms = {idle / floor:.1f}x "
              "the floor")
        figure("poll with nothing new, per open page and second",
               f"{idle * 1e3:.2f} ms", "< 5 ms", idle < 0.005)

        def after_change() -> None:
            desk._seen.clear()  # as after a commit: every queue's reviews are read again
            desk.state(since=version)

        changed = per_call(after_change, max(n // 10, 2))
        print(f"  a poll after a change (reviews re-read, same answer): {changed * 1e3:.3f} ms "
              f"= {changed / floor:.1f}x the floor")
        desk.close()
        for q in queues:
            q.close()

        path = where / "q0"
        with_registry = per_call(lambda: nbqueue.Queue(path, start=False).close(), n // 4 or 2)
        os.environ["NBQUEUE_REGISTRY"] = "off"
        without = per_call(lambda: nbqueue.Queue(path, start=False).close(), n // 4 or 2)
        print(f"  Queue(path, start=False): {with_registry * 1e3:.2f} ms with the registry, "
              f"{without * 1e3:.2f} ms without: {with_registry / without:.2f}x")


if __name__ == "__main__":
    main()
