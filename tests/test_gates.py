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
from nbqueue.display import payload_bundle


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
        assert payload_bundle(q.store.payload(text.id)) == {"text/plain": "3 rows changed"}
        assert payload_bundle(q.store.payload(rich.id)) == {"text/plain": "Html()",
                                                            "text/html": "<b>bold</b>"}
        png = payload_bundle(q.store.payload(picture.id))
        assert png["text/plain"] == "Png()"
        assert base64.b64decode(png["image/png"]) == Png.PNG
        assert payload_bundle(q.store.payload(bare.id)) == {}


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
        assert payload_bundle(q.store.payload(gate.id)) == {"text/plain": "v1"}  # the first
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
