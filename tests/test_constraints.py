"""Tests for :mod:`nbqueue.times` (parsing of ``after=``)."""

from __future__ import annotations

import doctest
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from dateutil import tz
from hypothesis import given, settings
from hypothesis import strategies as st

from nbqueue import times
from nbqueue.times import ACCEPTED_FORMS, format_local, format_local_time, parse_after

needs_tzset = pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset() is Unix-only")

# POSIX TZ strings need no tz database; they carry the current rules of these zones.
BERLIN = "CET-1CEST,M3.5.0,M10.5.0/3"
NEW_YORK = "EST5EDT,M3.2.0,M11.1.0"
FIXED_ZONES = ["UTC0", "IST-5:30", "<+14>-14", "<-12>12"]
ZONES = [*FIXED_ZONES, BERLIN, NEW_YORK]
BERLIN_ZONES = [
    BERLIN,
    pytest.param(
        "Europe/Berlin",
        marks=pytest.mark.skipif(
            not os.path.exists("/usr/share/zoneinfo/Europe/Berlin"), reason="no tz database"
        ),
    ),
]
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
HOUR = 3600.0


@contextmanager
def local_tz(name: str) -> Iterator[None]:
    """Run the body with the process's local timezone set to `name`, then restore it."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


@pytest.fixture(params=ZONES)
def zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test using this fixture runs once per local timezone in `ZONES`."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is Unix-only")
    with local_tz(request.param):
        yield request.param


@pytest.fixture(params=BERLIN_ZONES)
def berlin(request: pytest.FixtureRequest) -> Iterator[str]:
    """Local timezone Europe/Berlin (POSIX rule string and, if available, tz database)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset() is Unix-only")
    with local_tz(request.param):
        yield request.param


def utc(*args: int) -> float:
    """POSIX timestamp of a UTC wall-clock time."""
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def local(*args: int) -> float:
    """POSIX timestamp of a local wall-clock time (first occurrence / shifted forward)."""
    return datetime(*args).timestamp()


def local_dt(ts: float) -> datetime:
    """Naive local datetime of a POSIX timestamp."""
    return datetime.fromtimestamp(ts)


# --- simple forms ------------------------------------------------------------------------


def test_none_means_no_constraint() -> None:
    assert parse_after(None) is None
    assert parse_after(None, now=NOW) is None


def test_now() -> None:
    assert parse_after("now", now=NOW) == NOW
    assert parse_after("  NOW ", now=NOW) == NOW


def test_default_now_is_the_clock() -> None:
    before = time.time()
    result = parse_after("now")
    after = time.time()
    assert result is not None
    assert before <= result <= after
    result = parse_after("in 10m")
    assert result is not None
    assert before + 600 <= result <= time.time() + 600


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("in 10m", 600),
        ("in 2h", 7200),
        ("in 30s", 30),
        ("in 1d", 86400),
        ("in 1h30m", 5400),
        ("in 1h 30m", 5400),
        ("in 90 minutes", 5400),
        ("in 1 minute", 60),
        ("in 45 sec", 45),
        ("in 3 mins", 180),
        ("in 2 hrs", 7200),
        ("in 2 days", 172800),
        ("in 1w", 604800),
        ("in 1.5h", 5400),
        ("in 0s", 0),
        ("IN 2 Hours", 7200),
        ("  in   10m  ", 600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_after(text, now=NOW) == NOW + seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        (90, 90),
        (2.5, 2.5),
        (timedelta(minutes=5), 300),
        (timedelta(days=1, microseconds=5), 86400.000005),
        (timedelta(seconds=-5), -5),  # computed offsets may drift negative: ready now
        (-1.5, -1.5),
    ],
)
def test_relative_numbers_and_timedeltas(value: Any, seconds: float) -> None:
    assert parse_after(value, now=NOW) == NOW + seconds


@settings(max_examples=200)
@given(
    n=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    micros=st.integers(min_value=0, max_value=10**13),
)
def test_timedelta_property(n: float, micros: int) -> None:
    seconds = micros / 10**6
    assert parse_after(timedelta(microseconds=micros), now=n) == n + seconds


@given(
    n=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    seconds=st.one_of(
        st.floats(min_value=0, max_value=1e7, allow_nan=False),
        st.integers(min_value=0, max_value=10**7),
    ),
)
def test_seconds_property(n: float, seconds: float) -> None:
    assert parse_after(seconds, now=n) == n + seconds


@given(
    n=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    hours=st.integers(min_value=0, max_value=1000),
    minutes=st.integers(min_value=0, max_value=59),
)
def test_duration_string_property(n: float, hours: int, minutes: int) -> None:
    # the parser adds the duration in one piece; float addition is not associative
    assert parse_after(f"in {hours}h{minutes}m", now=n) == n + (hours * 3600 + minutes * 60)


# --- absolute moments --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 1, 9, tzinfo=timezone.utc),
        datetime(2026, 12, 1, 10, tzinfo=timezone(timedelta(hours=1))),
        datetime(2026, 12, 1, 4, tzinfo=tz.gettz("America/New_York")),
        datetime(2026, 12, 1, 9, tzinfo=tz.tzutc()),
        "2026-12-01T09:00Z",
        "2026-12-01T09:00:00Z",
        "2026-12-01T09:00:00.000+00:00",
        "2026-12-01 10:00+01:00",
        "2026-12-01t04:00-05:00",
    ],
)
def test_aware_moments_are_converted(value: Any) -> None:
    assert parse_after(value, now=NOW) == utc(2026, 12, 1, 9)


def test_naive_moments_are_local(zone: str) -> None:
    expected = local(2026, 12, 1, 9)
    assert parse_after(datetime(2026, 12, 1, 9), now=NOW) == expected
    assert parse_after("2026-12-01T09:00", now=NOW) == expected
    assert parse_after("2026-12-01 09:00", now=NOW) == expected
    assert parse_after("2026-12-01T09:00:00", now=NOW) == expected
    assert parse_after("2026-12-01", now=NOW) == local(2026, 12, 1)
    assert format_local_time(expected) == "09:00:00"


@needs_tzset
@pytest.mark.parametrize(
    ("zone_name", "expected"),
    [
        ("UTC0", utc(2026, 12, 1, 9)),
        ("IST-5:30", utc(2026, 12, 1, 3, 30)),
        ("<+14>-14", utc(2026, 11, 30, 19)),
        (BERLIN, utc(2026, 12, 1, 8)),
        (NEW_YORK, utc(2026, 12, 1, 14)),
    ],
)
def test_naive_iso_in_known_zones(zone_name: str, expected: float) -> None:
    with local_tz(zone_name):
        assert parse_after("2026-12-01 09:00", now=NOW) == expected


def test_past_absolute_moment_is_returned_as_is() -> None:
    assert parse_after("2000-01-01T00:00Z", now=NOW) == utc(2000, 1, 1)


# --- clock times -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "clock"),
    [
        ("15:00", (15, 0, 0)),
        ("15:00:30", (15, 0, 30)),
        ("3pm", (15, 0, 0)),
        ("3:30pm", (15, 30, 0)),
        ("3:30:15pm", (15, 30, 15)),
        ("3 PM", (15, 0, 0)),
        ("11am", (11, 0, 0)),
        ("12pm", (12, 0, 0)),
        ("12am", (0, 0, 0)),
        ("12:30am", (0, 30, 0)),
        ("0:05", (0, 5, 0)),
        ("23:59:59", (23, 59, 59)),
        ("at 15:00", (15, 0, 0)),
        ("today 3pm", (15, 0, 0)),
    ],
)
def test_clock_times_are_today(zone: str, text: str, clock: tuple[int, int, int]) -> None:
    now = local(2026, 6, 10, 10, 30)
    result = parse_after(text, now=now)
    assert result == local(2026, 6, 10, *clock)
    if clock < (10, 30, 0):
        assert result is not None and result <= now


def test_past_time_today_is_ready_now(zone: str) -> None:
    now = local(2026, 6, 10, 16, 0)
    result = parse_after("15:00", now=now)
    assert result == local(2026, 6, 10, 15, 0)
    assert result <= now
    assert parse_after("16:00", now=now) == now


@pytest.mark.parametrize(
    ("text", "clock"),
    [
        ("tomorrow 9:00", (9, 0, 0)),
        ("tomorrow 3pm", (15, 0, 0)),
        ("Tomorrow 9AM", (9, 0, 0)),
        ("tomorrow at 9:30", (9, 30, 0)),
        ("tomorrow 00:00", (0, 0, 0)),
        ("tomorrow 23:59:59", (23, 59, 59)),
    ],
)
def test_tomorrow(zone: str, text: str, clock: tuple[int, int, int]) -> None:
    now = local(2026, 6, 10, 23, 59)
    assert parse_after(text, now=now) == local(2026, 6, 11, *clock)


@needs_tzset
@settings(deadline=None, max_examples=60)
@given(
    zone_name=st.sampled_from(ZONES),
    n=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)
def test_tomorrow_nine_property(zone_name: str, n: float) -> None:
    with local_tz(zone_name):
        result = parse_after("tomorrow 9:00", now=n)
        assert result is not None
        assert 0 < result - n < 48 * HOUR
        moment = local_dt(result)
        assert (moment.hour, moment.minute, moment.second) == (9, 0, 0)
        assert moment.date() == local_dt(n).date() + timedelta(days=1)


@needs_tzset
@settings(deadline=None, max_examples=100)
@given(
    zone_name=st.sampled_from(FIXED_ZONES),
    n=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    hour=st.integers(min_value=0, max_value=23),
    minute=st.integers(min_value=0, max_value=59),
)
def test_clock_today_property(zone_name: str, n: float, hour: int, minute: int) -> None:
    with local_tz(zone_name):
        result = parse_after(f"{hour:02d}:{minute:02d}", now=n)
        assert result is not None
        moment, today = local_dt(result), local_dt(n)
        assert moment.date() == today.date()
        assert (moment.hour, moment.minute, moment.second) == (hour, minute, 0)
        if (hour, minute) <= (today.hour, today.minute):
            assert result <= n  # already past today: ready now, not tomorrow
        else:
            assert n < result < n + 24 * HOUR


# --- DST -----------------------------------------------------------------------------------
# Europe/Berlin 2026: spring forward Sun 29 March 02:00 CET -> 03:00 CEST (01:00Z),
# fall back Sun 25 October 03:00 CEST -> 02:00 CET (01:00Z).


def test_dst_gap_shifts_forward(berlin: str) -> None:
    now = utc(2026, 3, 28, 11)  # Saturday 12:00 CET
    result = parse_after("tomorrow 2:30", now=now)
    assert result == utc(2026, 3, 29, 1, 30)
    assert format_local_time(result) == "03:30:00"
    assert parse_after("tomorrow 2:00", now=now) == utc(2026, 3, 29, 1)
    assert parse_after("tomorrow 1:59", now=now) == utc(2026, 3, 29, 0, 59)
    assert parse_after("tomorrow 3:00", now=now) == utc(2026, 3, 29, 1)
    assert parse_after("2026-03-29T02:30", now=now) == utc(2026, 3, 29, 1, 30)
    assert parse_after(datetime(2026, 3, 29, 2, 30), now=now) == utc(2026, 3, 29, 1, 30)


def test_dst_gap_today(berlin: str) -> None:
    now = utc(2026, 3, 29, 0, 0)  # Sunday 01:00 CET
    assert parse_after("2:30", now=now) == utc(2026, 3, 29, 1, 30)
    assert parse_after("2:30am", now=now) == utc(2026, 3, 29, 1, 30)


def test_dst_spring_tomorrow_nine(berlin: str) -> None:
    now = utc(2026, 3, 28, 11)  # Saturday 12:00 CET; the night is one hour short
    result = parse_after("tomorrow 9:00", now=now)
    assert result == utc(2026, 3, 29, 7)
    assert result - now == 20 * HOUR
    assert format_local_time(result) == "09:00:00"


def test_dst_ambiguous_picks_first_occurrence(berlin: str) -> None:
    now = utc(2026, 10, 24, 10)  # Saturday 12:00 CEST
    first = utc(2026, 10, 25, 0, 30)  # 02:30 CEST; 02:30 CET would be 01:30Z
    assert parse_after("tomorrow 2:30", now=now) == first
    assert parse_after("2026-10-25 02:30", now=now) == first
    assert parse_after(datetime(2026, 10, 25, 2, 30), now=now) == first
    assert parse_after("tomorrow 1:59", now=now) == utc(2026, 10, 24, 23, 59)
    assert parse_after("tomorrow 3:00", now=now) == utc(2026, 10, 25, 2)
    # An explicit offset or fold selects the second occurrence.
    assert parse_after("2026-10-25T02:30+01:00", now=now) == utc(2026, 10, 25, 1, 30)
    assert parse_after(datetime(2026, 10, 25, 2, 30, fold=1), now=now) == utc(2026, 10, 25, 1, 30)


def test_dst_ambiguous_today_in_second_occurrence(berlin: str) -> None:
    now = utc(2026, 10, 25, 1, 45)  # 02:45 CET, the second pass through 02:xx
    result = parse_after("2:30", now=now)
    assert result == utc(2026, 10, 25, 0, 30)
    assert result <= now


def test_dst_fall_tomorrow_nine(berlin: str) -> None:
    now = utc(2026, 10, 24, 10)  # Saturday 12:00 CEST; the night is one hour long
    result = parse_after("tomorrow 9:00", now=now)
    assert result == utc(2026, 10, 25, 8)
    assert result - now == 22 * HOUR


def test_durations_are_exact_across_dst(berlin: str) -> None:
    now = utc(2026, 3, 28, 11)
    assert parse_after("in 1d", now=now) == now + 86400
    assert format_local_time(now + 86400) == "13:00:00"


def test_format_local_on_dst_days(berlin: str) -> None:
    assert format_local(utc(2026, 3, 29, 1, 30), now=utc(2026, 3, 29, 0)) == "03:30"
    assert format_local(utc(2026, 10, 25, 1, 30), now=utc(2026, 10, 25, 0)) == "02:30"
    assert format_local(utc(2026, 10, 25, 0, 30), now=utc(2026, 10, 25, 1, 30)) == "02:30"


@needs_tzset
def test_dst_gap_new_york() -> None:
    with local_tz(NEW_YORK):  # 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z)
        now = utc(2026, 3, 7, 17)  # Saturday 12:00 EST
        assert parse_after("tomorrow 2:30am", now=now) == utc(2026, 3, 8, 7, 30)
        assert parse_after("tomorrow 9am", now=now) == utc(2026, 3, 8, 13)


# --- formatting ----------------------------------------------------------------------------


def test_format_local(zone: str) -> None:
    now = local(2026, 6, 10, 12)
    assert format_local(local(2026, 6, 10, 15, 5), now=now) == "15:05"
    assert format_local(local(2026, 6, 10, 0, 0), now=now) == "00:00"
    assert format_local(local(2026, 6, 11, 0, 0), now=now) == "2026-06-11 00:00"
    assert format_local(local(2026, 6, 9, 23, 59, 59), now=now) == "2026-06-09 23:59"
    assert format_local(local(2027, 1, 2, 3, 4), now=now) == "2027-01-02 03:04"


def test_format_local_default_now() -> None:
    text = format_local(time.time() + 60)
    assert len(text) in (5, 16)
    assert format_local(utc(2001, 2, 3, 12)).startswith("2001-02-0")


def test_format_local_time(zone: str) -> None:
    assert format_local_time(local(2026, 6, 10, 12, 3, 7)) == "12:03:07"
    assert format_local_time(local(2026, 6, 10, 0, 0, 0)) == "00:00:00"


@needs_tzset
def test_format_local_time_known_zone() -> None:
    with local_tz(BERLIN):
        assert format_local_time(utc(2026, 6, 10, 10, 3, 7)) == "12:03:07"
        assert format_local_time(utc(2026, 12, 10, 10, 3, 7)) == "11:03:07"


@needs_tzset
@pytest.mark.parametrize("zone_name", ZONES)
def test_module_doctests_in_any_zone(zone_name: str) -> None:
    with local_tz(zone_name):
        result = doctest.testmod(times, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# --- rejection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        "",
        "   ",
        "in -5m",
        "in",
        "in 10",
        "in m",
        "in 10 parsecs",
        "in 5mo",
        "in 1h and 30m",
        "10m",
        "-5m",
        "tomorrow",
        "yesterday 9:00",
        "next tuesday",
        "noon",
        "garbage",
        "15",
        "1500",
        "25:00",
        "24:00",
        "15:60",
        "15:00:60",
        "15:5",
        "13pm",
        "0am",
        "3:30 p",
        "2026",
        "20261201",
        "2026-13-01",
        "2026-02-30",
        "2026-12-01x09:00",
        "2026-12-01T25:00",
        "2026-12-01T09:00 garbage",
        b"15:00",
        [1],
        date(2026, 12, 1),
        float("nan"),
        float("inf"),
        float("-inf"),
        10**400,
    ],
    ids=repr,
)
def test_rejects_garbage(value: Any) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_after(value, now=NOW)
    message = str(excinfo.value)
    assert repr(value) in message
    assert ACCEPTED_FORMS in message


def test_rejects_unknown_object() -> None:
    value = object()
    with pytest.raises(ValueError, match="unsupported type object") as excinfo:
        parse_after(value, now=NOW)
    assert repr(value) in str(excinfo.value)


def test_accepted_forms_lists_the_forms() -> None:
    for form in ("now", "in 10m", "in 1h30m", "15:00", "3pm", "tomorrow 9:00", "2026-12-01T09:00"):
        assert form in ACCEPTED_FORMS


@given(st.text(alphabet="abcxyz!?#/ -+.", max_size=20))
def test_random_letters_are_rejected_cleanly(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_after(text, now=NOW)
    assert repr(text) in str(excinfo.value)


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        result = parse_after(text, now=NOW)
    except ValueError as exc:
        assert repr(text) in str(exc)
    else:
        assert isinstance(result, float)
