"""Notifiers: outputs that tell people, delivered through the outbox like the files.

``Webhook`` posts JSON whose ``text`` reads well in Slack, Mattermost and Microsoft
Teams incoming webhooks; ``Email`` sends a mail with the standard library's
``smtplib``. Both send one message per outbox row (the cursor moves after each), carry
the row's sequence number as an idempotency mark (``Idempotency-Key``, ``Message-ID``),
and, when a receiver fails, are tried again after a pause that doubles up to
``MAX_BACKOFF``, in a thread apart from the files (``Delivery``).

A notification of a review links to the review page: ``review_url`` (a Jupyter server,
or ``nbqueue serve``'s address), else ``$NBQUEUE_REVIEW_URL`` in the delivering
process, else the text says how to open it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import smtplib
import socket
import ssl as ssl_lib
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .. import job as J
from .._version import __version__
from ..errors import InvalidArgument, NotifyError
from ..reviewing import review_link
from ..times import format_local
from .base import Ending, Output, check_on

# what a notifier receives unless told otherwise: what a person acts on
NOTIFY_ON = ("review", "reminder", "failed", "drained")
MAX_BACKOFF = 300.0  # seconds: the longest pause between tries of a failing receiver
REVIEW_URL_ENV = "NBQUEUE_REVIEW_URL"


class Notifier(Output):
    """An output that sends each outbox row it receives as a message (see ``notify.py``)."""

    remote: ClassVar[bool] = True
    batch: ClassVar[int | None] = 1
    default_on: ClassVar[tuple[str, ...] | None] = NOTIFY_ON

    def __init__(self, on: Sequence[str] | str | None = NOTIFY_ON,
                 review_url: str | None = None) -> None:
        self.on = check_on(on)
        if review_url is not None and not _is_http(review_url):
            raise InvalidArgument(f"review_url={review_url!r}: give the http(s) address of a "
                                  "Jupyter server or of nbqueue serve, such as "
                                  "'http://127.0.0.1:8888/'")
        self.review_url = review_url

    def open(self, queue: str) -> int:
        return 0  # what a receiver holds cannot be read back: the cursor says it

    def write(self, endings: list[Ending]) -> None:
        for ending in endings:
            self.send(ending)

    def send(self, ending: Ending) -> None:
        """Deliver one message; raise ``NotifyError`` if the receiver did not take it."""
        raise NotImplementedError

    def backoff(self, failures: int) -> float:
        return min(2.0 ** max(failures - 1, 0), MAX_BACKOFF)

    def link(self, ending: Ending) -> str | None:
        """The review page's address of the gate of ``ending`` (None: no base address)."""
        base = self.review_url or os.environ.get(REVIEW_URL_ENV) or None
        if base is None or ending.data.get("kind") != J.GATE:
            return None
        return review_link(base, ending.queue, ending.data["id"])

    def message(self, ending: Ending) -> tuple[str, str]:
        """The subject and the text of the message for ``ending``."""
        return message(ending, self.link(ending))

    def key(self, ending: Ending) -> str:
        """The idempotency mark of a message: ``<queue id>:<outbox seq>``."""
        return f"{ending.queue_id or _digest(ending.queue)}:{ending.seq}"

    def _common_spec(self) -> dict[str, Any]:
        return self._with_on({"review_url": self.review_url})


class Webhook(Notifier):
    """POST a JSON message to an incoming webhook (Slack, Mattermost, Microsoft Teams,
    or any HTTP receiver) for each event it receives.

    Parameters
    ----------
    url : str
        The webhook's address. It is kept in the queue directory (private to you,
        mode 0700), like every output's settings.
    on : list of str or None
        The events to send (``outputs.EVENTS``); default review requests, reminders,
        failures and drains. None: every event.
    review_url : str, optional
        The base address of the review page (``http://127.0.0.1:8888/`` for a Jupyter
        server, or ``nbqueue serve``'s address); default ``$NBQUEUE_REVIEW_URL``.
    headers : dict, optional
        More HTTP headers (e.g. ``Authorization`` for a receiver of your own).
    timeout : float
        Seconds to wait for the receiver's answer.

    Raises
    ------
    InvalidArgument
        ``url`` is not an http(s) address, ``headers`` not a dict of strings,
        ``timeout`` not seconds > 0, or ``on`` names no event.

    Notes
    -----
    The body is ``{"text": ..., "nbqueue": {...}}``: ``text`` the message, ``nbqueue``
    the record ``JsonLines`` would write (with ``link``). The header
    ``Idempotency-Key: <queue id>:<outbox seq>`` is the same when a message is sent
    again after a crash, so a receiver can drop the second. A delivery that fails is
    tried again after a pause that doubles (``NotifyError`` in
    ``nbqueue.outputs.registered(q)``); sending happens in a delivery thread of the
    process that serves the queue, never in the job's commit.

    Examples
    --------
    ::

        q = nbqueue.Queue("runs/q", outputs=[nbqueue.Webhook(
            "https://hooks.example.invalid/T000/B000", on=["review", "failed"])])
    """

    kind = "webhook"

    def __init__(self, url: str, on: Sequence[str] | str | None = NOTIFY_ON, *,
                 review_url: str | None = None, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> None:
        if not isinstance(url, str) or not _is_http(url):
            raise InvalidArgument(f"Webhook(url={url!r}): give an http(s) address")
        if headers is not None and not (isinstance(headers, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise InvalidArgument(f"Webhook(headers={headers!r}): give a dict of strings")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise InvalidArgument(f"Webhook(timeout={timeout!r}): give seconds > 0")
        super().__init__(on, review_url)
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = float(timeout)

    @property
    def name(self) -> str:
        # not the URL itself: a Slack webhook's address is its secret
        return f"webhook:{urlsplit(self.url).netloc}/{_digest(self.url)}"

    def spec(self) -> dict[str, Any]:
        return {"url": self.url, **self._common_spec(), "headers": self.headers,
                "timeout": self.timeout}

    def body(self, ending: Ending) -> dict[str, Any]:
        """The JSON posted for ``ending``."""
        _, text = self.message(ending)
        record = ending.record()
        record["link"] = self.link(ending)
        return {"text": text, "nbqueue": record}

    def send(self, ending: Ending) -> None:
        data = json.dumps(self.body(ending), ensure_ascii=False, default=repr).encode()
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"nbqueue/{__version__}", "Idempotency-Key": self.key(ending),
            **self.headers})
        where = urlsplit(self.url).netloc
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode(errors="replace").strip()
            raise NotifyError(f"webhook {where} answered HTTP {exc.code} {exc.reason}"
                              + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NotifyError(f"webhook {where} could not be reached: {reason}") from None

    def __repr__(self) -> str:
        return f"nbqueue.Webhook({urlsplit(self.url).netloc!r}, on={self.on!r})"


class Email(Notifier):
    """Send an email for each event it receives, with the standard library's ``smtplib``.

    Parameters
    ----------
    host : str
        The SMTP server.
    to : list of str
        The recipients.
    on : list of str or None
        The events to send (``outputs.EVENTS``); default review requests, reminders,
        failures and drains. None: every event.
    port : int, optional
        Default 465 with ``ssl``, else 587 with ``starttls``, else 25.
    starttls : bool
        Upgrade the connection with STARTTLS before logging in.
    ssl : bool
        Connect over TLS from the start (SMTPS).
    user : str, optional
        Log in as this user, with the password in the environment variable
        ``password_env`` of the process that delivers (never stored).
    password_env : str, optional
        The name of that environment variable (default ``NBQUEUE_SMTP_PASSWORD``).
    sender : str, optional
        The From address; default ``user`` if it is an address, else
        ``nbqueue@<this host>``.
    review_url : str, optional
        The base address of the review page; default ``$NBQUEUE_REVIEW_URL``.
    timeout : float
        Seconds to wait for the server.

    Raises
    ------
    InvalidArgument
        An empty ``host``, ``to`` without an address, a ``port`` out of range,
        ``starttls`` with ``ssl``, ``password_env`` without ``user``, or ``on``
        naming no event.

    Notes
    -----
    Each message's ``Message-ID`` derives from the queue's id and the outbox sequence
    number, so a message sent again after a crash has the same one.

    Examples
    --------
    ::

        nbqueue.Email("smtp.example.invalid", to=["me@example.invalid"], starttls=True,
                      user="me@example.invalid", on=["review"])
    """

    kind = "email"

    def __init__(self, host: str, to: Sequence[str] | str, on: Sequence[str] | str | None = NOTIFY_ON,
                 *, port: int | None = None, starttls: bool = False, ssl: bool = False,
                 user: str | None = None, password_env: str | None = None,
                 sender: str | None = None, review_url: str | None = None,
                 timeout: float = 30.0) -> None:
        if not isinstance(host, str) or not host.strip():
            raise InvalidArgument(f"Email(host={host!r}): give the SMTP server's name")
        recipients = [to] if isinstance(to, str) else list(to) if isinstance(
            to, (list, tuple)) else []
        if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
            raise InvalidArgument(f"Email(to={to!r}): give a list of email addresses")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 < port < 65536):
            raise InvalidArgument(f"Email(port={port!r}): give a TCP port number")
        if starttls and ssl:
            raise InvalidArgument("Email(starttls=True, ssl=True): choose one (ssl for port "
                                  "465, starttls for 587)")
        if password_env is not None and not user:
            raise InvalidArgument("Email(password_env=...) without user=: give the user to "
                                  "log in as")
        super().__init__(on, review_url)
        self.host = host.strip()
        self.to = recipients
        self.port = port if port is not None else 465 if ssl else 587 if starttls else 25
        self.starttls = bool(starttls)
        self.ssl = bool(ssl)
        self.user = user
        self.password_env = password_env or ("NBQUEUE_SMTP_PASSWORD" if user else None)
        self.sender = sender
        self.timeout = float(timeout)

    @property
    def name(self) -> str:
        return f"email:{self.host}:{self.port}:{','.join(self.to)}"

    def spec(self) -> dict[str, Any]:
        return {"host": self.host, "to": self.to, **self._common_spec(), "port": self.port,
                "starttls": self.starttls, "ssl": self.ssl, "user": self.user,
                "password_env": self.password_env, "sender": self.sender,
                "timeout": self.timeout}

    def email(self, ending: Ending) -> EmailMessage:
        """The message sent for ``ending``."""
        subject, text = self.message(ending)
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.sender or (self.user if self.user and "@" in self.user
                                      else f"nbqueue@{socket.getfqdn()}")
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = f"<nbqueue.{self.key(ending).replace(':', '.')}@{socket.getfqdn()}>"
        msg.set_content(text.replace("`", "") + "\n")
        return msg

    def send(self, ending: Ending) -> None:
        msg = self.email(ending)
        where = f"{self.host}:{self.port}"
        password = None
        if self.user:
            assert self.password_env is not None
            password = os.environ.get(self.password_env)
            if password is None:
                raise NotifyError(f"email via {where}: ${self.password_env} is not set in "
                                  f"this process (pid {os.getpid()}), which delivers; set it "
                                  "where the queue is served")
        try:
            if self.ssl:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout,
                    context=ssl_lib.create_default_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                if self.starttls:
                    smtp.starttls(context=ssl_lib.create_default_context())
                if self.user:
                    smtp.login(self.user, password or "")
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"email via {where} failed: {type(exc).__name__}: {exc}") from None

    def __repr__(self) -> str:
        return f"nbqueue.Email({self.host!r}, to={self.to!r}, on={self.on!r})"


# -- the text of a message (pure) ------------------------------------------------------------


def message(ending: Ending, link: str | None) -> tuple[str, str]:
    """The subject and text of a notification: plain text that reads the same in Slack,
    Mattermost and Teams (ids and paths in backticks, the link bare)."""
    d = ending.data
    event, queue = ending.event, ending.queue
    where = f"queue `{queue}`"
    if event == "drained":
        subject = f"Queue drained: {queue}"
        return subject, f"Queue drained: nothing ready, running or due in {where}."
    name, job_id = d["name"] or "", d["id"]
    review = ending.review
    title = review.title if review is not None else name
    if event in ("review", "reminder"):
        subject = (f"Review requested: {title}" if event == "review"
                   else f"Reminder: review waiting: {title}")
        lines = [subject, f"Gate `{job_id}` in {where}."
                 + (f" {d['reason'][0].upper()}{d['reason'][1:]}." if event == "reminder"
                    and d["reason"] else "")]
        if review is not None:
            if review.deadline is not None:
                left = review.deadline_text(d.get("at") or time.time())
                lines.append(f"Deadline {format_local(review.deadline)}: {left}.")
            if review.fields:
                lines.append("Answers asked: " + "; ".join(f.describe() for f in review.fields)
                             + ".")
        summary = _payload_summary(ending.payload)
        if summary:
            lines.append(summary)
        lines.append(_how_to_review(link, queue, job_id))
        return subject, "\n\n".join(lines)
    state = d["state"]
    if d["kind"] == J.GATE:
        subject = f"Review {state}: {title}"
        lines = [subject, f"Gate `{job_id}` in {where}: {d['reason'] or state}."]
        if ending.loaded and isinstance(ending.value, J.Decision) and ending.value.values:
            lines.append("Answers: " + ", ".join(f"{k}={v!r}"
                                                 for k, v in ending.value.values.items()) + ".")
        return subject, "\n\n".join(lines)
    subject = f"Job {state}: {name}"
    attempt = f", attempt {d['attempt']}" if (d["attempt"] or 0) > 1 else ""
    lines = [subject, f"Job `{job_id}`{attempt} in {where}"
             + (f": {d['reason']}" if d["reason"] else "") + "."]
    if state == J.FAILED:
        lines.append(f"Details: `nbqueue show {shlex.quote(queue)} {job_id}`")
    return subject, "\n\n".join(lines)


def _how_to_review(link: str | None, queue: str, job_id: str) -> str:
    if link:
        return f"Review it: {link}"
    path = shlex.quote(queue)
    return (f"Review it on the review page (`nbqueue serve {path}`, or set "
            f"${REVIEW_URL_ENV} to your Jupyter server's address), or: "
            f"`nbqueue approve {path} {job_id} -m '...'`")


def _payload_summary(payload: dict[str, str] | None, limit: int = 300) -> str:
    """A plain payload's text, cut short (rich payloads are for the page)."""
    if not payload or set(payload) != {"text/plain"}:
        return ""
    text = payload["text/plain"].strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " ..."


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
