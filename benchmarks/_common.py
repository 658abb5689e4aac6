"""Helpers shared by the benchmark scripts: arguments, scratch directories, the fsync probe.

Every figure a script prints is a ratio against a baseline measured in the same run,
or an absolute number next to its target. Targets are printed, never enforced.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
FSYNC_FLOOR = 2000.0  # fsyncs/s below which the disk, not nbqueue, dominates


def use_bench_jobs() -> None:
    """Make ``bench_jobs`` importable here and in every worker process started later."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(HERE) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *parts])


def parse_args(description: str, argv: list[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    parser = parser or argparse.ArgumentParser(description=description)
    parser.add_argument("--small", action="store_true",
                        help="tiny sizes (CI: only checks that the script still works)")
    return parser.parse_args(argv)


@contextmanager
def scratch(prefix: str = "nbqueue-bench-") -> Iterator[Path]:
    """A fresh directory from ``tempfile.mkdtemp()``, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fsync_probe(directory: Path | None = None, n: int = 200) -> float:
    """Print and return fsyncs/s: ``n`` x (write 4 KiB + ``os.fsync``) in ``directory``
    (same filesystem as the queues). Warns when the disk is too slow to report."""
    with scratch("nbqueue-fsync-") if directory is None else _nothing(directory) as where:
        path = where / "fsync-probe"
        block = os.urandom(4096)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                os.write(fd, block)
                os.fsync(fd)
            took = time.perf_counter() - t0
        finally:
            os.close(fd)
            path.unlink()
    rate = n / took
    print(f"fsync probe: {n} x (write 4 KiB + os.fsync) in {where}: {rate:,.0f} fsyncs/s "
          f"({1000 * took / n:.2f} ms each)")
    if rate < FSYNC_FLOOR:
        print(f"WARNING: fsync probe below {FSYNC_FLOOR:,.0f}/s: the disk is slow or busy right "
              "now; repeat this run and do not report its figures.")
    return rate


@contextmanager
def _nothing(path: Path) -> Iterator[Path]:
    yield path


def header(title: str, small: bool) -> None:
    import nbqueue

    print(f"== {title} ({'--small: sizes for CI only, figures not meaningful' if small else 'full sizes'})")
    print(f"python {sys.version.split()[0]}, nbqueue from {Path(nbqueue.__file__).parent}, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSES TARGET"


def figure(label: str, value: str, target: str, ok: bool) -> None:
    print(f"  {label}: {value}   (target {target}: {verdict(ok)})")
