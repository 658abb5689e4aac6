"""Human review gates: ``q.review``, approve, reject, payloads, across processes."""

from __future__ import annotations

import base64
import getpass
import time
from pathlib import Path

import jobs
import pytest
from conftest import run_python, wait_for

import nbqueue


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def test_gate_waits_for_its_needs_then_for_a_person(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        report = q.submit(jobs.wait_for_file, flag, "report", key=None)
        gate = q.review("Approve the Q3 report", payload="all numbers add up", needs=[report])
        publish = q.submit(jobs.square, 5, needs=[gate], key=None)
        assert (gate.state, gate.reason) == ("waiting", f"needs job {report.id}")
        assert (publish.state, publish.reason) == ("waiting", f"needs job {gate.id}")
        assert q.reviews() == []
        flag.touch()
        assert report.result(timeout=60) == "report"
        wait_for(lambda: gate.state == "review", message="the gate reaching review")
        assert gate.reason == "review"
        assert gate.name == "Approve the Q3 report"
        assert q.reviews() == [gate]
        assert publish.state == "waiting"
        before = time.time()
        q.approve(gate.id, comment="looks right")
        after = time.time()
        assert publish.result(timeout=60) == 25
        assert gate.state == "done"
        decision = gate.result()
        assert isinstance(decision, nbqueue.Decision)
        assert decision == nbqueue.Decision(True, "looks right", os_user(), decision.at)
        assert before <= decision.at <= after
        assert decision and decision.approved
        assert gate.reason == f"approved by {os_user()}: looks right"
        assert q.reviews() == []


def test_a_gate_holds_no_worker(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        gates = [q.review(f"gate {i}") for i in range(3)]
        assert q.submit(jobs.square, 4, key=None).result(timeout=60) == 16
        assert [g.state for g in gates] == ["review"] * 3


def test_reject_cancels_dependents_with_the_reason(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        gate = q.review("Ship it?")
        publish = q.submit(jobs.square, 5, needs=[gate], key=None)
        announce = q.submit(jobs.square, 6, needs=[publish], key=None)
        q.reject(gate, comment="numbers are off")
        assert gate.state == "rejected"
        assert gate.reason == f"rejected by {os_user()}: numbers are off"
        assert (publish.state, publish.reason) == (
            "cancelled", f"needs job {gate.id}, which ended rejected")
        assert (announce.state, announce.reason) == (
            "cancelled", f"needs job {publish.id}, which ended cancelled")
        with pytest.raises(nbqueue.JobCancelled, match="numbers are off"):
            gate.result(timeout=5)
        with pytest.raises(nbqueue.JobCancelled, match="ended rejected"):
            publish.result(timeout=5)
        late = q.submit(jobs.square, 7, needs=[gate], key=None)  # needs an already rejected gate
        assert (late.state, late.reason) == ("cancelled", f"needs job {gate.id}, which ended rejected")


def test_deciding_twice_or_a_non_gate_raises_and_changes_nothing(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        gate = q.review("once only")
        q.approve(gate, comment="first")
        decision, record = gate.result(), gate.record()
        for act in (q.approve, q.reject):
            with pytest.raises(ValueError, match="only a gate in review"):
                act(gate.id, comment="second")
        assert gate.result() == decision
        assert gate.record() == record

        job = q.submit(jobs.square, 3, key=None)
        assert job.result(timeout=60) == 9
        record = job.record()
        with pytest.raises(ValueError, match="not a review gate"):
            q.approve(job.id)
        assert job.record() == record and job.result() == 9

        upstream = q.submit(jobs.wait_for_file, Path(q.path) / "never", key=None)
        waiting = q.review("not yet", needs=[upstream])
        with pytest.raises(ValueError, match="waiting"):
            q.approve(waiting)
        assert waiting.state == "waiting"
        upstream.cancel()

        with pytest.raises(nbqueue.NoSuchJob):
            q.approve("no-such-gate")


class Html:
    def _repr_html_(self) -> str:
        return "<b>bold</b>"

    def __repr__(self) -> str:
        return "Html()"


class Png:
    PNG = b"\x89PNG\r\n\x1a\nnot really a picture"

    def _repr_png_(self) -> bytes:
        return self.PNG

    def __repr__(self) -> str:
        return "Png()"


def test_payload_is_kept_as_a_display_bundle(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        text = q.review("text", payload="3 rows changed")
        rich = q.review("html", payload=Html())
        picture = q.review("png", payload=Png())
        bare = q.review("none")
        assert text.payload == {"text/plain": "3 rows changed"}
        assert rich.payload == {"text/plain": "Html()", "text/html": "<b>bold</b>"}
        png = picture.payload
        assert png["text/plain"] == "Png()"
        assert base64.b64decode(png["image/png"]) == Png.PNG
        assert bare.payload == {}


def test_same_review_attaches_to_the_same_gate(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        need = q.submit(jobs.square, 2)
        gate = q.review("Check", payload="v1", needs=[need])
        again = q.review("Check", payload="another payload", needs=[need.id])
        assert again == gate
        assert q.review("Check") != gate  # other needs
        assert q.review("Check again", needs=[need]) != gate  # other title
        assert q.review("Check", needs=[need], key=None) != gate
        assert gate.key is not None and gate.key.startswith("auto:")
        assert gate.payload == {"text/plain": "v1"}  # the first
        assert need.result(timeout=60) == 4
        wait_for(lambda: gate.state == "review", message="the gate reaching review")
        q.approve(gate)
        assert q.review("Check", needs=[need]) == gate  # decided gates are attached to too
        assert gate.result() == nbqueue.Decision(True, "", os_user(), gate.result().at)


def test_gate_created_in_one_process_approved_in_another_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "q"
    created = run_python(f"""
        import jobs, nbqueue
        with nbqueue.Queue({str(path)!r}, start=False) as q:
            gate = q.review("Deploy?", payload="diff: +3 -1")
            after = q.submit(jobs.square, 9, needs=[gate], key="deploy")
            print(gate.id)
    """, cwd=tmp_path)
    gate_id = created.stdout.strip()
    approved = run_python(f"""
        import nbqueue
        with nbqueue.Queue({str(path)!r}, start=False) as q:
            [gate] = q.reviews()
            assert gate.id == {gate_id!r}, gate
            q.approve(gate.id, comment="go ahead")
            print(gate.state)
    """, cwd=tmp_path)
    assert approved.stdout.strip() == "done"
    with nbqueue.Queue(path, workers=1) as q:
        assert q.job("deploy").result(timeout=60) == 81
        decision = q.job(gate_id).result()
        assert (decision.approved, decision.comment, decision.by) == (True, "go ahead", os_user())


def test_approval_from_another_process_releases_a_running_queue(tmp_path: Path) -> None:
    path = tmp_path / "q"
    with nbqueue.Queue(path, workers=1) as q:
        gate = q.review("Release?")
        release = q.submit(jobs.add, 40, 2, needs=[gate], key=None)
        run_python(f"""
            import nbqueue
            q = nbqueue.Queue({str(path)!r}, start=False)
            q.approve({gate.id!r}, comment="from elsewhere")
            q.close()
        """, cwd=tmp_path)
        assert release.result(timeout=60) == 42
        assert gate.result().comment == "from elsewhere"


def test_gate_with_after_reaches_review_at_its_time(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        gate = q.review("Later", after="in 1s")
        assert gate.state == "waiting" and gate.reason.startswith("not before ")
        wait_for(lambda: gate.state == "review", message="the gate's time coming")
        q.approve(gate)
        assert gate.result(timeout=5).approved


def test_cancelling_a_gate(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        gate = q.review("Never mind")
        dependent = q.submit(jobs.square, 2, needs=[gate], key=None)
        assert gate.cancel()
        assert gate.state == "cancelled" and dependent.state == "cancelled"
        with pytest.raises(ValueError):
            q.approve(gate)


# -- what a reviewer sees and answers (nbqueue.reviewing) -------------------------------------

ASKS = {"threshold": 0.5, "region": ["north", "south"], "note": str, "runs": 3, "final": bool}


def test_pending_reviews_show_fields_deadline_and_payload_oldest_first(tmp_path: Path) -> None:
    from nbqueue.reviewing import Field
    from nbqueue.reviews import pending_reviews, review_of

    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        first = q.review("First", payload=Html(), fields=ASKS, deadline=120,
                         on_deadline="keep", remind_every="30m")
        upstream = q.submit(jobs.square, 2, key=None)
        q.review("Not yet", needs=[upstream])  # waiting: not pending
        second = q.review("Second", name="second-gate", deadline="in 2h")
        pending = pending_reviews(q)
        assert [r.id for r in pending] == [first.id, second.id]
        r = pending[0]
        assert (r.title, r.name, r.state, r.on_deadline, r.remind_every) == (
            "First", "First", "review", "keep", 1800.0)
        assert r.fields == (Field("threshold", "number", 0.5),
                            Field("region", "choice", "north", ("north", "south")),
                            Field("note", "text"), Field("runs", "integer", 3),
                            Field("final", "bool", False))
        assert r.payload_bundle == {"text/plain": "Html()", "text/html": "<b>bold</b>"}
        assert r.time_left(r.created) == 120 and r.time_left(r.created + 150) == -30
        assert r.deadline_text(r.created + 60) == "1m left (then kept waiting)"
        assert pending[1].title == "Second" and pending[1].name == "second-gate"
        assert pending[1].time_left(pending[1].created) == pytest.approx(7200)
        assert review_of(q, first.id) == r
        with pytest.raises(nbqueue.InvalidArgument, match="not a review gate"):
            review_of(q, upstream.id)
        with pytest.raises(nbqueue.NoSuchJob):
            review_of(q, "no-such-gate")


def test_answers_are_validated_by_type_and_nothing_changes_on_a_bad_one(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        gate = q.review("Pick", fields=ASKS)
        record = gate.record()
        for values, field in (({"threshold": "high", "note": "x"}, "threshold"),
                              ({"runs": "2.5", "note": "x"}, "runs"),
                              ({"region": "west", "note": "x"}, "region"),
                              ({"final": "maybe", "note": "x"}, "final"),
                              ({"threshold": 0.7}, "note"),  # required, no default
                              ({"note": "x", "colour": "red"}, "colour")):  # not asked for
            with pytest.raises(nbqueue.InvalidAnswer, match=f"field '{field}'"):
                q.approve(gate, values=values)
            assert gate.record() == record
        with pytest.raises(nbqueue.InvalidAnswer, match="rejection takes a comment only"):
            q._store.decide(gate.id, approve=False, values={"note": "x"})
        with pytest.raises(ValueError):  # InvalidAnswer is a ValueError, as the contract says
            q.approve(gate, values={"runs": "many", "note": "x"})
        assert gate.record() == record
        q.approve(gate, "ok", values={"threshold": "0.75", "runs": 4, "final": "yes",
                                      "note": "checked", "region": "south"})
        assert gate.result().values == {"threshold": 0.75, "region": "south",
                                        "note": "checked", "runs": 4, "final": True}


def test_bad_review_options_store_nothing(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        for options, says in (({"fields": {"x": object()}}, "not a field"),
                              ({"fields": {"r": []}}, "not a field"),
                              ({"deadline": "someday"}, "deadline"),
                              ({"deadline": -5}, "deadline"),
                              ({"deadline": 60, "on_deadline": "ignore"}, "on_deadline"),
                              ({"on_deadline": "approve"}, "without a deadline"),
                              ({"fields": {"note": str}, "deadline": 60,
                                "on_deadline": "approve"}, "'note' has none"),
                              ({"remind_every": 0}, "remind_every")):
            with pytest.raises(nbqueue.SubmitError, match=says):
                q.review("Bad", **options)
        assert q.jobs() == []


def test_a_handler_reads_the_answers_after_its_yield(tmp_path: Path) -> None:
    from nbqueue.reviews import review_of

    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        h = q.submit(jobs.ask_threshold, 10, key=None)
        gate_id = f"{h.id}.0.0"
        wait_for(lambda: q._store.find(gate_id) and q.job(gate_id).state == "review",
                 message="the handler's review")
        review = review_of(q, gate_id)
        assert [f.name for f in review.fields] == ["threshold", "note"]
        assert review.deadline == pytest.approx(review.created + 3600, abs=5)
        with pytest.raises(nbqueue.InvalidAnswer, match="field 'threshold'"):
            q.approve(gate_id, values={"threshold": "x", "note": "n"})
        q.approve(gate_id, values={"threshold": "0.7", "note": "looks fine"})
        assert h.result(timeout=60) == (True, os_user(), 7.0, "looks fine")


def test_a_decision_pickled_before_answers_existed_loads_without_them() -> None:
    import pickle

    old = nbqueue.Decision(True, "ok", "ann", 1.0)
    object.__delattr__(old, "values")  # as an older nbqueue pickled it: no such attribute
    blob = pickle.dumps(old)
    assert b"values" not in blob
    loaded = pickle.loads(blob)
    assert loaded == nbqueue.Decision(True, "ok", "ann", 1.0) and loaded.values == {}


def test_approve_from_the_cli_with_answers(tmp_path: Path) -> None:
    import subprocess
    import sys

    from conftest import python_env

    def nbq(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nbqueue", *map(str, args)],
                              cwd=tmp_path, env=python_env(), text=True, capture_output=True,
                              timeout=120)

    q = nbqueue.Queue(tmp_path / "q", start=False)
    gate = q.review("Pick", fields={"threshold": 0.5, "note": str}, deadline=600)
    listed = nbq("reviews", q.path)
    assert "answers: threshold (number, default 0.5); note (text, required)" in listed.stdout
    assert "--set threshold=... --set note=..." in listed.stdout and "left (then kept waiting)" \
        in listed.stdout
    record = gate.record()
    bad = nbq("approve", q.path, gate.id, "--set", "threshold=high", "--set", "note=x")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "nbqueue approve: error: field 'threshold': 'high' is not a number; give a number "
        "such as 0.5"]
    assert gate.record() == record
    assert nbq("approve", q.path, gate.id, "--set", "threshold").returncode == 2
    good = nbq("approve", q.path, gate.id, "--set", "threshold=0.7", "--set", "note=fine",
               "-m", "ok")
    assert good.returncode == 0, good.stderr
    assert "answers: threshold=0.7, note='fine'" in good.stdout
    assert gate.result().values == {"threshold": 0.7, "note": "fine"}


def test_the_review_card_asks_for_the_fields_and_shows_the_time_left(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    from test_widgets import html_of, visible

    from nbqueue.widgets import QueuePanel

    with nbqueue.Queue(tmp_path / "q", start=False) as q:
        gate = q.review("Pick", fields={"threshold": 0.5, "region": ["north", "south"],
                                        "note": str, "final": True}, deadline=3600)
        panel = QueuePanel(q)
        try:
            card, = visible(panel, "nbq-review-card")
            assert "left (then kept waiting)" in html_of(card)
            threshold, = visible(card, "nbq-field-threshold")
            region, = visible(card, "nbq-field-region")
            note, = visible(card, "nbq-field-note")
            assert (threshold.value, region.value, note.value) == ("0.5", "north", "")
            assert list(region.options) == ["north", "south"]
            threshold.value = "lots"
            approve, = visible(card, "nbq-approve")
            approve.click()
            assert gate.state == "review"
            assert "field &#x27;threshold&#x27;" in panel._message.value
            threshold.value, region.value, note.value = "0.8", "south", "fine"
            approve.click()
            assert gate.state == "done"
            assert gate.result().values == {"threshold": 0.8, "region": "south",
                                            "note": "fine", "final": True}
        finally:
            panel.close()
