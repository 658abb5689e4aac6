"""What the review page's request handlers do, for both servers.

``ReviewRequests`` is mixed into tornado handlers whose base class authenticates:
Jupyter's ``JupyterHandler``/``APIHandler`` (``jupyter.py``) or ``TokenHandler``
(``standalone.py``). Both servers have tornado's XSRF check on: a POST carries the
page's ``_xsrf`` token in the ``X-XSRFToken`` header, which a page of another origin
cannot read. The desk is in the application's settings (``nbqueue_desk``), with a line
saying where the page is served (``nbqueue_where``).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from tornado.web import RequestHandler

from .desk import ReviewDesk
from .render import content_security_policy, dumps, page_html

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's address may carry a token
    "X-Frame-Options": "SAMEORIGIN",
}


class ReviewRequests(RequestHandler):
    """The page (GET), its state (GET, JSON) and a decision (POST, JSON). Mixed in
    before a base class that authenticates."""

    @property
    def desk(self) -> ReviewDesk:
        return self.settings["nbqueue_desk"]

    async def send_page(self) -> None:
        only = self.get_argument("queue", None)
        views, version, now = await self.desk.call(self.desk.page, only)
        nonce = secrets.token_urlsafe(18)
        for name, value in PAGE_HEADERS.items():
            self.set_header(name, value)
        self.set_header("Content-Security-Policy", content_security_policy(nonce))
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(page_html(
            views, version=version, now=now, nonce=nonce, only=only or "",
            xsrf=self.xsrf_token.decode(),
            where=self.settings.get("nbqueue_where", "")))

    async def send_state(self) -> None:
        since = self.get_argument("since", None)
        only = self.get_argument("queue", None)
        self.send_json(200, await self.desk.call(self.desk.state, since, only))

    async def receive_decision(self) -> None:
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        problem = _bad_decision(body)
        if problem:
            self.send_json(400, {"message": f"{problem}. Nothing was changed."})
            return
        status, data = await self.desk.call(
            self.desk.decide, body["queue"], body["gate"], body["action"],
            body.get("comment") or "", body.get("values") or {})
        self.send_json(status, data)

    def send_json(self, status: int, data: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(dumps(data))


def _bad_decision(body: Any) -> str:
    """What is wrong with a decision's JSON body (empty if nothing)."""
    if not isinstance(body, dict):
        return "Send a JSON object {queue, gate, action, comment, values}"
    for key in ("queue", "gate"):
        if not isinstance(body.get(key), str) or not body[key]:
            return f"{key!r} must be a non-empty string"
    if body.get("action") not in ("approve", "reject"):
        return "'action' must be 'approve' or 'reject'"
    if not isinstance(body.get("comment", ""), str):
        return "'comment' must be a string"
    if not isinstance(body.get("values", {}), dict):
        return "'values' must be an object of field name -> value"
    return ""
