"""Job functions for the benchmarks, importable by worker processes.

The benchmark scripts put this directory on ``sys.path`` and on ``PYTHONPATH``
before they create a queue, so loky workers import this module by name and the
functions are stored by reference (module and qualname), as a user's library
function would be.
"""

from __future__ import annotations

import time
from typing import Any

import nbqueue


def noop(*args: Any, **kwargs: Any) -> None:
    """Do nothing: measures the queue, not the job."""
    return None


def ident(x: Any) -> Any:
    """Return the argument (a no-op whose result can be checked)."""
    return x


def blob(n: int) -> bytes:
    """``n`` bytes: a result of that size (64 kB and more are stored as value files)."""
    return b"r" * n


def started_at(*args: Any) -> float:
    """The wall-clock time at which the job body started."""
    return time.time()


def fan_out(n: int) -> int:
    """A generator handler: fan out ``n`` children, wait for all, reduce."""
    results = yield [nbqueue.call(ident, i) for i in range(n)]
    return sum(results)


# -- the crash campaign (crash_campaign.py): each execution leaves a start and an end line --


def _mark(log: str, what: str, tag: str) -> None:
    import os

    line = f"{what} {tag} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of an O_APPEND file: lines never interleave
    finally:
        os.close(fd)


def marked(log: str, tag: str, seconds: float = 0.0) -> str:
    """Log the start, sleep, log the end; return the tag."""
    _mark(log, "start", tag)
    if seconds:
        time.sleep(seconds)
    _mark(log, "end", tag)
    return tag


def marked_spawner(log: str, tag: str, n: int) -> str:
    """Spawn ``n`` marked children (exactly once, with the parent's completion)."""
    _mark(log, "start", tag)
    for i in range(n):
        nbqueue.spawn(marked, log, f"{tag}.s{i}", 0.01)
    _mark(log, "end", tag)
    return tag


def marked_fan_out(log: str, tag: str, n: int) -> int:
    """A generator: fan out ``n`` marked children, then pass a review gate, then reduce."""
    tags = yield [nbqueue.call(marked, log, f"{tag}.c{i}", 0.05) for i in range(n)]
    ok = yield nbqueue.review(f"check {tag}", payload=len(tags))
    return len(tags) if ok else -1


# -- write amplification (write_amplification.py) ----------------------------------------------


def busy_with(blob: bytes, seconds: float, every: float = 0.1) -> int:
    """Report progress and print a line every ``every`` seconds for ``seconds``; returns
    ``len(blob)`` (the argument is only carried)."""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        nbqueue.progress(i, message=f"step {i}")
        print(f"step {i}", flush=True)
        time.sleep(every)
    return len(blob)
