"""``after=``: jobs that must not start before a moment, on a real queue."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import jobs
import pytest

import nbqueue
from nbqueue.times import format_local

STARTED = ("ready", "running", "done")


def test_in_two_seconds_runs_later(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1, start=False) as q:
        before = time.time()
        h = q.submit(jobs.square, 3, after="in 2s", key=None)
        after = time.time()
        record = h.record()
        assert record.state == "waiting"
        assert before + 2 <= record.not_before <= after + 2
        assert record.reason == f"not before {format_local(record.not_before)}"
        q.start()
        assert h.result(timeout=60) == 9
        assert h.record().started >= record.not_before


def past_clock_times(now: datetime) -> list[str]:
    """Clock strings that lie earlier today (never empty: midnight is always past)."""
    times = ["00:00", "12am", "0:00:00"]
    earlier = now - timedelta(minutes=1)
    if earlier.date() == now.date():
        hour12 = earlier.hour % 12 or 12
        suffix = "am" if earlier.hour < 12 else "pm"
        times += [earlier.strftime("%H:%M"), f"{hour12}:{earlier.minute:02d}{suffix}"]
    if earlier.date() == now.date() and earlier.minute == 0:
        times.append(f"{hour12}{suffix}")
    return times


def test_a_clock_time_already_past_today_is_ready_now(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        now = datetime.now()
        for text in past_clock_times(now):
            h = q.submit(jobs.square, 2, after=text, key=None)
            record = h.record()
            assert record.state == "ready", text
            assert record.not_before <= time.time()
            assert datetime.fromtimestamp(record.not_before).date() == now.date()
        q.start()
        assert all(h.result(timeout=60) == 4 for h in q.jobs())


@pytest.mark.parametrize("after", ["tomorrow 9:00", "tomorrow 3pm", "in 2h", "2099-01-01T09:00",
                                   "2099-01-01"])
def test_a_far_moment_stays_waiting(tmp_path: Path, after: str) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        later = q.submit(jobs.square, 2, after=after, key=None)
        now = q.submit(jobs.square, 3, key=None)
        assert now.result(timeout=60) == 9
        q.join(timeout=60)  # a far moment is not work to wait for
        record = later.record()
        assert record.state == "waiting"
        assert record.reason == f"not before {format_local(record.not_before)}"
        assert re.fullmatch(r"not before (\d{4}-\d\d-\d\d )?\d\d:\d\d", record.reason)


def test_far_future_reason_names_the_day(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        h = q.submit(jobs.square, 2, after="2099-03-04 09:30", key=None)
        assert h.reason == "not before 2099-03-04 09:30"
        tomorrow = (datetime.now() + timedelta(days=1)).date().isoformat()
        assert q.submit(jobs.square, 3, after="tomorrow 9:00", key=None).reason == (
            f"not before {tomorrow} 09:00")


@pytest.mark.parametrize("make", [
    lambda: datetime.now() + timedelta(seconds=1),
    lambda: timedelta(seconds=1),
    lambda: 1,
    lambda: 0.5,
])
def test_after_a_datetime_a_timedelta_or_seconds(tmp_path: Path, make) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        before = time.time()
        h = q.submit(jobs.square, 5, after=make(), key=None)
        record = h.record()
        assert record.not_before > before
        assert h.result(timeout=60) == 25
        assert h.record().started >= record.not_before


def test_far_datetime_and_timedelta_wait(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        moment = datetime.now() + timedelta(days=3)
        by_datetime = q.submit(jobs.square, 1, after=moment, key=None)
        assert by_datetime.record().not_before == pytest.approx(moment.timestamp())
        by_timedelta = q.submit(jobs.square, 2, after=timedelta(hours=5), key=None)
        for h in (by_datetime, by_timedelta):
            assert h.state == "waiting" and h.reason.startswith("not before ")
        past = q.submit(jobs.square, 3, after=datetime.now() - timedelta(hours=1), key=None)
        assert past.state == "ready"


@pytest.mark.parametrize("bad", ["next tuesday", "in -5m", "25:00", "soon", "", "3", True,
                                 object()])
def test_an_invalid_after_raises_and_writes_nothing(tmp_path: Path, bad: object) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        before = q.changes()
        with pytest.raises(ValueError) as info:
            q.submit(jobs.square, 2, after=bad)
        text = str(info.value)
        for form in ("in 10m", "15:00", "3pm", "tomorrow 9:00", "ISO 8601", "timedelta"):
            assert form in text
        with pytest.raises(ValueError, match="accepted forms"):
            q.map(jobs.square, [1, 2, 3], after=bad)
        with pytest.raises(ValueError, match="accepted forms"):
            q.review("gate", after=bad)
        assert q.jobs() == []
        assert set(q.counts().values()) == {0}
        assert q.changes() == before


def test_after_and_needs_together(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        first = q.submit(jobs.square, 2, key=None)
        later = q.submit(jobs.add, first, 1, after="tomorrow 9:00", key=None)
        assert first.result(timeout=60) == 4
        q.join(timeout=60)
        assert later.state == "waiting" and later.reason.startswith("not before ")
        soon = q.submit(jobs.add, first, 2, after="in 1s", key=None)
        assert soon.result(timeout=60) == 6


def test_after_is_kept_across_a_restart(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        h = q.submit(jobs.square, 6, after="in 1s", key="later")
        not_before = h.record().not_before
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        h = q.job("later")
        assert h.record().not_before == not_before
        assert h.result(timeout=60) == 36
        assert h.record().started >= not_before


def test_sleep_rejects_bad_moments_at_the_yield() -> None:
    with pytest.raises(ValueError, match="accepted forms"):
        nbqueue.sleep("whenever")
