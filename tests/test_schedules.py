"""Schedules: every form on a fake clock (``store.fire_schedules(now)``, and a dispatcher's
``step(now)``), the nights the clocks change, catch-up after a downtime, overlap, and one
job per firing with two serving processes and across SIGKILLs.

A firing makes a job keyed ``schedule:NAME@TIME``; the tests read the firing times back
from those keys.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import jobs
import pytest
from conftest import kill_and_reap, run_python, start_python, wait_for

import nbqueue
from nbqueue.dispatcher import Dispatcher
from nbqueue.errors import NoSuchSchedule
from nbqueue.recurrence import LATE
from nbqueue.schedules import Schedule

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
HOUR = 3600.0


def at(*fields: int, tz: object = UTC) -> float:
    return datetime(*fields, tzinfo=tz).timestamp()  # type: ignore[arg-type]


def fired(schedule: Schedule) -> list[float]:
    """The firing times of a schedule's jobs, from their keys."""
    return [datetime.fromisoformat(h.key.split("@", 1)[1].replace("Z", "+00:00")).timestamp()
            for h in schedule.jobs()]


def local(times: list[float], tz: ZoneInfo) -> list[str]:
    return [datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z") for t in times]


def step_through(q: nbqueue.Queue, start: float, end: float, every: float) -> None:
    """Look for due firings every ``every`` seconds of a fake clock, as a dispatcher does."""
    t = start
    while t <= end:
        q._store.fire_schedules(t)
        t += every


# -- every= and cron= on a fake clock ---------------------------------------------------------


def test_every_fires_once_per_period_with_its_call_and_options(stopped_queue) -> None:
    q = stopped_queue
    t0 = at(2030, 1, 7, 12)
    s = q.schedule(jobs.add, 1, b=2, every="90m", after=datetime.fromtimestamp(t0, UTC),
                   name="adder", priority=3, retries=2, resources=["db"], overlap=True)
    assert s.outcome == "created" and s.next == t0
    step_through(q, t0 - 600, t0 + 3 * 5400 + 30, 30)
    assert fired(s) == [t0, t0 + 5400, t0 + 2 * 5400, t0 + 3 * 5400]
    made = s.jobs()
    assert {h.name for h in made} == {"adder"}
    record = made[0].record()
    assert (record.priority, record.options.retries, record.options.resources) == (3, 2, {"db": 1})
    assert made[0].key == "schedule:adder@2030-01-07T12:00:00Z"
    (info,) = q.schedules()
    assert (info.name, info.every, info.fired, info.missed, info.next) == (
        "adder", 5400.0, 4, 0, t0 + 4 * 5400)
    assert info.last == t0 + 3 * 5400 and info.last_job == made[-1].id
    q.start()
    assert made[0].result(timeout=120) == 3  # add(1, b=2): keywords go to the function


def test_a_dispatcher_makes_and_runs_firings_on_its_clock(stopped_queue) -> None:
    """Driven with step(now): nothing before the first firing, one job at each."""
    q = stopped_queue
    t0 = round(time.time()) + 5
    s = q.schedule(jobs.add, 2, 3, every="2s", after=t0 - time.time(), name="tick")
    assert s.next == pytest.approx(t0, abs=0.01)
    d = Dispatcher(q._store, workers=1)
    try:
        d.step(now=t0 - 0.1)
        assert s.jobs() == []
        d.step(now=t0 + 0.01)
        d.step(now=t0 + 0.5)
        (first,) = s.jobs()
        wait_for(lambda: (d.step(now=t0 + 1), first.state == "done")[1], message="first firing")
        d.step(now=t0 + 2.01)
        assert fired(s) == pytest.approx([t0, t0 + 2])
        second = s.jobs()[1]
        wait_for(lambda: (d.step(now=t0 + 3), second.state == "done")[1], message="second")
        assert second.result() == 5
    finally:
        d.stop()


def test_cron_forms_on_a_fake_clock(stopped_queue) -> None:
    q = stopped_queue
    start = datetime(2030, 1, 4, 12, tzinfo=BERLIN)  # a Friday
    weekdays = q.schedule(jobs.noop, cron="0 9 * * mon-fri", tz="Europe/Berlin", after=start,
                          name="weekdays", overlap=True, catch_up="all")
    quarter = q.schedule(jobs.noop, cron="*/15 * * * *", tz="UTC", after=start, name="quarter",
                         overlap=True, catch_up="all")
    last_day = q.schedule(jobs.noop, cron="0 0 L * *", tz=ZoneInfo("Europe/Berlin"),
                          after=start, name="month-end", overlap=True, catch_up="all")
    second_monday = q.schedule(jobs.noop, cron="30 8 * * 1#2", tz="Europe/Berlin", after=start,
                               name="second-monday", overlap=True, catch_up="all")
    step_through(q, start.timestamp(), at(2030, 3, 1, 12, tz=BERLIN), 1800)
    assert local(fired(weekdays), BERLIN)[:6] == [
        "2030-01-07 09:00 CET", "2030-01-08 09:00 CET", "2030-01-09 09:00 CET",
        "2030-01-10 09:00 CET", "2030-01-11 09:00 CET", "2030-01-14 09:00 CET"]
    assert len(fired(weekdays)) == 40  # 8 weeks
    quarters = fired(quarter)
    assert all(b - a == 900 for a, b in zip(quarters, quarters[1:], strict=False))
    assert local(fired(last_day), BERLIN) == ["2030-01-31 00:00 CET", "2030-02-28 00:00 CET"]
    assert local(fired(second_monday), BERLIN) == ["2030-01-14 08:30 CET",
                                                   "2030-02-11 08:30 CET"]


def test_local_time_is_the_default_zone(tmp_path) -> None:
    """tz=None reads cron in the local time of the process that fires (TZ here)."""
    out = run_python(f"""
        import json
        from datetime import datetime, timezone
        import nbqueue, jobs
        q = nbqueue.Queue({str(tmp_path / 'q')!r}, start=False)
        s = q.schedule(jobs.noop, cron="0 9 * * *", after="2030-07-01 00:00", name="nine")
        print(json.dumps([s.next, datetime(2030, 7, 1, 7, tzinfo=timezone.utc).timestamp()]))
    """, env={"TZ": "Europe/Berlin"})
    next_firing, expected = json.loads(out.stdout)
    assert next_firing == expected  # 09:00 CEST is 07:00 UTC


# -- the nights the clocks change --------------------------------------------------------------


def test_cron_across_daylight_saving_changes_in_a_zone(stopped_queue) -> None:
    q = stopped_queue
    kw = dict(tz="Europe/Berlin", catch_up="all", overlap=True)
    daily = q.schedule(jobs.noop, cron="30 2 * * *", name="daily-0230",
                       after=datetime(2030, 3, 29, 12, tzinfo=BERLIN), **kw)
    hourly = q.schedule(jobs.noop, cron="30 * * * *", name="hourly",
                        after=datetime(2030, 3, 31, 0, tzinfo=BERLIN), **kw)
    # spring forward: 2030-03-31 02:00 CET -> 03:00 CEST
    step_through(q, at(2030, 3, 29, 12), at(2030, 4, 1, 12), 300)
    assert local(fired(daily), BERLIN) == [
        "2030-03-30 02:30 CET", "2030-03-31 03:00 CEST", "2030-04-01 02:30 CEST"]
    spring = [t for t in fired(hourly) if t < at(2030, 3, 31, 5, tz=BERLIN)]
    assert local(spring, BERLIN) == [  # 02:30 never happens: no firing for it
        "2030-03-31 00:30 CET", "2030-03-31 01:30 CET", "2030-03-31 03:30 CEST",
        "2030-03-31 04:30 CEST"]
    daily.delete()
    hourly.delete()
    # fall back: 2030-10-27 03:00 CEST -> 02:00 CET
    daily = q.schedule(jobs.noop, cron="30 2 * * *", name="daily-0230-fall",
                       after=datetime(2030, 10, 25, 12, tzinfo=BERLIN), **kw)
    hourly = q.schedule(jobs.noop, cron="30 * * * *", name="hourly-fall",
                        after=datetime(2030, 10, 27, 0, tzinfo=BERLIN), **kw)
    every = q.schedule(jobs.noop, every="1d", name="every-day", overlap=True, catch_up="all",
                       after=datetime(2030, 10, 26, 9, tzinfo=BERLIN))
    step_through(q, at(2030, 10, 25, 12), at(2030, 10, 28, 12), 300)
    assert local(fired(daily), BERLIN) == [  # once on the night 02:30 happens twice
        "2030-10-26 02:30 CEST", "2030-10-27 02:30 CEST", "2030-10-28 02:30 CET"]
    fall = [t for t in fired(hourly) if t < at(2030, 10, 27, 4, tz=BERLIN)]
    assert local(fall, BERLIN) == [  # hourly: in both of the two 02:00 hours
        "2030-10-27 00:30 CEST", "2030-10-27 01:30 CEST", "2030-10-27 02:30 CEST",
        "2030-10-27 02:30 CET", "2030-10-27 03:30 CET"]
    assert fall[3] - fall[2] == HOUR
    # every= is exact elapsed time: a day later is 08:00 by the clock after the change
    assert local(fired(every), BERLIN) == ["2030-10-26 09:00 CEST", "2030-10-27 08:00 CET",
                                           "2030-10-28 08:00 CET"]


def test_new_york_spring_gap_fires_at_its_end(stopped_queue) -> None:
    q = stopped_queue
    s = q.schedule(jobs.noop, cron="15 2 * * *", tz="America/New_York", name="ny",
                   after=datetime(2030, 3, 9, 12, tzinfo=NEW_YORK), catch_up="all",
                   overlap=True)
    step_through(q, at(2030, 3, 9, 12), at(2030, 3, 12, 12), 600)
    # 2030-03-10 02:00 EST -> 03:00 EDT: 02:15 does not exist, it fires at 03:00
    assert local(fired(s), NEW_YORK) == ["2030-03-10 03:00 EDT", "2030-03-11 02:15 EDT",
                                         "2030-03-12 02:15 EDT"]


# -- catch-up after a downtime -------------------------------------------------------------------


@pytest.mark.parametrize("catch_up, late, made, missed", [
    ("all", 10, [1, 2, 3, 4, 5], 0),
    ("one", 10, [5], 4),
    ("skip", 10, [5], 4),  # the latest is on time (10 s late)
    ("one", 1200, [5], 4),
    ("skip", 1200, [], 5),  # 20 minutes late: missed too
])
def test_catch_up_after_a_downtime(queue_dir, catch_up, late, made, missed) -> None:
    t0 = at(2030, 1, 1, 9)
    with nbqueue.Queue(queue_dir, start=False) as q:
        s = q.schedule(jobs.noop, every="1h", after=datetime.fromtimestamp(t0, UTC),
                       catch_up=catch_up, overlap=True, name="hourly")
        q._store.fire_schedules(t0 + 1)
        assert fired(s) == [t0]
        q.close()
    # nothing serves the queue for five hours; then a new process opens it
    with nbqueue.Queue(queue_dir, start=False) as q:
        s = q.schedule_of("hourly")
        q._store.fire_schedules(t0 + 5 * HOUR + late)
        assert fired(s) == [t0] + [t0 + k * HOUR for k in made]
        record = s.record()
        assert (record.missed, record.next) == (missed, t0 + 6 * HOUR)
        if missed:
            assert f"{missed} firing" in record.note and catch_up in record.note
        q._store.fire_schedules(t0 + 5 * HOUR + late + 1)  # nothing more is due
        assert len(fired(s)) == 1 + len(made)
        q.close()
    assert late <= LATE or catch_up != "skip" or not made


def test_catch_up_all_makes_a_long_backlog_in_batches(stopped_queue) -> None:
    q = stopped_queue
    t0 = at(2030, 1, 1)
    s = q.schedule(jobs.noop, every="1m", after=datetime.fromtimestamp(t0, UTC), catch_up="all",
                   overlap=True, name="minutely")
    assert q._store.fire_schedules(t0 + 2 * 86400) == 1000  # a batch per transaction
    assert q._store.fire_schedules(t0 + 2 * 86400) == 1000
    assert q._store.fire_schedules(t0 + 2 * 86400) == 2 * 1440 + 1 - 2000
    times = fired(s)
    assert times == [t0 + 60 * k for k in range(2 * 1440 + 1)]


# -- overlap ------------------------------------------------------------------------------------


def test_overlap_false_skips_a_firing_while_the_one_before_has_not_ended(stopped_queue) -> None:
    q = stopped_queue
    t0 = at(2030, 1, 1)
    s = q.schedule(jobs.noop, every="1h", after=datetime.fromtimestamp(t0, UTC), name="slow")
    q._store.fire_schedules(t0)
    (first,) = s.jobs()  # ready, never run: the queue is not served
    q._store.fire_schedules(t0 + HOUR)
    q._store.fire_schedules(t0 + 2 * HOUR)
    assert s.jobs() == [first]
    record = s.record()
    assert record.skipped == 2 and first.id in record.note and "overlap=False" in record.note
    first.cancel()  # it ended: the next firing runs
    q._store.fire_schedules(t0 + 3 * HOUR)
    assert fired(s) == [t0, t0 + 3 * HOUR]


def test_catch_up_all_without_overlap_runs_the_backlog_one_after_another(
        stopped_queue) -> None:
    q = stopped_queue
    t0 = at(2030, 1, 1)
    s = q.schedule(jobs.noop, every="1h", after=datetime.fromtimestamp(t0, UTC), name="chain",
                   catch_up="all")
    q._store.fire_schedules(t0 + 3 * HOUR + 5)  # four due: the first is made, the rest wait
    assert fired(s) == [t0]
    q._store.fire_schedules(t0 + 3 * HOUR + 6)
    assert fired(s) == [t0]
    for k in range(1, 4):
        s.jobs()[-1].cancel()
        q._store.fire_schedules(t0 + 3 * HOUR + 6 + k)
        assert fired(s) == [t0 + i * HOUR for i in range(k + 1)]
    assert s.record().skipped == 0


# -- keeping, replacing, pausing, deleting --------------------------------------------------------


def test_the_same_call_keeps_the_schedule_another_replaces_it(stopped_queue) -> None:
    q = stopped_queue
    t0 = at(2030, 1, 1)
    first = q.schedule(jobs.add, 1, 2, every="1h", after=datetime.fromtimestamp(t0, UTC))
    assert (first.name, first.outcome) == ("add", "created")
    q._store.fire_schedules(t0)
    again = q.schedule(jobs.add, 1, 2, every="1h")  # the cell run again, later
    assert again.outcome == "kept" and again.next == t0 + HOUR and again == first
    other = q.schedule(jobs.add, 1, 5, every="1h")
    assert other.outcome == "replaced" and other.next > time.time() + HOUR - 60
    record = other.record()
    assert record.fired == 1 and record.last_job == first.jobs()[0].id
    timing = q.schedule(jobs.add, 1, 5, cron="0 * * * *", tz="UTC")
    assert timing.outcome == "replaced" and timing.record().cron == "0 * * * *"
    assert [r.name for r in q.schedules()] == ["add"]


def test_pause_resume_delete_a_schedule(stopped_queue) -> None:
    q = stopped_queue
    t0 = at(2030, 1, 1)
    s = q.schedule(jobs.noop, every="1h", after=datetime.fromtimestamp(t0, UTC), name="p",
                   overlap=True)
    q._store.fire_schedules(t0)
    s.pause()
    assert s.paused and s.next is None
    q._store.fire_schedules(t0 + 5 * HOUR)
    assert fired(s) == [t0]
    s.resume()  # from now on: on the real clock, the next firing of its grid after now
    following = s.next
    assert following > time.time() and (following - t0) % HOUR == 0
    assert q.schedule_of("p") == s
    s.delete()
    assert q.schedules() == []
    with pytest.raises(NoSuchSchedule):
        s.record()
    with pytest.raises(NoSuchSchedule):
        q.schedule_of("p")
    assert len(q.jobs()) == 1  # the jobs it made stay


def test_forget_keeps_the_jobs_a_schedule_takes_results_from(queue) -> None:
    base = queue.submit(jobs.add, 20, 1)
    assert base.result(timeout=120) == 21
    s = queue.schedule(jobs.square, base, every="1h", after="now", name="sq")
    wait_for(lambda: s.jobs(), message="the first firing")
    assert s.jobs()[0].result(timeout=120) == 441
    kept = queue.forget()
    assert base.id in kept.kept and queue.job(base.id).state == "done"


def test_a_firing_that_cannot_make_its_job_is_noted_and_the_schedule_goes_on(
        stopped_queue) -> None:
    q = stopped_queue
    base = q.submit(jobs.noop, key=None)
    base.cancel()
    t0 = at(2030, 1, 1)
    s = q.schedule(jobs.noop, every="1h", after=datetime.fromtimestamp(t0, UTC), name="needy",
                   needs=[base], overlap=True)
    q._store.fire_schedules(t0)
    (made,) = s.jobs()  # its need ended cancelled: the firing's job is cancelled with it
    assert made.state == "cancelled" and base.id in made.reason
    with q._store._txn() as sql:  # deleted by hand (forget would keep it: the schedule needs it)
        sql("DELETE FROM nbq_job WHERE id = ?", (base.id,))
    q._store.fire_schedules(t0 + HOUR)
    record = s.record()
    assert record.fired == 1 and "made no job" in record.note and base.id in record.note
    assert record.next == t0 + 2 * HOUR


# -- one job per firing: two serving processes, and SIGKILL --------------------------------------


SERVE = """
    import sys, time
    import nbqueue
    q = nbqueue.Queue({path!r}, workers=1)
    time.sleep({seconds})
    q.stop()
"""


def _check_each_firing_once(q: nbqueue.Queue, name: str, log: Path) -> list[float]:
    """Every firing from the first to the last made one job, in order, no gap; each job
    done; returns the firing times."""
    s = q.schedule_of(name)
    times = fired(s)
    assert len(times) >= 3
    assert times == [times[0] + k for k in range(len(times))]  # every="1s": no gap
    made = s.jobs()
    assert len({h.id for h in made}) == len(times)
    for h in made:
        h.wait(timeout=120)
    assert {h.state for h in made} == {"done"}
    runs = log.read_text().split()
    assert sorted(set(runs)) == sorted(h.id for h in made)  # each firing's job ran
    return times


def test_two_processes_make_one_job_per_firing(tmp_path) -> None:
    path, log = tmp_path / "q", tmp_path / "log"
    with nbqueue.Queue(path, start=False) as q:
        q.schedule(jobs.log_job_id, log, every="1s", after="in 1s", catch_up="all",
                   overlap=True, name="tick")
        q.close()
    procs = [start_python(SERVE.format(path=str(path), seconds=6), cwd=tmp_path)
             for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with nbqueue.Queue(path, workers=1) as q:
        q.schedule_of("tick").pause()
        _check_each_firing_once(q, "tick", log)
        runs = log.read_text().split()
        assert len(runs) == len(set(runs))  # and ran once: nothing was killed here


def test_firings_survive_sigkill_once_each(tmp_path) -> None:
    path, log = tmp_path / "q", tmp_path / "log"
    with nbqueue.Queue(path, start=False) as q:
        q.schedule(jobs.log_job_id, log, every="1s", after="now", catch_up="all",
                   overlap=True, name="tick")
        q.close()
    rng = random.Random(16)

    def runs() -> int:
        return len(log.read_text().split()) if log.exists() else 0

    for _ in range(3):
        before = runs()
        proc = start_python(SERVE.format(path=str(path), seconds=60), cwd=tmp_path)
        wait_for(lambda: runs() > before, timeout=120,  # noqa: B023 - read at once
                 message="this process to run a firing")
        time.sleep(rng.uniform(0.5, 2.5))
        os.kill(proc.pid, signal.SIGKILL)
        kill_and_reap(proc)
    with nbqueue.Queue(path, workers=1) as q:  # catches up every firing missed meanwhile
        wait_for(lambda: q.schedule_of("tick").record().next > time.time(), timeout=120,
                 message="the schedule to catch up")
        q.schedule_of("tick").pause()
        _check_each_firing_once(q, "tick", log)


# -- the command line -----------------------------------------------------------------------------


def test_cli_lists_pauses_resumes_and_deletes_schedules(tmp_path) -> None:
    from test_cli import fails, ok

    path = tmp_path / "q"
    t0 = at(2020, 1, 1, 9)  # in the past: the report's first firing is later
    with nbqueue.Queue(path, start=False) as q:
        assert ok("schedules", path, cwd=tmp_path).strip() == "no schedules"
        q.schedule(jobs.noop, cron="0 9 * * mon-fri", tz="Europe/Berlin", name="report")
        q.schedule(jobs.noop, every="1h", after=datetime.fromtimestamp(t0, UTC), name="poll")
        q._store.fire_schedules(t0)
        poll_job = q.schedule_of("poll").jobs()[0].id
        q.close()
    text = ok("schedules", path, cwd=tmp_path)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["poll", "every", "1h"] and poll_job in lines[0]
    assert "1 fired" in lines[0]
    assert lines[1].startswith("report") and "cron '0 9 * * mon-fri' Europe/Berlin" in lines[1]
    assert "next " in lines[1] and "no job yet" in lines[1]
    listed = json.loads(ok("schedules", path, "--json", cwd=tmp_path))
    assert [r["name"] for r in listed] == ["poll", "report"]
    assert listed[0]["every"] == 3600 and listed[0]["next"] == t0 + HOUR
    assert listed[1]["cron"] == "0 9 * * mon-fri" and listed[1]["tz"] == "Europe/Berlin"
    assert "paused schedule report" in ok("schedules", path, "--pause", "report", cwd=tmp_path)
    status = json.loads(ok("status", path, "--json", cwd=tmp_path))
    assert [(s["name"], s["paused"]) for s in status["schedules"]] == [("poll", False),
                                                                      ("report", True)]
    assert "PAUSED" in ok("status", path, cwd=tmp_path)
    assert "resumed schedule report" in ok("schedules", path, "--resume", "report",
                                           cwd=tmp_path)
    assert "deleted schedule poll" in ok("schedules", path, "--delete", "poll", cwd=tmp_path)
    assert [r["name"] for r in json.loads(ok("schedules", path, "--json", cwd=tmp_path))] == [
        "report"]
    assert "no schedule 'nosuch'" in fails(1, "schedules", path, "--pause", "nosuch",
                                           cwd=tmp_path)
    with nbqueue.Queue(path, start=False) as q:
        assert [h.id for h in q.jobs()] == [poll_job]  # deleting left its job
        q.close()
