"""Reviews that reach people: events besides endings, the Webhook and Email notifiers
(against receivers started on 127.0.0.1), delivery once across a SIGKILL, a failing
receiver retried with backoff while the files go on, deadlines and reminders."""

from __future__ import annotations

import email
import email.policy
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jobs
import pytest
from conftest import run_python, start_python, wait_for

import nbqueue
from nbqueue import outputs
from nbqueue.dispatcher import Dispatcher
from nbqueue.outputs.notify import MAX_BACKOFF, message
from nbqueue.reviews import review_of
from nbqueue.store import outbox

REVIEW_PAGE = "http://127.0.0.1:8888/"


class Receiver:
    """An incoming webhook on 127.0.0.1: records every POST (its Idempotency-Key, JSON
    body and the status answered). While ``failing`` it answers HTTP 500; with ``hold``
    it keeps the next request open until ``release`` is set."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.failing = False
        self.hold = False
        self.got = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if receiver.failing else 200
                receiver.posts.append({"key": self.headers.get("Idempotency-Key"),
                                       "type": self.headers.get("Content-Type"),
                                       "body": body, "status": status, "at": time.time()})
                receiver.got.set()
                if receiver.hold:
                    receiver.release.wait(60)
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"ok" if status == 200 else b"receiver down")
                except OSError:  # the sender was killed meanwhile
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/B000/secret"

    def delivered(self) -> list[dict[str, Any]]:
        """The posts it took (answered 200)."""
        return [p for p in self.posts if p["status"] == 200]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def events(path: Path) -> list[dict[str, Any]]:
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


# -- the webhook ---------------------------------------------------------------------------


def test_a_review_request_is_posted_once_with_its_link_and_idempotency_key(
        tmp_path: Path, receiver: Receiver) -> None:
    hook = nbqueue.Webhook(receiver.url, review_url=REVIEW_PAGE)
    q = nbqueue.Queue(tmp_path / "q", start=False, outputs=[hook])
    gate = q.review("Approve the Q3 report", payload="3 rows changed",
                    fields={"threshold": 0.5, "note": str}, deadline=3600)
    assert outputs.deliver(q) == 1
    assert outputs.deliver(q) == 0  # once
    post, = receiver.posts
    assert post["type"].startswith("application/json")
    record = post["body"]["nbqueue"]
    assert (record["event"], record["id"], record["state"]) == ("review", gate.id, "review")
    assert post["key"] == f"{outbox.queue_id(q._store)}:{record['outbox']}"
    assert re.fullmatch(r"[0-9a-f]{16}:\d+", post["key"])
    link = f"http://127.0.0.1:8888/nbqueue/?queue={q.path}#gate-{gate.id}"
    assert record["link"] == link
    text = post["body"]["text"]
    assert text.startswith("Review requested: Approve the Q3 report")
    assert link in text and "3 rows changed" in text
    assert "threshold (number, default 0.5); note (text, required)" in text
    assert "left (then kept waiting)" in text
    # plain text: reads the same in Slack, Mattermost and Teams (no markup but `code`)
    prose = re.sub(r"`[^`]*`|https?://\S+", "", text)
    assert not re.search(r"[*_]{1,2}\w|<http|\]\(", prose)


def test_without_a_review_url_the_text_says_how_to_open_the_page(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBQUEUE_REVIEW_URL", raising=False)
    q = nbqueue.Queue(tmp_path / "q", start=False, outputs=[nbqueue.Webhook(receiver.url)])
    gate = q.review("Check")
    outputs.deliver(q)
    text = receiver.posts[-1]["body"]["text"]
    assert f"nbqueue serve {q.path}" in text and f"nbqueue approve {q.path} {gate.id}" in text
    assert receiver.posts[-1]["body"]["nbqueue"]["link"] is None
    monkeypatch.setenv("NBQUEUE_REVIEW_URL", "http://jupyter.example:8888/lab")
    other = q.review("Check again")
    outputs.deliver(q)
    assert (f"http://jupyter.example:8888/lab/nbqueue/?queue={q.path}#gate-{other.id}"
            in receiver.posts[-1]["body"]["text"])


def test_a_failing_receiver_is_retried_with_backoff_and_holds_up_no_other_output(
        tmp_path: Path, receiver: Receiver) -> None:
    receiver.failing = True
    jsonl = tmp_path / "results.jsonl"
    with nbqueue.Queue(tmp_path / "q", workers=1, outputs=[
            nbqueue.JsonLines(jsonl), nbqueue.Webhook(receiver.url, on=["failed"])]) as q:
        job = q.submit(jobs.boom, "bad input", key=None)
        with pytest.raises(nbqueue.JobFailed):
            job.result(timeout=60)
        # the file has the ending while the webhook keeps failing
        wait_for(lambda: events(jsonl), message="the JSON Lines record")
        assert events(jsonl)[0]["id"] == job.id
        wait_for(lambda: len(receiver.posts) >= 2, message="a second try")

        def webhook() -> dict[str, Any]:
            return next(o for o in outputs.registered(q) if o["kind"] == "webhook")

        entry = webhook()
        assert entry["failures"] >= 1 and entry["behind"] >= 1
        assert "HTTP 500" in entry["error"] and receiver.url not in entry["error"]
        assert entry["retry_at"] > time.time() - 1
        assert len({p["key"] for p in receiver.posts}) == 1  # the same message, again
        receiver.failing = False
        wait_for(lambda: receiver.delivered(), message="the delivery after recovery")
    delivered, = receiver.delivered()
    assert delivered["body"]["nbqueue"]["id"] == job.id
    assert delivered["body"]["text"].startswith("Job failed: boom")
    assert webhook()["error"] is None and webhook()["failures"] == 0
    # the pause between tries doubles, up to MAX_BACKOFF
    hook = nbqueue.Webhook(receiver.url)
    assert [hook.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert hook.backoff(30) == MAX_BACKOFF


DELIVER_ONE = """
    import os, sys
    from nbqueue import outputs
    from nbqueue.store import Store

    point = {point!r}

    class Crashing(outputs.Webhook):
        def send(self, ending):
            if point == "before sending":
                os._exit(9)
            print("sending", flush=True)
            super().send(ending)
            if point == "after the answer":  # sent, the cursor not moved yet
                os._exit(9)

    outputs.deliver(Store({queue!r}), [Crashing({url!r}, review_url={page!r})])
    """


@pytest.mark.parametrize("point", ["before sending", "in flight", "after the answer"])
def test_a_review_request_reaches_the_receiver_once_across_a_sigkill(
        tmp_path: Path, receiver: Receiver, point: str) -> None:
    q = nbqueue.Queue(tmp_path / "q", start=False,
                      outputs=[nbqueue.Webhook(receiver.url, review_url=REVIEW_PAGE)])
    gate = q.review("Ship it?")
    code = DELIVER_ONE.format(point=point, queue=str(q.path), url=receiver.url,
                              page=REVIEW_PAGE)
    if point == "in flight":  # killed while the receiver holds the request
        receiver.hold = True
        child = start_python(code, cwd=tmp_path)
        assert receiver.got.wait(60)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        receiver.hold = False
        receiver.release.set()
    else:
        assert run_python(code, cwd=tmp_path, check=False).returncode == 9
    outputs.deliver(q)  # the next deliverer completes it
    outputs.deliver(q)
    keys = {p["key"] for p in receiver.posts}
    assert len(keys) == 1, receiver.posts  # one notification, however many tries
    assert len(receiver.posts) == (1 if point == "before sending" else 2)
    assert all(p["body"]["nbqueue"]["id"] == gate.id for p in receiver.posts)
    assert outputs.registered(q)[0]["behind"] == 0


# -- events ----------------------------------------------------------------------------------


def test_drained_and_failed_are_recorded_once_each(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with nbqueue.Queue(tmp_path / "q", workers=1,
                       outputs=[nbqueue.JsonLines(path, on=["failed", "drained"])]) as q:
        bad = q.submit(jobs.boom, "once", key=None, retries=1, retry_delay=0.05)
        good = q.submit(jobs.square, 3, key=None)
        assert good.result(timeout=60) == 9
        with pytest.raises(nbqueue.JobFailed):
            bad.result(timeout=60)
        wait_for(lambda: [e for e in events(path) if e.get("event") == "drained"],
                 message="the drained event")
        # a second dispatcher serving the drained queue records nothing more
        with nbqueue.Queue(tmp_path / "q", workers=1):
            time.sleep(1.5)  # housekeeping runs every second: let both look again
        outputs.deliver(q)
        kinds = [(e.get("event", "ended"), e["id"]) for e in events(path)]
        assert kinds == [("ended", bad.id), ("drained", None)]  # two attempts, one failure
        assert events(path)[0]["state"] == "failed"
        # new work, and the next drain is recorded once more
        assert q.submit(jobs.square, 4, key=None).result(timeout=60) == 16
        wait_for(lambda: len(events(path)) == 3, message="the second drained event")
    assert [e.get("event") for e in events(path)] == [None, "drained", "drained"]


def test_drained_once_per_drain_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    q = nbqueue.Queue(tmp_path / "q", start=False,
                      outputs=[nbqueue.JsonLines(path, on=["drained"])])
    assert not q._store.note_drained()  # no work came since the queue was made
    job = q.submit(jobs.square, 2, key=None)
    assert not q._store.note_drained()  # a job is ready
    q._store.cancel(job.id)
    later = q.submit(jobs.square, 3, key=None, after="in 30s")
    assert not q._store.note_drained()  # due soon: work to come
    q._store.cancel(later.id)
    assert q._store.note_drained()
    assert not q._store.note_drained()
    outputs.deliver(q)
    assert [e["event"] for e in events(path)] == ["drained"]


def test_outputs_receive_what_they_ask_for(tmp_path: Path) -> None:
    every, ends = tmp_path / "every.jsonl", tmp_path / "ends.jsonl"
    q = nbqueue.Queue(tmp_path / "q", start=False, outputs=[
        nbqueue.JsonLines(every, on=None), nbqueue.JsonLines(ends),
        nbqueue.NotebookReport(tmp_path / "all.ipynb", on=None)])
    gate = q.review("Look", payload="words")
    q.approve(gate, "fine")
    outputs.deliver(q)
    assert [(e.get("event"), e["state"]) for e in events(every)] == [("review", "review"),
                                                                     (None, "done")]
    assert [e["state"] for e in events(ends)] == ["done"]
    assert "event" not in events(ends)[0]  # endings are recorded as they always were
    with pytest.raises(nbqueue.InvalidArgument, match="not an event"):
        nbqueue.JsonLines(every, on=["finished"])


def test_with_file_outputs_only_no_event_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    q = nbqueue.Queue(tmp_path / "q", start=False, outputs=[nbqueue.JsonLines(path)])
    for i in range(3):
        q.approve(q.review(f"gate {i}"))
    outputs.deliver(q)
    # outbox numbers without gaps, as before events existed
    assert [e["outbox"] for e in events(path)] == [1, 2, 3]


# -- email -----------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd's handler: keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    pytest.importorskip("aiosmtpd")
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox()

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                     data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            b"robot", b"s3cret")
        if isinstance(data, LoginPassword):
            box.logins.append((data.login, data.password))
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def test_email_sends_a_review_request_logged_in(tmp_path: Path, smtp: tuple[Mailbox, int],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    box, port = smtp
    monkeypatch.setenv("ROBOT_PASSWORD", "s3cret")
    mail = nbqueue.Email("127.0.0.1", to=["ann@example.org", "bob@example.org"], port=port,
                         user="robot", password_env="ROBOT_PASSWORD", sender="q@example.org",
                         review_url=REVIEW_PAGE)
    q = nbqueue.Queue(tmp_path / "q", start=False, outputs=[mail])
    gate = q.review("Approve the Q3 report", remind_every=60)
    assert outputs.deliver(q) == 1
    assert outputs.deliver(q) == 0
    envelope, = box.messages
    assert box.logins == [(b"robot", b"s3cret")]
    assert envelope.mail_from == "q@example.org"
    assert envelope.rcpt_tos == ["ann@example.org", "bob@example.org"]
    sent = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert sent["Subject"] == "Review requested: Approve the Q3 report"
    body = sent.get_body().get_content()
    assert f"http://127.0.0.1:8888/nbqueue/?queue={q.path}#gate-{gate.id}" in body
    assert "`" not in body
    assert re.fullmatch(rf"<nbqueue\.{outbox.queue_id(q._store)}\.1@.+>", sent["Message-ID"])
    assert "s3cret" not in json.dumps(outputs.registered(q))  # only the variable's name

    q._store.gate_timers(time.time() + 61)  # a reminder
    assert outputs.deliver(q) == 1
    assert email.message_from_bytes(box.messages[-1].content, policy=email.policy.default)[
        "Subject"] == "Reminder: review waiting: Approve the Q3 report"


def test_email_without_its_password_variable_says_which(tmp_path: Path,
                                                       smtp: tuple[Mailbox, int],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    box, port = smtp
    monkeypatch.delenv("NBQUEUE_SMTP_PASSWORD", raising=False)
    q = nbqueue.Queue(tmp_path / "q", start=False, outputs=[
        nbqueue.Email("127.0.0.1", to="ann@example.org", port=port, user="robot")])
    q.review("Check")
    assert outputs.deliver(q) == 0
    assert "$NBQUEUE_SMTP_PASSWORD is not set" in outputs.registered(q)[0]["error"]
    assert box.messages == []


# -- deadlines and reminders -----------------------------------------------------------------


def test_a_dispatcher_applies_deadlines_once_on_a_fake_clock(tmp_path: Path) -> None:
    q = nbqueue.Queue(tmp_path / "q", start=False)
    reject = q.review("reject me", deadline=3600, on_deadline="reject")
    approve = q.review("approve me", fields={"threshold": 0.5}, deadline=3600,
                       on_deadline="approve")
    keep = q.review("keep me", deadline=3600)  # on_deadline="keep": the default
    later = q.review("later", deadline=7200)
    ship = q.submit(jobs.square, 5, needs=[reject], key=None)
    assert review_of(q, reject.id).time_left(review_of(q, reject.id).created) == 3600
    dispatcher = Dispatcher(q._store, workers=1)
    try:
        now = time.time()
        dispatcher.step(now + 10)
        assert [g.state for g in (reject, approve, keep)] == ["review"] * 3
        dispatcher.step(now + 3601)
        assert (reject.state, ship.state) == ("rejected", "cancelled")
        decision = reject.exception()
        assert "deadline" in str(decision)
        assert reject.reason.startswith("rejected by its deadline")
        assert approve.state == "done" and approve.reason.startswith("approved by its deadline")
        assert approve.result() == nbqueue.Decision(True, approve.result().comment, "deadline",
                                                    now + 3601, {"threshold": 0.5})
        assert keep.state == "review" and review_of(q, keep.id).overdue
        assert "overdue" in review_of(q, keep.id).deadline_text(now + 3700)
        assert later.state == "review"
        records = [g.record() for g in (reject, approve, keep)]
        dispatcher.step(now + 5000)  # nothing is applied twice
        assert [g.record() for g in (reject, approve, keep)] == records
    finally:
        dispatcher.stop()


def test_a_deadline_missed_while_nothing_served_is_applied_at_the_next_start(
        tmp_path: Path) -> None:
    q = nbqueue.Queue(tmp_path / "q", start=False)
    gate = q.review("Decide soon", deadline=1, on_deadline="reject")
    deadline = review_of(q, gate.id).deadline
    wait_for(lambda: time.time() > deadline + 0.2, message="the deadline passing")
    assert gate.state == "review"  # nothing serves the queue
    q.start()
    try:
        wait_for(lambda: gate.state == "rejected", message="the deadline applied")
        assert gate.exception() is not None and gate.reason.startswith("rejected by its deadline")
    finally:
        q.stop()


def test_real_short_deadlines_with_each_action(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with nbqueue.Queue(tmp_path / "q", workers=1,
                       outputs=[nbqueue.JsonLines(path, on=["reminder", "decided"])]) as q:
        rejected = q.review("r", deadline=1, on_deadline="reject")
        approved = q.review("a", deadline=1.5, on_deadline="approve")
        kept = q.review("k", deadline=1, on_deadline="keep")
        handler = q.submit(jobs.ask_with_deadline, 1, "approve", key=None)
        assert handler.result(timeout=60) == (True, "deadline", {"level": 3})
        wait_for(lambda: rejected.state == "rejected" and approved.state == "done",
                 message="both deadlines applied")
        assert rejected.exception() is not None
        assert approved.result().by == "deadline"
        wait_for(lambda: review_of(q, kept.id).overdue, message="the kept deadline passing")
        assert kept.state == "review"
        wait_for(lambda: any(e.get("event") == "reminder" for e in events(path)),
                 message="the overdue reminder")
    records = events(path)
    reminder, = [e for e in records if e.get("event") == "reminder"]
    assert reminder["id"] == kept.id and "deadline" in reminder["reason"]
    decided = {e["id"]: e["state"] for e in records if "event" not in e}
    assert decided[rejected.id] == "rejected" and decided[approved.id] == "done"


def test_reminders_come_every_interval_without_a_burst(tmp_path: Path,
                                                       receiver: Receiver) -> None:
    q = nbqueue.Queue(tmp_path / "q", start=False,
                      outputs=[nbqueue.Webhook(receiver.url, on=["reminder"])])
    gate = q.review("Still there?", remind_every="1m")
    start = review_of(q, gate.id).created
    assert q._store.gate_timers(start + 30) == 0
    assert q._store.gate_timers(start + 61) == 1
    assert q._store.gate_timers(start + 61) == 0  # once
    assert q._store.gate_timers(start + 10_000) == 1  # a long pause: one, not a hundred
    q.approve(gate)
    assert q._store.gate_timers(start + 20_000) == 0  # decided: no more
    outputs.deliver(q)
    texts = [p["body"]["text"] for p in receiver.posts]
    assert len(texts) == 2 and all(t.startswith("Reminder: review waiting: Still there?")
                                   for t in texts)
    assert "still waiting for a decision for 1m" in texts[0].lower()


def test_message_texts_of_each_event() -> None:
    from nbqueue.outputs import Ending

    queue = "/home/me/runs/q"
    base = {"seq": 7, "name": "fit", "kind": "call", "attempt": 2, "parent": None,
            "created": 0.0, "started": 1.0, "ended": 2.0, "error": None, "at": 2.0}
    failed = Ending({**base, "event": "ended", "id": "3f2a1b9c00", "state": "failed",
                     "reason": "ValueError: bad input"}, queue)
    subject, text = message(failed, None)
    assert subject == "Job failed: fit"
    assert "Job `3f2a1b9c00`, attempt 2 in queue `/home/me/runs/q`: ValueError: bad input" in text
    assert "nbqueue show /home/me/runs/q 3f2a1b9c00" in text
    drained = Ending({**base, "event": "drained", "id": None, "name": None, "kind": None,
                      "state": None, "reason": ""}, queue)
    assert message(drained, None)[0] == "Queue drained: /home/me/runs/q"
