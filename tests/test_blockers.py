"""Why a job waits is stored as facts and put in words when read, in the reader's timezone.

A queue is written by this process with ``TZ=UTC`` (the dispatcher of a headless
server) and read by a child process with ``TZ=Asia/Kolkata`` (someone five and a half
hours east): a wait for a time, a resource held since a moment, a rate limit's next start
and a retry's backoff each show the reader's clock. Expected clocks come from
``zoneinfo``, not from nbqueue's formatter. A directory written before the facts existed
(sentences only, no ``wait`` column) opens, is upgraded, and shows sensible reasons.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import jobs
import pytest
from conftest import run_python, wait_for

import nbqueue
from nbqueue import job as J
from nbqueue.blockers import describe
from nbqueue.store import Owner

READER_ZONE = "Asia/Kolkata"  # UTC+05:30 all year: no moment reads alike in both


@pytest.fixture
def tz(monkeypatch) -> Iterator[None]:
    """This process runs in UTC (as a server would) for the test, then as before."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def clock(ts: float, zone: str, fmt: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(zone)).strftime(fmt)


def read_reasons(ids: dict[str, list[str]]) -> dict[str, str]:
    """The reasons of these jobs ({queue dir: [ids]}) as a process in READER_ZONE reads
    them (it opens each queue without serving it)."""
    out = run_python(f"""
        import json, nbqueue
        reasons = {{}}
        for path, ids in {ids!r}.items():
            with nbqueue.Queue(path, start=False) as q:
                reasons.update({{i: q.job(i).reason for i in ids}})
        print(json.dumps(reasons))
        """, env={"TZ": READER_ZONE}).stdout
    return json.loads(out)


def test_a_reader_elsewhere_sees_its_own_clock(tmp_path, tz) -> None:
    retrying = nbqueue.Queue(tmp_path / "r", workers=1)
    try:
        failing = retrying.submit(jobs.boom, retries=1, retry_delay=3600, key=None)
        wait_for(lambda: failing.state == "waiting", message="the first attempt to fail")
        retry_reason, not_before = failing.reason, failing.record().not_before
    finally:
        retrying.close()
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        later = q.submit(jobs.noop, after="2099-03-04 09:30", key=None)  # 09:30 UTC
        q.set_resource("db")
        q.set_resource("api", rate="1/h")
        holder = q.submit(jobs.noop, 1, resources=["db"], key=None)
        held = q.submit(jobs.noop, 2, resources=["db"], key=None)
        q.submit(jobs.noop, 3, resources=["api"], key=None)
        limited = q.submit(jobs.noop, 4, resources=["api"], key=None)
        q._store.claim(str(Owner.current()), 10, lease=3600)  # as a dispatcher: no worker
        since = q.resources()["db"]["holders"][0]["since"]
        next_start = q.resources()["api"]["next_start"]
        assert (held.state, limited.state, later.state) == ("waiting",) * 3
        here = {h.id: h.reason for h in (later, held, limited)}
        ids = {str(q.path): list(here), str(retrying.path): [failing.id]}
        here[failing.id] = retry_reason
        there = read_reasons(ids)

    expected = {  # zone -> id -> reason
        zone: {
            later.id: "not before 2099-03-04 " + ("15:00" if zone == READER_ZONE else "09:30"),
            held.id: f"resource db held by job {holder.id} since {clock(since, zone, '%H:%M')}",
            limited.id: "rate limit of api (1 per hour): the next may start at "
                        + clock(next_start, zone, "%H:%M:%S"),
            failing.id: "retry 1 of 1 after ValueError, not before "
                        + clock(not_before, zone, "%H:%M:%S"),
        } for zone in ("UTC", READER_ZONE)}
    assert here == expected["UTC"]
    assert there == expected[READER_ZONE]
    assert all(here[i] != there[i] for i in here)  # the check would pass with one clock


def test_what_blocks_is_stored_as_facts_without_a_clock(tmp_path, tz) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        q.set_resource("db")
        holder = q.submit(jobs.noop, 1, resources=["db"], key=None)
        held = q.submit(jobs.noop, 2, resources=["db"], key=None)
        q._store.claim(str(Owner.current()), 10, lease=3600)
        record = held.record()
        assert record.blocker == J.Blocker(J.WAIT_HELD, resource="db", holder=holder.id,
                                           since=record.blocker.since)
    con = sqlite3.connect(tmp_path / "q" / "cache.db")
    reason, wait = con.execute("SELECT reason, wait FROM nbq_job WHERE id = ?",
                               (held.id,)).fetchone()
    con.close()
    assert reason == ""  # no sentence, no clock: the facts only
    assert J.Blocker.from_json(wait) == record.blocker


def test_an_older_directory_opens_and_shows_sensible_reasons(tmp_path, tz) -> None:
    """Sentences in ``reason`` and no ``wait`` column, as the format before the facts:
    the writer that opens it adds the column; a time wait is put in the reader's words
    from its timestamp, the other sentences are shown as they were written."""
    path = tmp_path / "q"
    with nbqueue.Queue(path, start=False) as q:
        later = q.submit(jobs.noop, after="2099-03-04 09:30", key=None)
        first = q.submit(jobs.noop, key=None)
        second = q.submit(jobs.add, 1, 2, needs=[first], key=None)
        q.pause()
        paused = q.submit(jobs.noop, key=None)
    con = sqlite3.connect(path / "cache.db")
    with con:  # what the format before wrote for them
        for job_id, sentence in ((later.id, "not before 2099-03-04 09:30"),
                                 (second.id, f"needs job {first.id}"),
                                 (paused.id, "paused")):
            con.execute("UPDATE nbq_job SET reason = ? WHERE id = ?", (sentence, job_id))
        con.execute("ALTER TABLE nbq_job DROP COLUMN wait")
        con.execute("ALTER TABLE nbq_schedule DROP COLUMN note_at")
    con.close()

    out = run_python(f"""
        import json, sqlite3, nbqueue
        with nbqueue.Queue({str(path)!r}, workers=1) as q:  # a writer: it upgrades
            reasons = {{i: q.job(i).reason for i in {[later.id, second.id, paused.id]!r}}}
            q.resume()
            ran = q.job({second.id!r}).result(timeout=60)
        con = sqlite3.connect({str(path / "cache.db")!r})
        columns = [r[1] for r in con.execute("PRAGMA table_info(nbq_job)")]
        print(json.dumps([reasons, ran, "wait" in columns]))
        """, env={"TZ": READER_ZONE}).stdout
    reasons, ran, upgraded = json.loads(out)
    assert reasons == {later.id: "not before 2099-03-04 15:00",
                       second.id: f"needs job {first.id}", paused.id: "paused"}
    assert (ran, upgraded) == (3, True)


def test_an_older_nbqueues_sentence_wins_over_facts_it_left_behind() -> None:
    """An older nbqueue writing beside this one writes a sentence and leaves ``wait`` as
    it was: the sentence is what holds."""
    facts = J.Blocker(J.WAIT_CHILDREN, n=2, step=1).to_json()
    assert J.Blocker.of_row(J.BLOCK_NEEDS, None, facts, "needs job a1") is None
    assert J.Blocker.of_row(J.BLOCK_CHILDREN, None, facts, "") == J.Blocker(
        J.WAIT_CHILDREN, n=2, step=1)
    assert J.Blocker.of_row("paused:fetch", None, None, "") == J.Blocker(J.WAIT_PAUSED,
                                                                         name="fetch")


@pytest.mark.parametrize("zone, expected", [("America/New_York", "07:03"),
                                            ("Asia/Kolkata", "17:33"), ("UTC", "12:03")])
def test_a_moment_is_put_in_the_local_time_of_the_reader(monkeypatch, zone, expected) -> None:
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        at = datetime(2099, 3, 4, 12, 3, 7, tzinfo=ZoneInfo("UTC")).timestamp()
        held = J.Blocker(J.WAIT_HELD, resource="gpu", holder="a1", since=at)
        assert describe(held, now=at) == f"resource gpu held by job a1 since {expected}"
        assert J.JobRecord("b", "fit", J.WAITING, blocker=held).reason.endswith(expected)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("blocker, sentence", [
    (J.Blocker(J.WAIT_NEEDS, jobs=("a1", "b2", "c3"), more=True), "needs job a1, b2, c3 and more"),
    (J.Blocker(J.WAIT_CHILDREN, n=1, step=0), "waiting for 1 child job (step 0)"),
    (J.Blocker(J.WAIT_CHILDREN, n=3, step=2), "waiting for 3 child jobs (step 2)"),
    (J.Blocker(J.WAIT_PAUSED), "paused"),
    (J.Blocker(J.WAIT_PAUSED, name="fetch"), "paused (jobs named fetch)"),
    (J.Blocker(J.WAIT_UNAVAILABLE, resource="db"), "resource db is unavailable"),
    (J.Blocker(J.WAIT_CAPACITY, resource="gpu", n=4, of=2),
     "needs 4 units of gpu, whose capacity is 2"),
    (J.Blocker(J.WAIT_KEPT, resource="gpu", holder="a1"),
     "resource gpu kept for job a1, which has a higher priority"),
    (J.Blocker(J.WAIT_RESOURCE, resource="gpu"), "waiting for resource gpu"),
    (J.Blocker("newer"), "waiting (newer)"),
])
def test_each_kind_reads_as_it_did(blocker, sentence) -> None:
    assert describe(blocker) == sentence
    assert J.Blocker.from_json(blocker.to_json()) == blocker
