"""Why a waiting job waits, in words: a ``Blocker`` (facts the store keeps) made into the
sentence people read, when they read it.

The store records what blocks a job (its kind, a not-before moment, the job holding a
resource, ...) and never a sentence: a sentence written by a headless dispatcher in UTC
would show someone in another timezone the wrong clock. So moments are formatted here,
in the local time of the process that reads (``TZ`` and the system's zone, as
:func:`time.localtime` sees them).

>>> from nbqueue import waits as W
>>> describe(W.Blocker(W.WAIT_NEEDS, jobs=("a1", "b2")))
'needs job a1, b2'
>>> describe(W.Blocker(W.WAIT_RATE, resource="api", n=10, per=60.0, until=0.0)).startswith(
...     "rate limit of api (10 per minute): the next may start at ")
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import waits as W
from .times import format_local, format_local_time, format_rate

if TYPE_CHECKING:
    from .waits import Blocker


def describe(blocker: Blocker, *, now: float | None = None) -> str:
    """The sentence for ``blocker``, its moments in local time: ``"not before 15:00"``
    (a date too when not today, as of ``now``: default the clock), ``"resource gpu held
    by job a1 since 12:03"``. A kind this nbqueue does not know (a newer one wrote it) is
    named as it is."""
    render = _SENTENCES.get(blocker.kind)
    return render(blocker, now) if render is not None else f"waiting ({blocker.kind})"


def _time(b: Blocker, now: float | None) -> str:
    return f"not before {_moment(b.until, now)}"


def _retry(b: Blocker, now: float | None) -> str:
    return (f"retry {b.n} of {b.of} after {b.error}, "
            f"not before {format_local_time(b.until or 0.0)}")


def _needs(b: Blocker, now: float | None) -> str:
    return "needs job " + ", ".join(b.jobs) + (" and more" if b.more else "")


def _children(b: Blocker, now: float | None) -> str:
    n = b.n or 0
    return f"waiting for {n} child job{'s' if n > 1 else ''} (step {b.step})"


def _paused(b: Blocker, now: float | None) -> str:
    return "paused" if b.name is None else f"paused (jobs named {b.name})"


def _unavailable(b: Blocker, now: float | None) -> str:
    return f"resource {b.resource} is unavailable"


def _capacity(b: Blocker, now: float | None) -> str:
    return f"needs {b.n} units of {b.resource}, whose capacity is {b.of}"


def _kept(b: Blocker, now: float | None) -> str:
    return f"resource {b.resource} kept for job {b.holder}, which has a higher priority"


def _held(b: Blocker, now: float | None) -> str:
    return f"resource {b.resource} held by job {b.holder} since {_moment(b.since, now)}"


def _rate(b: Blocker, now: float | None) -> str:
    return (f"rate limit of {b.resource} ({format_rate(b.n or 0, b.per or 0.0, words=True)}):"
            f" the next may start at {format_local_time(b.until or 0.0)}")


def _resource(b: Blocker, now: float | None) -> str:
    return f"waiting for resource {b.resource}"


def _moment(ts: float | None, now: float | None) -> str:
    return format_local(ts or 0.0, now=now)


_SENTENCES: dict[str, Callable[[Blocker, float | None], str]] = {
    W.WAIT_TIME: _time, W.WAIT_RETRY: _retry, W.WAIT_NEEDS: _needs,
    W.WAIT_CHILDREN: _children, W.WAIT_PAUSED: _paused, W.WAIT_UNAVAILABLE: _unavailable,
    W.WAIT_CAPACITY: _capacity, W.WAIT_KEPT: _kept, W.WAIT_HELD: _held, W.WAIT_RATE: _rate,
    W.WAIT_RESOURCE: _resource,
}
