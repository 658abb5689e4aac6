"""Property tests of the pure job model (``nbqueue/job.py``) and a stateful test of the
store's transitions, without workers: random submits, claims by two dispatchers,
completions, crashes, resources and gates, checked against invariants after each step."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nbqueue import job as J
from nbqueue.message import pack_args, pack_function
from nbqueue.store import Owner, Store

state_names = st.sampled_from(J.STATES)

# -- the transition table --------------------------------------------------------------------


@given(state_names, state_names)
def test_can_move_is_the_table(src, dst):
    assert J.can_move(src, dst) == (dst in J.TRANSITIONS[src])


@given(state_names, state_names, st.text(alphabet="0123456789abcdef", min_size=1, max_size=10))
def test_check_move_raises_naming_the_job(src, dst, job_id):
    if J.can_move(src, dst):
        assert J.check_move(job_id, src, dst) is None
    else:
        with pytest.raises(ValueError, match=re.escape(f"job {job_id} is {src}")):
            J.check_move(job_id, src, dst)


def test_unknown_states_cannot_move():
    assert not J.can_move("finished", J.READY)
    assert not J.can_move(J.READY, "finished")


def test_table_is_closed_over_the_states():
    assert set(J.TRANSITIONS) == set(J.STATES)
    assert set().union(*J.TRANSITIONS.values()) <= set(J.STATES)
    assert J.ENDED | J.ACTIVE == set(J.STATES)
    assert not J.ENDED & J.ACTIVE


def test_ended_states_have_no_way_back_but_a_rerun():
    for src in J.ENDED:
        for dst in J.TRANSITIONS[src]:
            assert src in (J.FAILED, J.CANCELLED)
            assert dst in (J.READY, J.WAITING)
    assert J.TRANSITIONS[J.DONE] == frozenset()
    assert J.TRANSITIONS[J.REJECTED] == frozenset()


def _reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in J.TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_and_every_active_state_can_end():
    assert _reachable(J.WAITING) == set(J.STATES)
    for state in J.ACTIVE:
        assert _reachable(state) & J.ENDED
        assert J.CANCELLED in _reachable(state)  # anything not ended can be cancelled


# -- backoff ------------------------------------------------------------------------------------


@given(st.integers(1, 60), st.floats(0, 1e3, allow_nan=False))
def test_retry_delay_doubles_up_to_ten_years(attempt, base):
    cap = J.RETRY_DELAY_CAP
    assert J.retry_delay_for(1, base) == base
    assert J.retry_delay_for(attempt + 1, base) == pytest.approx(
        min(2 * J.retry_delay_for(attempt, base), cap))
    assert J.retry_delay_for(attempt, base) == pytest.approx(min(base * 2 ** (attempt - 1), cap))


@given(st.integers(1, 10 ** 9), st.floats(0, 10 * 365 * 86400, allow_nan=False))
def test_retry_delay_of_any_attempt_is_a_storable_number(attempt, base):
    # 2 ** attempt for a large attempt would overflow a float: the backoff stops at the cap
    assert 0 <= J.retry_delay_for(attempt, base) <= J.RETRY_DELAY_CAP


@given(st.integers(-5, 0), st.floats(0, 1e3, allow_nan=False))
def test_retry_delay_before_any_attempt_is_the_base(attempt, base):
    assert J.retry_delay_for(attempt, base) == base


# -- resources ------------------------------------------------------------------------------------

resource_names = st.text(min_size=1, max_size=8).filter(lambda s: s == s.strip())


@given(st.lists(resource_names, max_size=6))
def test_normalize_a_list_counts_units(names):
    out = J.normalize_resources(names)
    assert out == dict(Counter(names))
    assert J.normalize_resources(out) == out


@given(st.dictionaries(resource_names, st.integers(1, 100), max_size=6))
def test_normalize_a_dict_keeps_it(units):
    assert J.normalize_resources(units) == units
    assert J.normalize_resources(tuple(units)) == dict.fromkeys(units, 1)


@given(resource_names)
def test_normalize_a_single_name(name):
    assert J.normalize_resources(name) == {name: 1}


def test_normalize_nothing():
    assert J.normalize_resources(None) == {} == J.normalize_resources([])


bad_resources = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.one_of(st.integers(), st.none(), st.just(""), st.just(" db")), min_size=1),
    st.dictionaries(resource_names, st.one_of(st.integers(max_value=0), st.booleans(),
                                              st.floats(), st.text()), min_size=1),
    st.dictionaries(st.integers(), st.integers(1, 3), min_size=1),
)


@given(bad_resources)
def test_normalize_refuses_anything_else(value):
    with pytest.raises(ValueError, match="resources"):
        J.normalize_resources(value)


# -- options -------------------------------------------------------------------------------------

good_options = st.builds(
    J.Options,
    name=st.one_of(st.none(), st.text(max_size=10)),
    priority=st.integers(-1000, 1000),
    retries=st.integers(0, 50),
    retry_delay=st.one_of(st.integers(0, 100), st.floats(0, 1e4, allow_nan=False)),
    timeout=st.one_of(st.none(), st.integers(1, 100), st.floats(1e-3, 1e6)),
    resources=st.dictionaries(resource_names, st.integers(1, 9), max_size=3),
)


@given(good_options)
def test_options_round_trip_through_json(options):
    assert J.Options.from_dict(json.loads(json.dumps(options.to_dict()))) == options


@given(st.sampled_from(["priority", "retries", "retry_delay", "timeout", "resources"]), st.data())
def test_options_refuse_bad_values(field, data):
    bad = {
        "priority": st.one_of(st.booleans(), st.text(), st.floats(), st.none()),
        "retries": st.one_of(st.integers(max_value=-1), st.booleans(), st.floats(), st.text()),
        "retry_delay": st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-9),
                                 st.just(math.nan), st.text(), st.booleans()),
        "timeout": st.one_of(st.integers(max_value=0), st.floats(max_value=0),
                             st.just(math.nan), st.text(), st.booleans()),
        "resources": bad_resources,
    }[field]
    value = data.draw(bad)
    with pytest.raises(ValueError, match=field):
        J.Options(**{field: value})


# -- the store as a state machine -------------------------------------------------------------

FUNCTION = pack_function(len)
ARGS, _ = pack_args(((),), {}, label="len()")
RESOURCES = ("a", "b")
LEASE = 1e6  # leases never expire here: crashes are the only way a job is put back


def _dead_pid() -> int:
    pid = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1 if Path(
        "/proc/sys/kernel/pid_max").exists() else 999_999
    while pid > 1:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1
    raise RuntimeError("no free pid")


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # tmpfs when there is one: the store fsyncs every commit, which is slow on a disk
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.tmp = tempfile.mkdtemp(prefix="nbq-model-", dir=shm)
        self.store = Store(Path(self.tmp) / "q")
        self.now = 1_000_000.0
        me = Owner.current()
        self.owners = [str(Owner.current()), str(Owner.current())]
        self.dead = str(Owner(me.host, me.boot, _dead_pid(), "12345", "dead"))
        assert Owner.parse(self.dead).is_dead()
        self.ids: list[str] = []
        self.serial = 0
        self.needs: dict[str, set[str]] = {}
        self.held: dict[str, dict[str, int]] = {o: {} for o in self.owners}

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # helpers
    def state(self, job_id: str) -> str:
        return self.store.get(job_id).state

    def in_state(self, *states: str) -> list[str]:
        rows = self.store._rows(
            f"SELECT id FROM nbq_job WHERE state IN ({','.join('?' * len(states))}) ORDER BY seq",
            states)
        return [r[0] for r in rows]

    def record_claims(self, owner: str, claimed: list[J.Claimed]) -> None:
        for c in claimed:
            for other in self.owners:
                assert c.id not in self.held[other], f"{c.id} claimed twice"
            self.held[owner][c.id] = c.claim

    # rules
    @initialize(n=st.integers(0, 4))
    def plain_jobs(self, n):
        """Start with a few jobs that are ready at once, so that claims have work."""
        jobs = []
        for _ in range(n):
            self.serial += 1
            jobs.append(J.NewJob(id=f"j{self.serial:04d}", name="plain", options=J.Options(),
                                 function=FUNCTION, args=ARGS))
        self.store.submit_many(jobs, now=self.now)
        for new in jobs:
            self.ids.append(new.id)
            self.needs[new.id] = set()

    @rule(data=st.data(), n=st.integers(1, 3))
    def submit(self, data, n):
        batch = []
        for _ in range(n):
            kind = data.draw(st.sampled_from([J.CALL] * 4 + [J.GATE]))
            needs = data.draw(st.lists(st.sampled_from(self.ids), max_size=2, unique=True)
                              if self.ids and data.draw(st.integers(0, 2)) == 0 else st.just([]))
            resources = {}
            if kind == J.CALL:
                resources = data.draw(st.one_of(st.just({}), st.dictionaries(
                    st.sampled_from(RESOURCES), st.integers(1, 2), max_size=2)))
            options = J.Options(priority=data.draw(st.integers(0, 2)),
                                retries=data.draw(st.integers(0, 1)),
                                retry_delay=data.draw(st.sampled_from([0, 5])),
                                resources=resources)
            # keyed jobs have no needs: a rerun does not wait for needs again (see test_queue)
            key = None if needs else data.draw(st.sampled_from([None, None, "k1", "k2"]))
            self.serial += 1  # ids in order, not random: hypothesis replays need the same draws
            batch.append(J.NewJob(id=f"j{self.serial:04d}", name=kind, options=options, kind=kind, key=key,
                                  function=FUNCTION if kind == J.CALL else None,
                                  args=ARGS if kind == J.CALL else None,
                                  needs=tuple(needs)))
        before = set(self.ids)
        results = self.store.submit_many(batch, now=self.now)
        assert len(results) == n
        for new, (job_id, created) in zip(batch, results, strict=True):
            if created:
                assert job_id == new.id and job_id not in before
                self.ids.append(job_id)
                self.needs[job_id] = set(new.needs)
            else:
                assert job_id in self.ids and self.store.get(job_id).key == new.key

    @rule(owner=st.integers(0, 1), n=st.integers(1, 3), handed=st.integers(0, 1))
    def claim(self, owner, n, handed):
        who = self.owners[owner]
        claimed = self.store.claim(who, n, lease=LEASE, ahead=handed, now=self.now)
        assert len(claimed) <= n
        event(f"claimed {len(claimed)}")
        self.record_claims(who, claimed)
        for c in claimed:
            record = self.store.get(c.id)
            assert record.state == J.RUNNING and record.owner == who
            assert record.attempt == c.attempt

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data(), kind=st.sampled_from(["done", "failed", "failed", "released",
                                                "cancelled", "died"]),
          retryable=st.booleans(), spawn=st.integers(0, 2))
    def complete(self, data, kind, retryable, spawn):
        owner = data.draw(st.sampled_from([o for o in self.owners if self.held[o]]))
        job_id = data.draw(st.sampled_from(sorted(self.held[owner])))
        claim = self.held[owner].pop(job_id)
        spawned = tuple(
            J.NewJob(id=f"{job_id}.{i + 1}", name="child", options=J.Options(), function=FUNCTION,
                     args=ARGS, parent=job_id) for i in range(spawn)) if kind == "done" else ()
        outcome = J.Outcome(job_id, claim, kind, result=pickle.dumps(job_id) if kind == "done"
                            else None,
                            error=J.RemoteError("ValueError", "no") if kind == "failed" else None,
                            retryable=retryable, spawned=spawned)
        before_it = self.store.get(job_id)
        applied, claimed = self.store.complete(owner, [outcome], now=self.now)
        assert applied == [True] and claimed == []
        after = self.store.get(job_id)
        assert after.state != J.RUNNING
        event(f"complete {kind} -> {after.state}")
        if kind == "died" and after.state == J.CANCELLED:  # it had been cancelled: no death
            assert before_it.reason == "cancelling" and after.deaths == before_it.deaths
        elif kind == "died":  # its own worker died: a death, and the third poisons it
            assert after.deaths == before_it.deaths + 1
            if after.deaths >= J.POISON_DEATHS:
                event("poisoned")
                assert after.state == J.FAILED and after.error.exc_type == "PoisonedJob"
            else:
                assert after.state == J.READY and after.attempt == before_it.attempt
        else:
            assert after.deaths == before_it.deaths
        if kind == "done":
            assert after.state == J.DONE
            assert pickle.loads(self.store.result_blob(job_id)) == job_id
            for child in spawned:
                assert self.store.get(child.id).parent == job_id
                self.ids.append(child.id)
                self.needs[child.id] = set()
        # a second completion of the same claim is fenced off and changes nothing
        before = self.store.changes()
        assert self.store.complete(owner, [outcome], now=self.now)[0] == [False]
        assert self.store.changes() == before
        assert self.store.get(job_id) == after

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def stale_complete(self, data):
        owner = data.draw(st.sampled_from([o for o in self.owners if self.held[o]]))
        job_id = data.draw(st.sampled_from(sorted(self.held[owner])))
        claim = self.held[owner][job_id]
        other = self.owners[1 - self.owners.index(owner)]
        before, record = self.store.changes(), self.store.get(job_id)
        for who, which in ((other, claim), (owner, claim - 1), (self.dead, claim)):
            applied, _ = self.store.complete(who, [J.Outcome(job_id, which, "done")],
                                             now=self.now)
            assert applied == [False]
        assert self.store.changes() == before
        assert self.store.get(job_id) == record

    @rule(n=st.integers(1, 3))
    def crash(self, n):
        """A dispatcher claims jobs and its process dies; recovery puts them back."""
        claimed = self.store.claim(self.dead, n, lease=LEASE, now=self.now)
        for c in claimed:
            for other in self.owners:
                assert c.id not in self.held[other]
        deaths = {c.id: self.store.get(c.id).deaths for c in claimed}
        assert self.store.recover(now=self.now) == len(claimed)
        for c in claimed:
            record = self.store.get(c.id)
            # a dispatcher's process that dies is not a death of its jobs, nor an attempt
            # charged: the attempt stays on record, with why it runs again
            assert record.owner is None
            assert record.deaths == deaths[c.id]
            assert record.state == J.READY
            assert record.attempt == c.attempt
            assert record.why == f"its dispatcher's process died while attempt {c.attempt} ran"

    @rule(name=st.sampled_from(RESOURCES), capacity=st.integers(1, 3),
          available=st.one_of(st.none(), st.booleans()))
    def set_resource(self, name, capacity, available):
        held = self.store._one("SELECT COALESCE(SUM(units), 0) FROM nbq_hold WHERE resource = ?",
                               (name,))
        # lowering a capacity below what running jobs hold does not take it back from them
        self.store.set_resource(name, capacity=max(capacity, held), available=available)

    @precondition(lambda self: bool(self.in_state(J.REVIEW)))
    @rule(data=st.data(), approved=st.booleans())
    def decide(self, data, approved):
        gate = data.draw(st.sampled_from(self.in_state(J.REVIEW)))
        self.store.decide(gate, approve=approved, comment="ok")
        record = self.store.get(gate)
        assert record.state == (J.DONE if approved else J.REJECTED)
        decision = pickle.loads(self.store.result_blob(gate))
        assert bool(decision) is approved and decision.comment == "ok"

    @precondition(lambda self: bool(self.ids))
    @rule(data=st.data())
    def decide_wrong_job(self, data):
        job_id = data.draw(st.sampled_from(self.ids))
        record = self.store.get(job_id)
        if record.state == J.REVIEW:
            return
        before = self.store.changes()
        with pytest.raises(ValueError):
            self.store.decide(job_id, approve=data.draw(st.booleans()))
        assert self.store.changes() == before
        assert self.store.get(job_id) == record

    @precondition(lambda self: bool(self.ids))
    @rule(data=st.data())
    def cancel(self, data):
        job_id = data.draw(st.sampled_from(self.ids))
        before = self.store.get(job_id).state
        self.store.cancel(job_id, now=self.now)
        after = self.store.get(job_id).state
        if before in J.ENDED or before == J.RUNNING:
            assert after == before  # a running job is stopped by its dispatcher
        else:
            assert after == J.CANCELLED

    @precondition(lambda self: bool(self.in_state(J.FAILED, J.CANCELLED)))
    @rule(data=st.data())
    def retry(self, data):
        candidates = [j for j in self.in_state(J.FAILED, J.CANCELLED)
                      if not self.needs[j] and self.store.get(j).kind == J.CALL]
        if not candidates:
            return
        job_id = data.draw(st.sampled_from(candidates))
        self.store.retry(job_id, now=self.now)
        record = self.store.get(job_id)
        assert record.state == J.READY and record.error is None and record.deaths == 0

    @rule(seconds=st.sampled_from([1, 6]))
    def time_passes(self, seconds):
        self.now += seconds

    # invariants
    @invariant()
    def counts_match_the_rows(self):
        actual = dict.fromkeys(J.STATES, 0)
        actual.update(dict(self.store._rows("SELECT state, COUNT(*) FROM nbq_job GROUP BY state")))
        assert self.store.counts() == actual

    @invariant()
    def resources_within_capacity_and_held_by_running_jobs(self):
        for name, held in self.store._rows("SELECT resource, SUM(units) FROM nbq_hold "
                                           "GROUP BY resource"):
            row = self.store._rows("SELECT capacity FROM nbq_resource WHERE name = ?", (name,))
            capacity = row[0][0] if row else 1
            assert held <= capacity, f"resource {name}: {held} units held, capacity {capacity}"
        holders = self.store._rows("SELECT DISTINCT job FROM nbq_hold")
        for (job_id,) in holders:
            assert self.state(job_id) == J.RUNNING

    @invariant()
    def no_job_is_lost(self):
        present = {r[0] for r in self.store._rows("SELECT id FROM nbq_job")}
        assert present == set(self.ids)

    @invariant()
    def a_failed_need_cancels(self):
        states = dict(self.store._rows("SELECT id, state FROM nbq_job"))
        for job_id, needs in self.needs.items():
            if any(states[n] in (J.FAILED, J.CANCELLED, J.REJECTED) for n in needs):
                assert states[job_id] == J.CANCELLED, (job_id, states[job_id])
            if states[job_id] in (J.READY, J.RUNNING, J.REVIEW, J.DONE) and needs:
                assert all(states[n] == J.DONE for n in needs)

    @invariant()
    def running_jobs_have_exactly_the_owner_that_claimed_them(self):
        rows = self.store._rows("SELECT id, owner, claim FROM nbq_job WHERE state = 'running'")
        running: dict[str, dict[str, int]] = {o: {} for o in self.owners}
        for job_id, owner, claim in rows:
            assert owner in running, f"{job_id} running for {owner}"
            running[owner][job_id] = claim
        assert running == self.held


@pytest.mark.timeout(60)
def test_claim_ends_when_two_waiters_block_each_other(tmp_path):
    """Found by the machine below: X wants {a: 2, b: 1}, Y wants {b: 2, a: 1}, and a and b
    each have 1 of 2 units held. Parking X passed the turn to Y and parking Y to X, forever,
    inside claim()'s write transaction."""
    store = Store(tmp_path / "q")
    me = str(Owner.current())
    store.set_resource("a", capacity=2)
    store.set_resource("b", capacity=2)

    def job(job_id, resources):
        return J.NewJob(id=job_id, name=job_id, options=J.Options(resources=resources),
                        function=FUNCTION, args=ARGS)

    store.submit_many([job("holds-a", {"a": 1}), job("holds-b", {"b": 1})])
    assert {c.id for c in store.claim(me, 2, lease=LEASE)} == {"holds-a", "holds-b"}
    store.submit_many([job("x", {"a": 2, "b": 1}), job("y", {"b": 2, "a": 1}), job("free", {})])
    assert [c.id for c in store.claim(me, 3, lease=LEASE)] == ["free"]
    assert {store.get("x").state, store.get("y").state} == {J.WAITING}
    store.close()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(max_examples=50, stateful_step_count=50, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
