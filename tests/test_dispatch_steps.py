"""A dispatcher driven by ``step(now)`` on a fake clock, its jobs run in its own process.

A real queue directory and a real store; in-process slots (``InProcessSlot``: a job
handed out at one step ends at the next, unless its slot is ``held``) and a clock the
test moves (the dispatcher's ``now``, its lease). No worker process: each test takes
milliseconds, and each step's claims, hand-outs and outcomes are exact.

Whatever a notebook's thread would do (submit, cancel) is done in a thread of its own
(``elsewhere``): the dispatcher notices changes by other connections, as it does in a
kernel, where it runs in its own thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import jobs
import pytest

import nbqueue
from nbqueue.dispatch.fence import LAPSED
from nbqueue.dispatch.inprocess import InProcessSlot
from nbqueue.dispatcher import REFILL_TURNS, Dispatcher
from nbqueue.store import Store

T0 = 1_900_000_000.0  # the fake clock's start: a moment in 2030


class Clock:
    """A clock that moves only when told."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def at(self, t: float) -> float:
        self.t = t
        return t


def elsewhere(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``call`` in a thread of its own, as a notebook's thread makes it; its result."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call(*args, **kwargs)))
    thread.start()
    thread.join()
    return out[0]


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def q(stopped_queue: nbqueue.Queue) -> nbqueue.Queue:
    return stopped_queue


def dispatcher(store: Store, clock: Clock, *, workers: int = 1,
               lease: float = 3600.0) -> tuple[Dispatcher, list[InProcessSlot]]:
    d = Dispatcher(store, workers=workers, lease=lease, slots=InProcessSlot.make, clock=clock)
    d.open()
    slots = d.slots.slots
    assert all(isinstance(slot, InProcessSlot) for slot in slots)
    return d, slots  # type: ignore[return-value]


def submit(q: nbqueue.Queue, fn: Callable[..., Any], *args: Any, **options: Any) -> nbqueue.Job:
    return elsewhere(q.submit, fn, *args, key=None, **options)


def states(handles: list[nbqueue.Job]) -> list[str]:
    return [h.state for h in handles]


def test_claims_and_hand_outs_per_step(q, clock) -> None:
    """Two slots: the first step claims one job per slot; once the jobs are known to be
    short, a step claims a job handed ahead per slot and a reserve behind them."""
    hs = [submit(q, jobs.add, i, i) for i in range(5)]
    d, (first, second) = dispatcher(q._store, clock, workers=2)
    try:
        assert d.step(clock.at(T0)) == 2  # two claims; no duration known, nothing ahead
        assert states(hs) == ["running", "running", "ready", "ready", "ready"]
        assert (len(first.jobs), len(second.jobs)) == (1, 1)
        assert hs[0].record().started == T0  # marked started by its claim, on this clock

        # two outcomes, and 3 claims: one in each idle slot, one ahead behind the first
        assert d.step(clock.at(T0 + 0.01)) == 2 + 3
        assert states(hs) == ["done", "done", "running", "running", "running"]
        assert (len(first.jobs), len(second.jobs)) == (2, 1)
        assert d.slots.last_short and not d.reserve.jobs

        assert d.step(clock.at(T0 + 0.02)) == 3
        assert states(hs) == ["done"] * 5
        assert [h.result() for h in hs] == [0, 2, 4, 6, 8]
        assert (first.ran, second.ran) == ([hs[0].id, hs[2].id, hs[4].id], [hs[1].id, hs[3].id])
        assert hs[4].record().ended == T0 + 0.02
        assert d.step(clock.at(T0 + 0.03)) == 0 and d.busy() == 0
    finally:
        d.stop()


def test_a_reserve_is_claimed_while_short_jobs_stream(q, clock) -> None:
    """Short jobs on one slot: a commit claims a job for the slot and one ahead behind
    it; the reserve behind them is claimed for ``REFILL_TURNS`` turns of the slot at once,
    handed out as the slot makes room, and claimed again once it keeps less than a turn."""
    turn = 2  # one slot: a job running and one ahead
    assert REFILL_TURNS > 1
    hs = [submit(q, jobs.noop) for _ in range(1 + turn + 2 * REFILL_TURNS * turn)]
    d, (slot,) = dispatcher(q._store, clock)
    try:
        assert d.step(clock.at(T0)) == 1
        tick = iter(range(1, 100))
        # 1 outcome; 1 + 1 ahead in the slot, and the reserve for REFILL_TURNS turns
        assert d.step(clock.at(T0 + 0.001 * next(tick))) == 1 + turn + REFILL_TURNS * turn
        assert len(slot.jobs) == turn and len(d.reserve.jobs) == REFILL_TURNS * turn
        assert [h.record().state for h in hs[1:]].count("running") == turn + REFILL_TURNS * turn
        for left in range(REFILL_TURNS - 1, 0, -1):  # turns go out; nothing claimed
            assert d.step(clock.at(T0 + 0.001 * next(tick))) == turn
            assert len(d.reserve.jobs) == left * turn
        # the last turn goes out: the reserve is claimed again (what is left of the jobs)
        assert d.step(clock.at(T0 + 0.001 * next(tick))) == turn + REFILL_TURNS * turn
        for _ in range(REFILL_TURNS + 1):
            d.step(clock.at(T0 + 0.001 * next(tick)))
        assert states(hs) == ["done"] * len(hs) and slot.ran == [h.id for h in hs]
        assert {h.record().attempt for h in hs} == {1}
    finally:
        d.stop()


def test_a_timeout_is_enforced_once_the_clock_passes_it(q, clock) -> None:
    h = submit(q, jobs.noop, timeout=10)
    d, (slot,) = dispatcher(q._store, clock)
    slot.held = True  # the job runs until the test says
    try:
        d.step(clock.at(T0))
        assert h.state == "running" and h.record().started == T0
        d.step(clock.at(T0 + 10))  # its timeout, not past it
        assert h.state == "running" and slot.kills == 0
        assert d.step(clock.at(T0 + 10.001)) == 1
        record = h.record()
        assert (record.state, record.error.exc_type) == ("failed", "TimeoutError")
        assert "ran longer than its timeout of 10s; its worker process was killed" in \
            record.error.exc_value
        assert record.ended == T0 + 10.001
        assert slot.kills == 1 and slot.ran == []
    finally:
        d.stop()


def test_a_cancel_reaches_a_running_job_at_the_next_step(q, clock) -> None:
    h = submit(q, jobs.noop)
    other = submit(q, jobs.noop)
    d, (slot, beside) = dispatcher(q._store, clock, workers=2)
    slot.held = beside.held = True
    try:
        d.step(clock.at(T0))
        assert states([h, other]) == ["running", "running"]
        assert elsewhere(h.cancel)
        assert h.state == "running"  # asked; stopped by its dispatcher
        assert d.step(clock.at(T0 + 1)) == 1
        assert states([h, other]) == ["cancelled", "running"]
        assert (slot.kills, beside.kills) == (1, 0)
        beside.held = False
        d.step(clock.at(T0 + 2))
        assert other.state == "done" and h.state == "cancelled"
    finally:
        d.stop()


def test_a_lapsed_lease_hands_jobs_back_without_charging_an_attempt(q, clock) -> None:
    """Its lease of 30 s lapses once the clock passes its end less the workers' margin
    (5 s): the next step stops the slots and hands their jobs back, no attempt used."""
    h = submit(q, jobs.noop)  # no retries: a charged attempt would fail it
    d, (slot,) = dispatcher(q._store, clock, lease=30)
    slot.held = True
    try:
        d.step(clock.at(T0))
        assert h.state == "running" and h.record().attempt == 1
        d.step(clock.at(T0 + 24.9))  # not lapsed: renewed (due at a third), until T0 + 54.9
        assert d._lease.until == T0 + 24.9 + 30 and not d._lease.lapsed
        assert h.state == "running" and slot.kills == 0

        clock.at(T0 + 24.9 + 25)  # past until - margin
        assert d._lease.expired()
        d.step()
        assert slot.kills == 1 and not d.fence.fenced and not d._lease.expired()
        record = h.record()  # back to ready and claimed again by the same step
        assert (record.state, record.deaths, record.error) == ("running", 0, None)
        assert LAPSED in record.why
        slot.held = False
        d.step(clock.at(T0 + 50))
        assert h.state == "done" and h.result() is None and slot.ran == [h.id]
    finally:
        d.stop()


def test_retries_wait_their_backoff_on_the_clock(q, clock, tmp_path) -> None:
    h = submit(q, jobs.flaky, tmp_path / "count", 2, retries=3, retry_delay=10)
    d, (slot,) = dispatcher(q._store, clock)
    try:
        d.step(clock.at(T0))
        d.step(clock.at(T0 + 1))  # it ran, failed: the first retry waits 10 s
        first = h.record()
        assert (first.state, first.attempt, first.not_before) == ("waiting", 1, T0 + 11)
        assert first.error.exc_value == "failure 1"
        assert d.step(clock.at(T0 + 10.99)) == 0 and h.state == "waiting"
        assert d.step(clock.at(T0 + 11)) == 1 and h.state == "running"
        d.step(clock.at(T0 + 12))
        second = h.record()  # the second retry waits twice as long
        assert (second.state, second.attempt, second.not_before) == ("waiting", 2, T0 + 32)
        assert d.step(clock.at(T0 + 31.99)) == 0 and h.state == "waiting"
        assert d.step(clock.at(T0 + 32)) == 1
        d.step(clock.at(T0 + 33))
        assert h.state == "done" and h.result() == 3 and h.record().attempt == 3
        assert slot.ran == [h.id] * 3
    finally:
        d.stop()


def test_a_store_error_holds_outcomes_and_the_next_cycles_settle_them(q, clock,
                                                                       queue_dir) -> None:
    """Another connection holds the write lock: the cycle that commits fails, its
    outcomes are held (not lost, not failed), the next cycles try again, each outcome in
    a transaction of its own, and once the lock is gone they are settled."""
    hs = [submit(q, jobs.add, i, 1) for i in range(2)]
    store = Store(queue_dir, timeout=0.01)  # the lock: given up at once
    d, slots = dispatcher(store, clock, workers=2)
    stranger = sqlite3.connect(queue_dir / "cache.db", isolation_level=None)
    try:
        assert d.cycle(clock.at(T0)) is None
        assert states(hs) == ["running", "running"]
        stranger.execute("BEGIN IMMEDIATE")  # the write lock, held
        assert d.cycle(clock.at(T0 + 1)) == pytest.approx(0.05)  # the first pause
        assert d.failures.count == 1 and "locked" in d.store_error
        assert len(d.slots.ended) == 2 and [s.ran for s in slots] == [[hs[0].id], [hs[1].id]]
        assert d.cycle(clock.at(T0 + 2)) == pytest.approx(0.1)  # then twice as long
        assert d.failures.count == 2 and len(d.slots.ended) == 2
        stranger.execute("ROLLBACK")
        assert states(hs) == ["running", "running"]

        assert d.cycle(clock.at(T0 + 3)) is None  # settled one by one; nothing claimed
        assert d.store_error is None and d.failures.since is None and not d.slots.ended
        assert states(hs) == ["done", "done"] and [h.result() for h in hs] == [1, 2]
        assert {h.record().ended for h in hs} == {T0 + 3}
        assert {h.record().attempt for h in hs} == {1}
        late = submit(q, jobs.add, 5, 5)
        assert d.cycle(clock.at(T0 + 4)) is None and d.cycle(clock.at(T0 + 5)) is None
        assert late.result() == 10
    finally:
        stranger.close()
        d.stop()
        store.close()


def test_a_worker_that_dies_under_a_job_counts_a_death(q, clock) -> None:
    h = submit(q, jobs.noop)
    d, (slot,) = dispatcher(q._store, clock)
    slot.held = True
    try:
        d.step(clock.at(T0))
        slot.lose()
        assert d.step(clock.at(T0 + 1)) == 1 + 1  # the death, and the same job claimed again
        record = h.record()
        assert (record.state, record.deaths, record.attempt) == ("running", 1, 2)
        assert slot.kills == 1
        slot.held = False
        d.step(clock.at(T0 + 2))
        assert h.state == "done"
    finally:
        d.stop()
