"""Parsing and formatting of moments, durations and rates: ``after=``, ``deadline=``,
``every=``, ``keep=``, ``rate=`` and the times shown beside jobs.

``after=`` means "not before this moment". :func:`parse_after` turns the
accepted spellings into a POSIX timestamp (UTC seconds), which is what gets
stored; :func:`format_local` and :func:`format_local_time` render stored
timestamps back in local time for human-readable reasons.

Local time is the process's local timezone as seen by the C library
(``TZ`` / ``time.tzset()``), used through naive :class:`~datetime.datetime`
objects (``datetime.timestamp()`` / ``datetime.fromtimestamp()``), so the
full timezone history of the zone is honoured. Wall-clock times that fall
on a DST transition are resolved as follows (PEP 495, ``fold=0``):

* a time inside a DST gap (e.g. 02:30 on a spring-forward night, which never
  happens on the clock) is shifted forward by the length of the gap
  (02:30 -> 03:30);
* an ambiguous time on a fall-back night (02:30 happens twice) resolves to
  its first occurrence.

Relative forms (``"in 1d"``, timedeltas, seconds) are exact elapsed
durations, not wall-clock arithmetic: ``"in 1d"`` is always 86400 seconds.
"""

from __future__ import annotations

import math
import numbers
import re
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Any

from dateutil.parser import isoparse

__all__ = ["ACCEPTED_FORMS", "duration_or_none", "format_duration", "format_local",
           "format_local_time", "format_rate", "parse_after", "parse_duration", "parse_rate"]

ACCEPTED_FORMS = """\
  - None: no constraint
  - a datetime: naive = local time, aware = converted
  - a timedelta, or int/float seconds from now (a negative offset means ready now)
  - "now"
  - a duration from now: "in 30s", "in 10m", "in 2h", "in 1d", "in 1h30m", "in 90 minutes"
    (units: s/sec/seconds, m/min/minutes, h/hr/hours, d/days, w/weeks)
  - a local clock time today: "15:00", "15:00:30", "3pm", "3:30pm"
    (if already past today, the job is ready now; it does not roll over to tomorrow)
  - a local clock time tomorrow: "tomorrow 9:00", "tomorrow 3pm"
  - ISO 8601: "2026-12-01T09:00", "2026-12-01 09:00", "2026-12-01",
    optionally with an offset or Z ("2026-12-01T09:00+02:00"); naive = local time"""

_UNIT_SECONDS = {
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}

# Longest spellings first so that e.g. "min" is not read as "m" + "in".
_UNIT = r"(?P<unit>seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|wks?|w)(?![a-z])"
_DURATION_PART = re.compile(r"\s*(?P<num>\d+(?:\.\d+)?)\s*" + _UNIT, re.ASCII)
_DURATION = re.compile(r"in\s+(?P<body>(?:\s*\d+(?:\.\d+)?\s*[a-z]+)+)\s*", re.ASCII)
_CLOCK = re.compile(
    r"(?:(?P<day>today|tomorrow)\s+)?(?:at\s+)?"
    r"(?P<h>\d{1,2})(?::(?P<m>\d{2})(?::(?P<s>\d{2}))?)?"
    r"\s*(?P<ampm>am|pm)?",
    re.ASCII,
)
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}(?:[t ].*)?", re.ASCII)


def _invalid(value: Any, detail: str = "") -> ValueError:
    """Build the error raised for an unusable ``after=`` value."""
    extra = f" ({detail})" if detail else ""
    return ValueError(
        f"cannot interpret after={value!r} as a moment{extra}; accepted forms:\n{ACCEPTED_FORMS}"
    )


def _local_timestamp(naive: datetime) -> float:
    """Convert a naive local wall-clock datetime to a POSIX timestamp.

    Gap times are shifted forward and ambiguous times resolve to their first
    occurrence (``fold=0``), unless the caller set ``fold`` explicitly.
    """
    return naive.timestamp()


def _local_date(ts: float) -> date:
    """Return the local calendar date of POSIX timestamp `ts`."""
    return datetime.fromtimestamp(ts).date()


def _finite(value: Any, ts: float) -> float:
    """Return `ts` if it is a finite moment that local time can show (years 1 to 9999),
    else raise for `value`."""
    if not math.isfinite(ts):
        raise _invalid(value, "not a finite moment")
    try:
        datetime.fromtimestamp(ts)
    except (OverflowError, OSError, ValueError):
        raise _invalid(value, "out of range: give a moment between the years 1 and 9999") from None
    return ts


def _parse_datetime(value: datetime) -> float:
    """Timestamp of a datetime; naive means local time."""
    if value.tzinfo is None or value.utcoffset() is None:
        return _local_timestamp(value.replace(tzinfo=None))
    return value.timestamp()


def _parse_duration(value: str, text: str, now: float) -> float | None:
    """Parse ``"in 1h30m"``-style strings; None if `text` is not of that form."""
    match = _DURATION.fullmatch(text)
    if match is None:
        return None
    body = match.group("body")
    total = 0.0
    pos = 0
    for part in _DURATION_PART.finditer(body):
        if part.start() != pos:
            raise _invalid(value, "unrecognised duration")
        total += float(part.group("num")) * _UNIT_SECONDS[part.group("unit")[0]]
        pos = part.end()
    if pos != len(body.rstrip()):
        raise _invalid(value, "unrecognised duration")
    return now + total


def _clock_time(value: str, match: re.Match[str]) -> dtime:
    """Validate the fields of a clock-time match and build a :class:`datetime.time`."""
    hour = int(match.group("h"))
    minute = int(match.group("m") or 0)
    second = int(match.group("s") or 0)
    ampm = match.group("ampm")
    if ampm is None and match.group("m") is None:
        raise _invalid(value, "a bare number is not a clock time")
    if ampm is not None:
        if not 1 <= hour <= 12:
            raise _invalid(value, "hour must be 1-12 with am/pm")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise _invalid(value, "no such clock time")
    return dtime(hour, minute, second)


def _parse_clock(value: str, text: str, now: float) -> float | None:
    """Parse ``"15:00"`` / ``"3pm"`` / ``"tomorrow 9:00"``; None if not of that form."""
    match = _CLOCK.fullmatch(text)
    if match is None:
        return None
    clock = _clock_time(value, match)
    day = _local_date(now)
    if match.group("day") == "tomorrow":
        day += timedelta(days=1)
    return _local_timestamp(datetime.combine(day, clock))


def _parse_iso(value: str, text: str) -> float | None:
    """Parse an ISO 8601 date or date-time; None if `text` does not look like one."""
    if _ISO.fullmatch(text) is None:
        return None
    try:
        parsed = isoparse(text.upper())
    except (ValueError, OverflowError) as exc:
        raise _invalid(value, f"bad ISO 8601: {exc}") from exc
    return _parse_datetime(parsed)


def _parse_string(value: str, now: float) -> float:
    """Parse any of the accepted string forms."""
    text = " ".join(value.strip().lower().split())
    if text == "now":
        return now
    for result in (
        _parse_duration(value, text, now),
        _parse_clock(value, text, now),
        _parse_iso(value, text),
    ):
        if result is not None:
            return result
    raise _invalid(value)


def parse_after(value: Any, *, now: float | None = None) -> float | None:
    """Turn an ``after=`` value into a POSIX timestamp.

    Parameters
    ----------
    value : None, datetime, timedelta, int, float or str
        The moment before which the job must not start; see
        :data:`ACCEPTED_FORMS`. ``None`` means no constraint.
    now : float, optional
        The current time as a POSIX timestamp, for relative forms (pins the
        clock in tests). Defaults to :func:`time.time`.

    Returns
    -------
    float or None
        The moment as a POSIX timestamp (UTC seconds), or None for None.
        A moment in the past (e.g. ``"09:00"`` typed at noon) is returned
        as-is: the job is ready now.

    Raises
    ------
    ValueError
        For anything else (bools, ``"in -5m"``, empty or unrecognised
        strings, impossible dates); the message names the bad input and
        lists the accepted forms.

    Notes
    -----
    Local wall-clock times in a DST gap are shifted forward by the gap
    length; ambiguous fall-back times pick the first occurrence.

    Examples
    --------
    >>> n = 1_000_000.0
    >>> parse_after(None) is None
    True
    >>> parse_after("now", now=n) - n
    0.0
    >>> parse_after("in 10m", now=n) - n
    600.0
    >>> [parse_after(s, now=n) - n for s in ("in 30s", "in 2h", "in 1d")]
    [30.0, 7200.0, 86400.0]
    >>> parse_after("in 1h30m", now=n) - n, parse_after("in 90 minutes", now=n) - n
    (5400.0, 5400.0)
    >>> from datetime import datetime, timedelta, timezone
    >>> parse_after(timedelta(minutes=5), now=n) - n, parse_after(90, now=n) - n
    (300.0, 90.0)
    >>> parse_after("2026-12-01T09:00Z")
    1796115600.0
    >>> parse_after("2026-12-01T10:00+01:00")
    1796115600.0
    >>> parse_after(datetime(2026, 12, 1, 9, tzinfo=timezone.utc))
    1796115600.0

    Naive datetimes, ISO strings without offset and clock times are local:

    >>> parse_after("2026-12-01 09:00") == datetime(2026, 12, 1, 9).timestamp()
    True
    >>> parse_after("2026-12-01") == datetime(2026, 12, 1).timestamp()
    True
    >>> format_local(parse_after("15:00", now=n), now=n)
    '15:00'
    >>> format_local_time(parse_after("3:30pm", now=n))
    '15:30:00'
    >>> format_local_time(parse_after("15:00:30", now=n))
    '15:00:30'
    >>> t = parse_after("tomorrow 9:00", now=n)
    >>> 0 < t - n < 48 * 3600, format_local_time(t)
    (True, '09:00:00')
    >>> format_local_time(parse_after("tomorrow 3pm", now=n))
    '15:00:00'
    >>> parse_after("in -5m")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: cannot interpret after='in -5m' as a moment; accepted forms:
    ...
    """
    if value is None:
        return None
    if now is None:
        now = time.time()
    try:
        return _finite(value, _to_timestamp(value, now))
    except (OverflowError, OSError) as exc:
        raise _invalid(value, "out of range") from exc


DURATION_FORMS = "seconds, a timedelta, or a duration such as '30d', '12h', '1h30m', '90 minutes'"


def parse_duration(value: Any, *, allow_zero: bool = False) -> float:
    """A length of time in seconds: seconds (int or float), a ``timedelta``, or the
    durations of ``after="in ..."`` without the ``in`` (``"30d"``, ``"2h"``, ``"1h30m"``).
    ``ValueError`` for anything else, for a length not > 0 (>= 0 with ``allow_zero``), and
    past ten thousand years.

    >>> parse_duration("30d"), parse_duration("1h30m"), parse_duration(90)
    (2592000.0, 5400.0, 90.0)
    >>> parse_duration("0", allow_zero=True), parse_duration(timedelta(minutes=2))
    (0.0, 120.0)
    >>> parse_duration("soon")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: not a length of time: give seconds, a timedelta, or ...
    """
    seconds: Any = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = " ".join(value.strip().lower().split())
        if text.startswith("in "):
            text = text[3:]
        try:
            seconds = float(text) if re.fullmatch(r"\d+(?:\.\d+)?", text) else \
                _parse_duration(value, f"in {text}", 0.0)
        except ValueError:
            seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"not a length of time: give {DURATION_FORMS}")
    if not (seconds >= 0 if allow_zero else seconds > 0) or seconds > 10_000 * 365 * 86400:
        raise ValueError(f"out of range: give a length of time {'>= 0' if allow_zero else '> 0'} "
                         "and at most ten thousand years")
    return seconds


def duration_or_none(value: Any) -> float | None:
    """``parse_duration`` (zero allowed), or None if ``value`` is no length of time; for
    callers that check the range themselves and name their parameter.

    >>> duration_or_none("1h30m"), duration_or_none("soon"), duration_or_none(True)
    (5400.0, None, None)
    """
    try:
        return parse_duration(value, allow_zero=True)
    except ValueError:
        return None


_RATE = re.compile(r"(?P<n>\d+)\s*(?:/|per\s)\s*(?P<per>.+)", re.ASCII)
_PERIOD_NAMES = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
_PERIOD_UNITS = {1.0: "s", 60.0: "min", 3600.0: "h", 86400.0: "d"}
RATE_FORMS = ("'10/min', '5/s', '100/h', '1000/d', '3/10s', '10 per minute' (jobs per "
              "period, a whole number >= 1 per a period from 1 ms to ten years)")


def parse_rate(value: str) -> tuple[int, float] | None:
    """A rate limit ``"N/PERIOD"`` as (N, seconds), or None if it does not read.

    >>> parse_rate("10/min"), parse_rate("5 / 10s"), parse_rate("100 per hour")
    ((10, 60.0), (5, 10.0), (100, 3600.0))
    >>> parse_rate("0/min"), parse_rate("10/fortnight"), parse_rate("ten/min")
    (None, None, None)
    """
    match = _RATE.fullmatch(" ".join(value.strip().lower().split()))
    if match is None:
        return None
    n, text = int(match.group("n")), match.group("per").strip()
    per = duration_or_none(text if text[:1].isdigit() else f"1{text}")
    if n < 1 or per is None or not (0.001 <= per <= 10 * 365 * 86400.0):
        return None
    return n, per


def format_rate(n: int, per: float, *, words: bool = False) -> str:
    """``"10/min"``, or in words ``"10 per minute"``.

    >>> format_rate(10, 60.0), format_rate(3, 10.0), format_rate(10, 60.0, words=True)
    ('10/min', '3/10s', '10 per minute')
    """
    if words:
        name = _PERIOD_NAMES.get(per)
        return f"{n} per {name}" if name else f"{n} per {format_duration(per)}"
    unit = _PERIOD_UNITS.get(per)
    return f"{n}/{unit}" if unit else f"{n}/{format_duration(per)}"


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``, ``86400`` -> ``"1d"``, ``1.5`` -> ``"1.5s"``.

    >>> [format_duration(s) for s in (5400, 86400, 90061, 1.5, 60)]
    ['1h30m', '1d', '1d1h1m1s', '1.5s', '1m']
    """
    if seconds != int(seconds):
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def _to_timestamp(value: Any, now: float) -> float:
    """Dispatch on the type of a non-None ``after=`` value."""
    if isinstance(value, bool):
        raise _invalid(value, "a bool is not a moment")
    if isinstance(value, datetime):
        return _parse_datetime(value)
    if isinstance(value, timedelta):
        return now + value.total_seconds()
    if isinstance(value, numbers.Real):
        return now + float(value)
    if isinstance(value, str):
        return _parse_string(value, now)
    raise _invalid(value, f"unsupported type {type(value).__name__}")


def format_local(ts: float, *, now: float | None = None) -> str:
    """Render a timestamp briefly in local time, e.g. for ``"not before 15:00"``.

    Parameters
    ----------
    ts : float
        POSIX timestamp.
    now : float, optional
        Current POSIX timestamp (pins the clock in tests); defaults to
        :func:`time.time`.

    Returns
    -------
    str
        ``"HH:MM"`` if `ts` falls on today's local date, else
        ``"YYYY-MM-DD HH:MM"``.

    Examples
    --------
    >>> from datetime import datetime
    >>> format_local(datetime(2026, 12, 1, 9, 5).timestamp(), now=0.0)
    '2026-12-01 09:05'
    """
    if now is None:
        now = time.time()
    moment = datetime.fromtimestamp(ts)
    if moment.date() == _local_date(now):
        return moment.strftime("%H:%M")
    return moment.strftime("%Y-%m-%d %H:%M")


def format_local_time(ts: float) -> str:
    """Render a timestamp as local ``"HH:MM:SS"``, e.g. for ``"held by job X since 12:03:07"``.

    Parameters
    ----------
    ts : float
        POSIX timestamp.

    Returns
    -------
    str
        Local wall-clock time of `ts`.

    Examples
    --------
    >>> from datetime import datetime
    >>> format_local_time(datetime(2026, 12, 1, 12, 3, 7).timestamp())
    '12:03:07'
    """
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S")
