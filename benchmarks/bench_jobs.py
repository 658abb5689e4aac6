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


def started_at(*args: Any) -> float:
    """The wall-clock time at which the job body started."""
    return time.time()


def fan_out(n: int) -> int:
    """A generator handler: fan out ``n`` children, wait for all, reduce."""
    results = yield [nbqueue.call(ident, i) for i in range(n)]
    return sum(results)
