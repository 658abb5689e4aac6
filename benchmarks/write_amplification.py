"""Bytes written for a job with a large argument, against the argument's size.

A serving process (``python -m nbqueue worker DIR --workers 1``) runs one job whose
argument is ``SIZE`` random bytes; the job reports progress and prints a line every
0.1 s for ``SECONDS`` (so its row changes at its claim, at each heartbeat and live
progress write, about once a second, and at its end). This process submits it. From
``/proc/<pid>/io`` ``write_bytes`` (what reached the storage layer, after ``os.sync()``):
what the serving process wrote, what both processes wrote, and the size of the
write-ahead log afterwards; each divided by the argument's size. The baseline, measured
in the same run: the same job with a 10-byte argument (what such a job costs anyway).

Run: ``python benchmarks/write_amplification.py [--small]``
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from _common import figure, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402

TARGET = 2.0  # bytes written / argument bytes


def write_bytes(pid: int | str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def measure(path: Path, size: int, seconds: float) -> tuple[int, int, int]:
    """(bytes the serving process wrote, bytes both wrote, WAL size) for one job."""
    nbqueue.Queue(path, start=False).close()
    worker = subprocess.Popen([sys.executable, "-m", "nbqueue", "worker", str(path),
                               "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        q = nbqueue.Queue(path, start=False)
        q.submit(bench_jobs.ident, 1, key=None).result(timeout=120)  # the worker is up
        blob = os.urandom(size)
        os.sync()
        ours, theirs = write_bytes("self"), write_bytes(worker.pid)
        h = q.submit(bench_jobs.busy_with, blob, seconds, key=None)
        if h.result(timeout=seconds + 300) != size:
            raise RuntimeError("the job did not see its whole argument")
        os.sync()
        served = write_bytes(worker.pid) - theirs
        total = served + write_bytes("self") - ours
        wal = (path / "cache.db-wal").stat().st_size
        q.close()
    finally:
        worker.terminate()
        worker.communicate(timeout=60)
    return served, total, wal


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    size, seconds = (2_000_000, 2.0) if args.small else (50_000_000, 20.0)
    header("write amplification: a job with a large argument", args.small)
    mb = 1e6
    with scratch() as root:
        t0 = time.perf_counter()
        b_served, b_total, b_wal = measure(root / "baseline", 10, seconds)
        served, total, wal = measure(root / "large", size, seconds)
        print(f"a {seconds:g} s job reporting progress every 0.1 s, one worker; took "
              f"{time.perf_counter() - t0:.1f} s in all")
        print(f"  baseline, 10-byte argument: serving process wrote {b_served / mb:.2f} MB, "
              f"both {b_total / mb:.2f} MB, WAL {b_wal / mb:.2f} MB")
        print(f"  {size / mb:g} MB argument: serving process wrote {served / mb:.2f} MB, both "
              f"{total / mb:.2f} MB, WAL {wal / mb:.2f} MB")
        print(f"  above the baseline: serving process {(served - b_served) / mb:.2f} MB, "
              f"both {(total - b_total) / mb:.2f} MB")
        figure("bytes the serving process wrote / argument bytes", f"{served / size:.2f}",
               f"<= {TARGET:g}", served / size <= TARGET)
        figure("bytes both processes wrote / argument bytes", f"{total / size:.2f}",
               f"<= {TARGET:g}", total / size <= TARGET)
        figure("WAL size afterwards / argument bytes", f"{wal / size:.3f}", "< 0.5",
               wal / size < 0.5)


if __name__ == "__main__":
    main()
