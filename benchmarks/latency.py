"""Latency of an idle dispatcher, and what idling costs.

1. In-process: an idle started queue; ``q.submit(started_at, key=None)``, where the
   job returns ``time.time()`` at its start; latency = job start - time just before
   the ``submit`` call (so it includes the submit's own durable commit). Samples are
   spaced by a random pause, so the dispatcher is idle each time (the figure with the
   target); the same without pauses is printed for comparison (after a pause, on an
   idle VM, the first fsync and the thread wake-ups cost more).
2. From another process: a subprocess opens the same directory with ``start=False``
   and submits on request; this process's dispatcher notices the change by polling
   (``POLL`` in ``nbqueue/dispatcher.py``).
3. Idle CPU: the dispatcher thread's CPU time (and the whole process's) over a few
   seconds with nothing to do.

Run: ``python benchmarks/latency.py [--small]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from _common import figure, fsync_probe, header, parse_args, percentile, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402
import psutil  # noqa: E402

import nbqueue  # noqa: E402


def in_process(q: nbqueue.Queue, samples: int,
               pause: bool = True) -> tuple[list[float], list[float]]:
    """(submit-to-start latencies, submit call durations), seconds."""
    latencies, submits = [], []
    for _ in range(samples):
        if pause:
            time.sleep(random.uniform(0.01, 0.03))
        t0 = time.time()
        h = q.submit(bench_jobs.started_at, key=None)
        t1 = time.time()
        started = h.result(timeout=60)
        latencies.append(started - t0)
        submits.append(t1 - t0)
    return latencies, submits


def child(path: str) -> None:
    """The other process: submit one job per line read, answer ``id t0``."""
    use_bench_jobs()
    q = nbqueue.Queue(path, workers=1, start=False)
    for _line in sys.stdin:
        t0 = time.time()
        h = q.submit(bench_jobs.started_at, key=None)
        print(h.id, repr(t0), flush=True)
    q.close()


def cross_process(q: nbqueue.Queue, samples: int) -> list[float]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(q.path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    assert proc.stdin is not None and proc.stdout is not None
    latencies = []
    try:
        for _ in range(samples):
            # random spacing, so that submits do not lock step with the poll period
            time.sleep(random.uniform(0.02, 0.12))
            proc.stdin.write("go\n")
            proc.stdin.flush()
            job_id, t0 = proc.stdout.readline().split()
            started = q.job(job_id).result(timeout=60)
            latencies.append(started - float(t0))
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    return latencies


def idle_cpu(q: nbqueue.Queue, seconds: float) -> tuple[float, float]:
    """(dispatcher thread, whole process) CPU as a fraction of one core."""
    d = q.dispatcher
    assert d is not None and d._thread is not None
    tid = d._thread.native_id
    me = psutil.Process()

    def thread_time() -> float:
        for t in me.threads():
            if t.id == tid:
                return t.user_time + t.system_time
        raise RuntimeError("dispatcher thread not found")

    def process_time() -> float:
        times = me.cpu_times()
        return times.user + times.system

    time.sleep(1.0)  # let the last job's housekeeping pass
    th0, pr0, t0 = thread_time(), process_time(), time.perf_counter()
    time.sleep(seconds)
    th1, pr1, t1 = thread_time(), process_time(), time.perf_counter()
    return (th1 - th0) / (t1 - t0), (pr1 - pr0) / (t1 - t0)


def ms(x: float) -> str:
    return f"{1000 * x:.2f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = parse_args("", argv, parser)
    if args.child:
        child(args.child)
        return
    n_in, n_cross, idle = (20, 5, 0.5) if args.small else (200, 60, 5.0)
    header("latency: idle dispatcher, submit to job start", args.small)
    with scratch() as root:
        fsync_probe(root)
        with nbqueue.Queue(root / "q", workers=2) as q:
            q.submit(bench_jobs.noop, key=None).result(timeout=60)  # workers started
            lat, sub = in_process(q, n_in)
            print(f"  in-process, {n_in} samples: submit() call itself p50 "
                  f"{ms(statistics.median(sub))}, p99 {ms(percentile(sub, 99))}")
            p50, p99 = statistics.median(lat), percentile(lat, 99)
            figure("in-process submit-to-start p50", ms(p50), "<= 2 ms", p50 <= 0.002)
            figure("in-process submit-to-start p99", ms(p99), "<= 10 ms", p99 <= 0.010)
            hot, hot_sub = in_process(q, n_in, pause=False)
            print(f"  for comparison, back to back (no pause, so the process and disk are not "
                  f"idle): submit-to-start p50 {ms(statistics.median(hot))}, p99 "
                  f"{ms(percentile(hot, 99))}; submit() call p50 "
                  f"{ms(statistics.median(hot_sub))}")
            cross = cross_process(q, n_cross)
            c50 = statistics.median(cross)
            print(f"  from another process, {n_cross} samples: p99 {ms(percentile(cross, 99))}, "
                  f"max {ms(max(cross))}")
            figure("cross-process submit-to-start p50", ms(c50), "<= 50 ms", c50 <= 0.050)
            thread, process = idle_cpu(q, idle)
            print(f"  idle for {idle:g} s: whole process {100 * process:.2f}% of a core "
                  "(dispatcher, channel and loky's threads)")
            figure("idle dispatcher thread CPU", f"{100 * thread:.2f}% of a core", "< 2%",
                   thread < 0.02)


if __name__ == "__main__":
    main()
