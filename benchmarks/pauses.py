"""Random SIGSTOPs of a process that streams short jobs: how often they catch it holding
the queue's write lock, and how often across a wait (which freezes the directory).

A serving process (``workers=2``) drains no-op jobs. This process stops it (SIGSTOP) at
random moments, ``STOPS`` times, and each time, before SIGCONT:

- probes SQLite's write lock as any nbqueue writer would get it: queued at the
  directory's turnstile (a streaming dispatcher gives way to it), then ``BEGIN
  IMMEDIATE`` with a 0.3 s timeout. If it fails, the stopped process holds the lock;
- if so, reads the system call its dispatcher thread is stopped in
  (``/proc/PID/task/TID/syscall``): a wait (poll, select, a sleep) means it held a
  write transaction open across a wait, which no one else can end while it is stopped.

Figures: the share of stops that caught the lock held across a wait (target 0), and,
for information, the share caught inside a commit (SQLite's single writer holds its
lock while it commits, fsync included: this share is the time the dispatcher spends
committing, so it grows with the disk's fsync time).

Run: ``python benchmarks/pauses.py [--small]``
"""

from __future__ import annotations

import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from _common import figure, fsync_probe, header, parse_args, scratch, use_bench_jobs

use_bench_jobs()

import bench_jobs  # noqa: E402

import nbqueue  # noqa: E402
from nbqueue.store.turn import Turnstile  # noqa: E402

STOPS = 200
# the system calls that wait (poll, select, sleeps), by machine
WAITS = {"x86_64": {7, 23, 35, 230, 232, 270, 271, 281},
         "aarch64": {22, 72, 73, 101, 115}}.get(platform.machine(), set())

SERVE = """
import sys, nbqueue
with nbqueue.Queue(sys.argv[1], workers=2) as q:
    print(q.dispatcher._thread.native_id, flush=True)
    sys.stdin.read()  # until this process closes it
"""


def holds_write_lock(path: Path) -> bool:
    """Whether another process holds the queue's write lock longer than a commit takes."""
    turnstile = Turnstile(path)
    fd = turnstile.take()  # None: a writer stopped while queued; go on unaided
    con = sqlite3.connect(path / "cache.db", timeout=0.3, isolation_level=None)
    try:
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return True
        con.execute("ROLLBACK")
        return False
    finally:
        con.close()
        turnstile.leave(fd)


def system_call(pid: int, tid: int) -> int | None:
    """The system call thread ``tid`` of ``pid`` is in (-1: none), or None if unreadable."""
    try:
        first = Path(f"/proc/{pid}/task/{tid}/syscall").read_text().split()[0]
        return int(first)
    except (OSError, IndexError, ValueError):
        return None


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def campaign(path: Path, stops: int) -> tuple[int, int, int]:
    """(stops, caught holding the lock, of those: across a wait)."""
    with nbqueue.Queue(path, start=False) as q:
        q.map(bench_jobs.noop, range(20_000), key=None)
        # a long lease: no renewal (a transaction of another thread) during the campaign
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env={**os.environ, "NBQUEUE_LEASE": "3600"})
        try:
            tid = int(proc.stdout.readline())  # type: ignore[union-attr]
            while q.counts()["done"] < 1000:
                time.sleep(0.01)
            rng = random.Random(0)
            caught = waiting = 0
            for _ in range(stops):
                if q.counts()["ready"] < 5000:
                    q.map(bench_jobs.noop, range(20_000), key=None)
                time.sleep(rng.uniform(0.0, 0.05))
                os.kill(proc.pid, signal.SIGSTOP)
                try:
                    while not stopped(proc.pid):
                        time.sleep(0.001)
                    if holds_write_lock(path):
                        caught += 1
                        waiting += system_call(proc.pid, tid) in WAITS
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
        finally:
            proc.communicate(timeout=120)  # closes its stdin: it stops its queue and exits
    return stops, caught, waiting


def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    stops = 20 if args.small else STOPS
    header("pauses: random SIGSTOPs of a process streaming short jobs", args.small)
    with scratch() as root:
        fsync_probe(root)
        n, caught, waiting = campaign(root / "q", stops)
        print(f"{n} SIGSTOPs at random moments (0-50 ms apart) of a process serving no-op jobs "
              "with workers=2; probe: the turnstile, then BEGIN IMMEDIATE (0.3 s)")
        print(f"  caught holding the write lock: {caught} ({100 * caught / n:.0f}%), of which "
              f"its dispatcher thread was inside a commit: {caught - waiting}, in a wait: "
              f"{waiting}")
        figure("stops that caught the write lock held across a wait",
               f"{waiting} of {n}", "0", waiting == 0)


if __name__ == "__main__":
    main()
