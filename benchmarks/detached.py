"""The detached service: submit-to-start latency from a client process, and idle CPU.

1. A service serves a fresh directory (``Queue(path, detach=True, workers=2)`` starts
   it: ``python -m nbqueue.daemon``, a process of its own). This process is a client
   with no dispatcher: it submits ``started_at`` (the job returns ``time.time()`` at its
   start) and reads the result from the store. Latency = job start - time just before
   the ``submit`` call (same machine clock), so it includes the submit's own durable
   commit and the service noticing it by polling SQLite's ``data_version`` (``POLL`` in
   ``nbqueue/dispatcher.py``). Samples are spaced by a random pause, so they do not lock
   step with the poll period.
2. Idle CPU: the service process and its worker processes (psutil ``cpu_times``),
   over a few seconds with nothing to do, as a percentage of one core.

Run: ``python benchmarks/detached.py [--small]``
"""

from __future__ import annotations

import random
import statistics
import time

from _common import figure, fsync_probe, header, parse_args, percentile, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402
import psutil  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.service import stop_service  # noqa: E402


def latencies(q: nbqueue.Queue, samples: int) -> list[float]:
    """Submit-to-start latencies (seconds) of ``samples`` jobs, one at a time."""
    out = []
    for _ in range(samples):
        time.sleep(random.uniform(0.02, 0.12))
        t0 = time.time()
        h = q.submit(bench_jobs.started_at, key=None)
        out.append(h.result(timeout=60) - t0)
    return out


def idle_cpu(pid: int, seconds: float) -> tuple[float, float, int]:
    """(service process, service + its workers) CPU as a fraction of one core, and how
    many processes that counts."""
    service = psutil.Process(pid)

    def times() -> tuple[float, float, int]:
        own = service.cpu_times()
        mine = own.user + own.system
        total = mine
        children = service.children(recursive=True)
        for child in children:
            try:
                t = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return mine, total, 1 + len(children)

    time.sleep(1.0)  # let the last job's housekeeping pass
    own0, all0, _ = times()
    t0 = time.perf_counter()
    time.sleep(seconds)
    own1, all1, count = times()
    took = time.perf_counter() - t0
    return (own1 - own0) / took, (all1 - all0) / took, count


def ms(x: float) -> str:
    return f"{1000 * x:.1f} ms"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    samples, idle = (8, 1.0) if args.small else (100, 10.0)
    header("detached service: submit from a client process to job start; idle CPU", args.small)
    with scratch() as root:
        fsync_probe(root)
        path = root / "q"
        try:
            t0 = time.perf_counter()
            q = nbqueue.Queue(path, detach=True, workers=2)
            started = time.perf_counter() - t0
            service = q.service
            assert service is not None and q.dispatcher is None
            print(f"  Queue(path, detach=True, workers=2) started the service (pid "
                  f"{service.pid}) and returned in {started:.2f} s")
            q.submit(bench_jobs.noop, key=None).result(timeout=60)  # its workers are up
            lat = latencies(q, samples)
            p50, p95 = statistics.median(lat), percentile(lat, 95)
            print(f"  {samples} jobs from this client process: p95 {ms(p95)}, max {ms(max(lat))}")
            figure("client submit -> job start in the service, p50", ms(p50), "<= 50 ms",
                   p50 <= 0.050)
            own, total, count = idle_cpu(service.pid, idle)
            print(f"  idle for {idle:g} s: the service process alone {100 * own:.2f}% of a core")
            figure(f"idle service CPU ({count} processes: the service and its workers)",
                   f"{100 * total:.2f}% of a core", "< 1%", total < 0.01)
            q.close()
        finally:
            stop_service(path)


if __name__ == "__main__":
    main()
