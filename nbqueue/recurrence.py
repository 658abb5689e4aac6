"""When a schedule fires (pure): ``every=``, ``cron=`` and ``tz=`` read into a ``Timing``,
the firing times after a moment, and what to make of the firings that are due when a
dispatcher looks (``plan``, by ``catch_up``).

``every=`` counts exact elapsed time from the first firing (``"1d"`` is 86 400 s, even
across a change of daylight saving time), as ``after=`` durations do. ``cron=`` is five
fields read by cronsim in a time zone (``tz=``, a name such as ``"Europe/Berlin"``
resolved by dateutil; default: local time, as ``after=`` uses). cronsim follows Debian's
cron on the nights the clocks change: a time that does not exist (02:30 when the clocks
jump from 02:00 to 03:00) fires at the end of the gap (03:00), and a time that happens
twice (02:30 when they fall back from 03:00 to 02:00) fires once, at its first
occurrence; an expression that fires every hour (or more often) fires in both hours.
croniter, the other maintained parser, fires a daily 02:30 twice on that night; see
docs/constraints.md, "Schedules", for the comparison.

A firing a dispatcher gets to within ``LATE`` seconds of its time is on time; one it gets
to later was missed (nothing served the queue then). ``plan`` applies ``catch_up``:

>>> t = Timing(every=3600.0, anchor=0.0)
>>> plan(t, "all", 0.0, now=3 * 3600.0 + 5)
Plan(fire=(0.0, 3600.0, 7200.0, 10800.0), missed=0, next=14400.0)
>>> plan(t, "one", 0.0, now=3 * 3600.0 + 5)  # three missed; the latest is on time
Plan(fire=(10800.0,), missed=3, next=14400.0)
>>> plan(t, "skip", 0.0, now=3 * 3600.0 + 600)  # all four missed: none runs
Plan(fire=(), missed=4, next=14400.0)
>>> plan(t, "one", 0.0, now=3 * 3600.0 + 600)  # ... or one, for the latest
Plan(fire=(10800.0,), missed=3, next=14400.0)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import datetime, tzinfo
from functools import lru_cache
from typing import Any

from cronsim import CronSim, CronSimError
from dateutil import tz as dateutil_tz

from .arguments import LONGEST, unprintable
from .errors import InvalidArgument, InvalidArgumentType
from .times import duration_or_none, format_duration, format_local

CATCH_UP = ("skip", "one", "all")
LATE = 60.0  # seconds after its time within which a firing is made on time, not missed
BATCH = 1000  # firings made at most per transaction (catch_up="all" after a long gap)
SHORTEST = 1.0  # the shortest every=, in seconds
COUNT_CAP = 100_000  # missed firings are counted up to this many per look
# how far back the latest firing is looked for, in growing windows (seconds): a cron
# expression is walked forward only, so a long gap is not walked firing by firing
_WINDOWS = (3600.0, 86400.0, 32 * 86400.0, 400 * 86400.0, 3700 * 86400.0)


@lru_cache(maxsize=64)
def zone(name: str | None) -> tzinfo:
    """The time zone of a name (None: local time, as the C library sees it)."""
    found = dateutil_tz.tzlocal() if name is None else dateutil_tz.gettz(name)
    if found is None:
        raise InvalidArgument(f"tz={name!r}: unknown time zone; give a name of the tz "
                              "database such as 'Europe/Berlin', 'America/New_York' or 'UTC', "
                              "or None for local time")
    return found


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: every ``every`` seconds from ``anchor`` (its first firing),
    or at the times of the ``cron`` expression in zone ``tz`` (None: local time)."""

    every: float | None = None
    cron: str | None = None
    tz: str | None = None
    anchor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timing:
        return cls(data.get("every"), data.get("cron"), data.get("tz"), data.get("anchor"))

    def describe(self) -> str:
        """``"every 1h"``, ``"cron '0 9 * * mon-fri' Europe/Berlin"``.

        >>> Timing(every=5400.0, anchor=0.0).describe(), Timing(cron="0 9 * * *").describe()
        ('every 1h30m', "cron '0 9 * * *' local time")
        """
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return f"cron {self.cron!r} {self.tz or 'local time'}"

    def after(self, moment: float) -> float:
        """The first firing strictly after ``moment``.

        >>> Timing(every=10.0, anchor=100.0).after(95.0), Timing(every=10.0, anchor=100.0).after(100.0)
        (100.0, 110.0)
        >>> Timing(cron="30 2 * * *", tz="UTC").after(0.0)  # 1970-01-01 02:30 UTC
        9000.0
        """
        if self.every is not None:
            anchor = self.anchor or 0.0
            if moment < anchor:
                return anchor
            k = math.floor((moment - anchor) / self.every) + 1
            while anchor + k * self.every <= moment:  # rounding
                k += 1
            return anchor + k * self.every
        assert self.cron is not None
        start = datetime.fromtimestamp(moment, zone(self.tz))
        return next(CronSim(self.cron, start)).timestamp()

    def firings(self, first: float, end: float, limit: int) -> list[float]:
        """Up to ``limit`` firings from ``first`` (a firing) to ``end``, both included."""
        out: list[float] = []
        t = first
        while t <= end and len(out) < limit:
            out.append(t)
            t = self.after(t)
        return out

    def latest(self, first: float, end: float) -> float:
        """The latest firing from ``first`` (a firing, ``<= end``) to ``end``."""
        if self.every is not None:
            anchor = self.anchor or 0.0
            k = math.floor((end - anchor) / self.every)
            while anchor + k * self.every > end:  # rounding
                k -= 1
            return max(anchor + k * self.every, first)
        for back in _WINDOWS:
            low = max(first, end - back)
            found = first if low == first else None
            t = self.after(low)
            while t <= end:
                found = t
                t = self.after(t)
            if found is not None:
                return found
        return self.firings(first, end, COUNT_CAP)[-1]

    def count(self, first: float, last: float) -> int:
        """How many firings from ``first`` to ``last`` (both firings), up to ``COUNT_CAP``."""
        if self.every is not None:
            return min(int(round((last - first) / self.every)) + 1, COUNT_CAP)
        return len(self.firings(first, last, COUNT_CAP))


@dataclass(frozen=True)
class Plan:
    """What one look at a due schedule makes: jobs for the firings ``fire``, ``missed``
    firings not run, and the ``next`` firing to look at."""

    fire: tuple[float, ...]
    missed: int
    next: float


def plan(timing: Timing, catch_up: str, first: float, now: float) -> Plan:
    """The firings due from ``first`` (the schedule's next firing, ``<= now``) to ``now``:
    ``all`` makes every one (``BATCH`` at most, the rest at the next look); ``one`` makes
    the latest; ``skip`` makes the latest only if it is on time (``LATE``)."""
    if catch_up == "all":
        fire = timing.firings(first, now, BATCH)
        return Plan(tuple(fire), 0, timing.after(fire[-1]))
    latest = timing.latest(first, now)
    earlier = timing.count(first, latest) - 1 if latest > first else 0
    if catch_up == "one" or now - latest <= LATE:
        return Plan((latest,), earlier, timing.after(latest))
    return Plan((), earlier + 1, timing.after(latest))


# -- reading a schedule's arguments --------------------------------------------------------------


def check_catch_up(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentType(f"catch_up={value!r}: give one of {', '.join(map(repr, CATCH_UP))}")
    if value not in CATCH_UP:
        raise InvalidArgument(f"catch_up={value!r}: give 'skip' (missed firings do not run), "
                              "'one' (they run once, now) or 'all' (each runs)")
    return value


def check_tz(value: Any) -> str | None:
    """A time zone name (a ``zoneinfo.ZoneInfo`` gives its key), or None for local time."""
    if value is None:
        return None
    if isinstance(value, tzinfo) and isinstance(getattr(value, "key", None), str):
        value = value.key  # a zoneinfo.ZoneInfo
    what = ("give a time zone name such as 'Europe/Berlin', 'America/New_York' or 'UTC', "
            "or None for local time")
    if not isinstance(value, str):
        raise InvalidArgumentType(f"tz={value!r}: {what}")
    if not value.strip() or unprintable(value) or value.startswith(("/", ".")) or "\\" in value:
        raise InvalidArgument(f"tz={value!r}: {what}")
    zone(value)
    return value


def timing_of(every: Any, cron: Any, tz: Any, *, start: float | None,
              now: float) -> tuple[Timing, float]:
    """The ``Timing`` of a schedule's arguments and its first firing: ``every`` from
    ``start`` (its ``after=``; default one period from ``now``), ``cron`` at its first time
    at or after ``start`` (default: after ``now``). Raises ``InvalidArgument`` (naming the
    parameter) for anything that does not read.

    >>> timing_of("1h", None, None, start=None, now=1000.0)
    (Timing(every=3600.0, cron=None, tz=None, anchor=4600.0), 4600.0)
    >>> timing_of(None, "0 9 * * *", "UTC", start=None, now=0.0)[1]  # 1970-01-01 09:00 UTC
    32400.0
    """
    if (every is None) == (cron is None):
        raise InvalidArgument(
            f"every={every!r}, cron={cron!r}: give one of them: every='1h' (a duration, or "
            "seconds) or cron='0 9 * * mon-fri' (minute hour day month weekday)")
    if every is not None:
        if tz is not None:
            raise InvalidArgument(
                f"tz={tz!r} with every={every!r}: every= counts exact elapsed time, in no time "
                "zone; for a time of day in a zone use cron='0 9 * * *' with tz=")
        seconds = duration_or_none(every)
        if seconds is None or isinstance(every, bool):
            raise (InvalidArgumentType if not isinstance(every, str) else InvalidArgument)(
                f"every={every!r}: give a duration such as '30s', '10m', '1h', '1d', '1h30m', "
                "seconds, or a timedelta")
        if not (math.isfinite(seconds) and SHORTEST <= seconds <= LONGEST):
            raise InvalidArgument(f"every={every!r}: give a duration from {SHORTEST:g} second "
                                  "to ten years")
        anchor = round(start if start is not None else now + seconds, 3)
        return Timing(every=seconds, anchor=anchor), anchor
    zone_name = check_tz(tz)
    if not isinstance(cron, str):
        raise InvalidArgumentType(f"cron={cron!r}: give a cron expression (a str) such as "
                                  "'0 9 * * mon-fri'")
    text = " ".join(cron.split())
    what = ("a cron expression has five fields: minute hour day-of-month month day-of-week, "
            "such as '0 9 * * mon-fri' or '*/15 * * * *'")
    if unprintable(cron):
        raise InvalidArgument(f"cron={cron!r}: give one line; {what}")
    timing = Timing(cron=text, tz=zone_name)
    try:
        first = timing.after(start - 1e-6 if start is not None else now)
    except (CronSimError, StopIteration) as exc:
        raise InvalidArgument(f"cron={cron!r}: {exc or 'it never fires'} ({what})") from None
    return timing, first


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule's timing and rules, as stored (JSON)."""

    timing: Timing
    catch_up: str = "one"
    overlap: bool = False

    def to_json(self) -> str:
        return json.dumps({"timing": self.timing.to_dict(), "catch_up": self.catch_up,
                           "overlap": self.overlap})

    @classmethod
    def from_json(cls, text: str) -> ScheduleSpec:
        data = json.loads(text)
        return cls(Timing.from_dict(data["timing"]), data["catch_up"], bool(data["overlap"]))

    def same_rules(self, other: ScheduleSpec) -> bool:
        """Whether two specs fire alike (an every= schedule's anchor aside: re-running the
        cell that made it keeps the firings it has)."""
        mine, theirs = self.timing, other.timing
        return (mine.every, mine.cron, mine.tz, self.catch_up, self.overlap) == (
            theirs.every, theirs.cron, theirs.tz, other.catch_up, other.overlap)


AT = "{at}"  # where a stored note names the firing it speaks of (ScheduleRecord.note_at)


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as the store last committed it: ``next`` is its next firing (a Unix
    time; None while it is paused), ``last`` the latest firing that made a job
    (``last_job``); ``fired``, ``missed`` and ``skipped`` count the firings that made a
    job, those that no dispatcher made in time (``catch_up``) and those skipped because
    the job of the one before had not ended (``overlap=False``); ``note`` says what
    happened at the last firing that made no job, that firing (``note_at``) in local
    time as of when the record is read.

    >>> r = ScheduleRecord("r", None, "f", 0.0,  # type: ignore[arg-type]
    ...                    note=f"the firing of {AT} made no job", note_at=0.0)
    >>> r.note == f"the firing of {format_local(0.0)} made no job"
    True
    """

    name: str
    spec: ScheduleSpec
    function: str
    created: float
    paused: bool = False
    next: float | None = None
    last: float | None = None
    last_job: str | None = None
    fired: int = 0
    missed: int = 0
    skipped: int = 0
    note: str = ""
    note_at: float | None = None

    def __post_init__(self) -> None:
        if self.note_at is not None:  # as stored: the firing is named AT
            object.__setattr__(self, "note", self.note.replace(AT, format_local(self.note_at), 1))

    @property
    def every(self) -> float | None:
        return self.spec.timing.every

    @property
    def cron(self) -> str | None:
        return self.spec.timing.cron

    @property
    def tz(self) -> str | None:
        return self.spec.timing.tz

    @property
    def catch_up(self) -> str:
        return self.spec.catch_up

    @property
    def overlap(self) -> bool:
        return self.spec.overlap

    @property
    def when(self) -> str:
        """``"every 1h"`` or ``"cron '0 9 * * mon-fri' Europe/Berlin"``."""
        return self.spec.timing.describe()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able data (``nbqueue schedules --json``)."""
        return {"name": self.name, "every": self.every, "cron": self.cron, "tz": self.tz,
                "catch_up": self.catch_up, "overlap": self.overlap, "function": self.function,
                "created": self.created, "paused": self.paused, "next": self.next,
                "last": self.last, "last_job": self.last_job, "fired": self.fired,
                "missed": self.missed, "skipped": self.skipped, "note": self.note}
