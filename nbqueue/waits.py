"""Why a waiting job waits, as facts: the store's keys (``BLOCK_*``, its ``blocker``
column, for queries), the kinds of wait (``WAIT_*``) and the ``Blocker`` record that
holds the facts of one (its ``wait`` column, as JSON).

Facts only: the sentences people read are made from them when read, in the reader's
timezone (``nbqueue.blockers``). ``nbqueue.job`` re-exports every name here.

>>> Blocker.of_row(BLOCK_TIME, 1700000000.0, None, "")
Blocker(kind='time', until=1700000000.0, resource=None, holder=None, since=None, jobs=(), more=False, n=None, of=None, per=None, step=None, error=None, name=None)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Why a waiting job waits (the `blocker` column, a key for queries); the facts are a
# ``Blocker`` (the `wait` column), made into a sentence when read (nbqueue.blockers).
BLOCK_TIME = "time"
BLOCK_NEEDS = "needs"
BLOCK_CHILDREN = "children"
BLOCK_RESOURCE = "resource:"  # followed by the resource's name
BLOCK_PAUSED = "paused"  # the whole queue's pause; "paused:NAME" a pause of jobs named NAME

# The kinds of Blocker: what a waiting job waits for.
WAIT_TIME = "time"  # its not-before moment (``until``)
WAIT_RETRY = "retry"  # its retry ``n`` of ``of`` after an ``error``, not before ``until``
WAIT_NEEDS = "needs"  # jobs it needs (``jobs``: the first few; ``more``: and others)
WAIT_CHILDREN = "children"  # ``n`` child jobs a generator yielded at its ``step``
WAIT_PAUSED = "paused"  # a pause: of the queue (``name`` None), or of the jobs named ``name``
# for a resource (``resource``), which is:
WAIT_UNAVAILABLE = "unavailable"  # marked unavailable
WAIT_CAPACITY = "capacity"  # too small: it needs ``n`` units, its capacity is ``of``
WAIT_KEPT = "kept"  # kept for job ``holder``, which has a higher priority
WAIT_HELD = "held"  # held by job ``holder`` since ``since``
WAIT_RATE = "rate"  # rate-limited to ``n`` starts per ``per`` seconds: next at ``until``
WAIT_RESOURCE = "resource"  # busy (the plain case: nothing more is known)
WAIT_KINDS = frozenset({WAIT_TIME, WAIT_RETRY, WAIT_NEEDS, WAIT_CHILDREN, WAIT_PAUSED,
                        WAIT_UNAVAILABLE, WAIT_CAPACITY, WAIT_KEPT, WAIT_HELD, WAIT_RATE,
                        WAIT_RESOURCE})

_BLOCKER_FIELDS = ("until", "resource", "holder", "since", "jobs", "more", "n", "of", "per",
                   "step", "error", "name")


def facts_json(facts: dict[str, Any]) -> str:
    """The stored form of a ``Blocker`` given as a dict of its fields (``kind`` first):
    what the store writes, building no Blocker (one is written per job parked by a claim).

    >>> facts_json({"kind": WAIT_RESOURCE, "resource": "db"})
    '{"kind":"resource","resource":"db"}'
    """
    return _encode(facts)


_encode = json.JSONEncoder(separators=(",", ":")).encode  # compact: one per waiting row


@dataclass(frozen=True)
class Blocker:
    """What a waiting job waits for, as facts: its ``kind`` (one of ``WAIT_KINDS``) and
    the fields that kind uses (see the ``WAIT_*`` constants). Moments are POSIX
    timestamps: the store keeps no sentence and no clock time, so whoever reads a job
    sees its reason in their own timezone (``nbqueue.blockers.describe``).

    >>> b = Blocker(WAIT_HELD, resource="gpu", holder="a1", since=1700000000.0)
    >>> b.to_json()
    '{"kind":"held","resource":"gpu","holder":"a1","since":1700000000.0}'
    >>> Blocker.from_json(b.to_json()) == b
    True
    """

    kind: str
    until: float | None = None  # not before: when it may go on (time, retry, rate)
    resource: str | None = None
    holder: str | None = None  # the job that holds the resource, or it is kept for
    since: float | None = None  # since when the holder holds it
    jobs: tuple[str, ...] = ()  # the jobs it needs
    more: bool = False  # it needs more jobs than ``jobs`` names
    n: int | None = None  # the retry's number, children, units wanted, a rate's starts
    of: int | None = None  # retries allowed, a resource's capacity
    per: float | None = None  # a rate's window, in seconds
    step: int | None = None  # a generator's step
    error: str | None = None  # the exception type a retry follows
    name: str | None = None  # the job name a pause holds

    def to_json(self) -> str:
        """The facts as stored: the kind and the fields it sets."""
        return facts_json({k: v for k, v in self.__dict__.items()
                           if v is not None and v is not False and v != ()})

    @classmethod
    def from_json(cls, text: str) -> Blocker:
        data = json.loads(text)
        if "jobs" in data:
            data["jobs"] = tuple(data["jobs"])
        # a newer nbqueue may store more facts: keep the ones known here
        return cls(**{k: v for k, v in data.items() if k == "kind" or k in _BLOCKER_FIELDS})

    @classmethod
    def of_row(cls, key: str | None, not_before: float | None, facts: str | None,
               reason: str) -> Blocker | None:
        """The blocker of a waiting job's row: its facts (``wait``), or what its key and
        moment say when an older nbqueue wrote it (a sentence in ``reason``, no facts);
        None when only that sentence is known. A wait for a time or a pause has no facts
        besides its key and ``not_before``. An older nbqueue writing beside this one
        leaves the facts of a wait before untouched, but always writes a sentence: a
        sentence wins."""
        if facts is not None and not reason:
            return cls.from_json(facts)
        if key == BLOCK_TIME and not_before is not None and (
                not reason or reason.startswith("not before ")):
            return cls(WAIT_TIME, until=not_before)
        if key == BLOCK_PAUSED:
            return cls(WAIT_PAUSED)
        if key is not None and key.startswith(BLOCK_PAUSED + ":"):
            return cls(WAIT_PAUSED, name=key[len(BLOCK_PAUSED) + 1:])
        return None
