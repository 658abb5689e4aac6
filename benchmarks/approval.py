"""How fast an approval made in another process releases the job that waits for it.

A queue is served by this process's dispatcher. Another process (started once, like
``nbqueue approve`` but without paying an interpreter start per sample) approves a
gate on request and reports when its approval committed; a job that needs the gate
returns ``time.time()`` at its start. The figure is job start - approval commit: what
a person sees after clicking Approve in a panel of another kernel, or running
``nbqueue approve``. It is printed next to the dispatcher's polling interval, the
floor for changes made by other processes.

Run: ``python benchmarks/approval.py [--small]``
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from _common import fsync_probe, header, parse_args, percentile, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.dispatcher import POLL  # noqa: E402

APPROVER = """
import sys, time, nbqueue
q = nbqueue.Queue(sys.argv[1], start=False)
print("ready", flush=True)
for line in sys.stdin:
    q.approve(line.strip(), comment="benchmark")
    print(repr(time.time()), flush=True)
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    samples = 10 if args.small else 100
    header("approval from another process -> dependent job starts", args.small)
    with scratch() as tmp:
        fsync_probe(tmp)
        with nbqueue.Queue(tmp / "q", workers=2) as q:
            q.submit(bench_jobs.noop, key=None).result(timeout=60)  # warm the workers
            approver = subprocess.Popen([sys.executable, "-c", APPROVER, str(q.path)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert approver.stdin and approver.stdout
            assert approver.stdout.readline().strip() == "ready"
            delays = []
            for i in range(samples):
                gate = q.review(f"gate {i}", key=None)
                job = q.submit(bench_jobs.started_at, needs=[gate], key=None)
                time.sleep(0.02)  # the dispatcher is idle when the approval lands
                approver.stdin.write(gate.id + "\n")
                approver.stdin.flush()
                committed = float(approver.stdout.readline())
                delays.append(job.result(timeout=60) - committed)
            approver.stdin.close()
            approver.wait(timeout=60)
    delays.sort()
    p50 = statistics.median(delays) * 1000
    p99 = percentile(delays, 99) * 1000
    print(f"  approval committed -> dependent job started, {samples} samples: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays[-1] * 1000:.1f} ms")
    print(f"  (the dispatcher notices other processes' changes by polling every "
          f"{POLL * 1000:.0f} ms; p50 / poll interval = {p50 / (POLL * 1000):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
