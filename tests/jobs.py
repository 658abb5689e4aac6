"""Job functions that cross process boundaries in tests (importable by workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbqueue


def add(a, b):
    return a + b


def square(x):
    return x * x


def noop(*args, **kwargs):
    return None


def boom(message="boom"):
    raise ValueError(message)


def sleepy(seconds, value=None):
    time.sleep(seconds)
    return value


def record(path, value, seconds=0.0):
    """Append a start line, sleep, append an end line (one file per job run)."""
    log = Path(path)
    with log.open("a") as f:
        f.write(f"start {value} {os.getpid()} {time.time()}\n")
    time.sleep(seconds)
    with log.open("a") as f:
        f.write(f"end {value} {os.getpid()} {time.time()}\n")
    return value


def chatty(n):
    for i in range(n):
        print(f"line {i}")
        nbqueue.progress(i + 1, n, "printing")
    return n


def suicide():
    os._exit(3)


def flaky(path, failures):
    """Fail the first `failures` times (counted in a file), then succeed."""
    counter = Path(path)
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    if count < failures:
        raise RuntimeError(f"failure {count + 1}")
    return count + 1


def spawner(n):
    ids = [nbqueue.spawn(square, i, key=None) for i in range(n)]
    return ids


def fan_out(n):
    results = yield [nbqueue.call(square, i) for i in range(n)]
    return sum(results)
