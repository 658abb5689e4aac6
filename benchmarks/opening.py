"""Opening a queue directory: reading without the write lock, and opening one new
directory from several processes at once.

1. Open an existing queue of N jobs and read its counts, as ``nbqueue status`` and
   ``Queue(path, start=False)`` do: read-only (``Store(path)``, no write), against the
   baseline measured in the same run, the same open followed by the switch to writing
   (diskcache's settings rows, the schema statements, recovery: what every open did
   before reading became read-only). Median of R rounds each.
2. P processes open one new directory at the same instant (started, then released by a
   barrier file), R rounds: how many opens failed (target 0), and the slowest open of a
   round against the median single open of a new directory.

Run: ``python benchmarks/opening.py [--small]``
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _common import figure, fsync_probe, header, parse_args, scratch

import nbqueue
from nbqueue.store import Store


def open_read(path: Path, *, write: bool) -> float:
    """Seconds to open ``path``, read its counts (and switch to writing if ``write``)."""
    t0 = time.perf_counter()
    store = Store(path)
    store.counts()
    if write:
        store.cache  # noqa: B018  (the switch to writing)
    took = time.perf_counter() - t0
    store.close()
    return took


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nbqueue.store import Store
    base, rounds, me = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    for r in range(rounds):
        (base / f"ready-{r}-{me}").touch()
        while not (base / f"go-{r}").exists():
            time.sleep(0.0002)
        t0 = time.perf_counter()
        try:
            Store(base / f"q{r}").close()
            print(f"ok {time.perf_counter() - t0:.6f}", flush=True)
        except Exception as exc:
            print(f"failed {type(exc).__name__}: {exc}", flush=True)
""")


def concurrent_opens(base: Path, processes: int, rounds: int) -> tuple[int, list[float]]:
    """(failed opens, the slowest open of each round in seconds)."""
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(base), str(rounds), str(me)],
                                 stdout=subprocess.PIPE, text=True) for me in range(processes)]
    for r in range(rounds):
        while not all((base / f"ready-{r}-{me}").exists() for me in range(processes)):
            time.sleep(0.0005)
        (base / f"go-{r}").touch()
    lines = [child.communicate(timeout=300)[0].splitlines() for child in children]
    failed = sum(1 for out in lines for line in out if not line.startswith("ok "))
    slowest = [max(float(out[r].split()[1]) for out in lines if out[r].startswith("ok "))
               for r in range(rounds)]
    return failed, slowest


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    header("opening a queue directory", args.small)
    jobs, rounds, processes = (200, 5, 3) if args.small else (100_000, 21, 3)
    with scratch() as where:
        fsync_probe(where)
        path = where / "q"
        with nbqueue.Queue(path, start=False) as q:
            q.map(abs, range(jobs), key=None)
            q.close()
        reads = [open_read(path, write=False) for _ in range(rounds)]
        writes = [open_read(path, write=True) for _ in range(rounds)]
        read, write = statistics.median(reads), statistics.median(writes)
        print(f"1. open an existing queue of {jobs:,} jobs and read its counts, median of "
              f"{rounds}:")
        print(f"  read-only: {1000 * read:.1f} ms; opened to write (baseline): "
              f"{1000 * write:.1f} ms")
        figure("read-only / baseline", f"{read / write:.2f}", "< 1", read < write)

        singles = []
        for i in range(rounds):
            t0 = time.perf_counter()
            Store(where / f"single{i}").close()
            singles.append(time.perf_counter() - t0)
        base = where / "concurrent"
        base.mkdir()
        failed, slowest = concurrent_opens(base, processes, rounds)
        single = statistics.median(singles)
        print(f"2. {processes} processes open one new directory at once, {rounds} rounds:")
        figure("failed opens", str(failed), "0", failed == 0)
        print(f"  slowest open of a round, median: {1000 * statistics.median(slowest):.1f} ms; "
              f"one process alone (baseline): {1000 * single:.1f} ms; ratio "
              f"{statistics.median(slowest) / single:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
