"""``nbqueue serve``: the review page without Jupyter, on 127.0.0.1, behind a token.

tornado alone (it comes with ipykernel): nothing here imports jupyter_server. Every
request needs the token, given once in the address it prints
(``http://127.0.0.1:PORT/?token=TOKEN``) and then kept in an HttpOnly, SameSite=Strict
cookie; a request without it is refused (403). POSTs also need the page's XSRF token
(tornado's ``xsrf_cookies``), so a page of another origin cannot decide anything even
in a browser that holds the cookie. The server only answers requests addressed to
127.0.0.1 or localhost (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import signal
from collections.abc import Callable, Sequence
from http.client import responses
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, HTTPError, RequestHandler

from .desk import ReviewDesk
from .handlers import ReviewRequests

HOST = "127.0.0.1"


class TokenHandler(RequestHandler):
    """Refuses (403) every request without the server's token (query ``token=``, the
    cookie, or ``Authorization: token TOKEN``), or addressed to another host name."""

    def get_current_user(self) -> str | None:
        token: str = self.settings["nbqueue_token"]
        header = self.request.headers.get("Authorization", "")
        given = (self.get_query_argument("token", None)
                 or self.get_cookie(self.settings["nbqueue_cookie"])
                 or (header[6:].strip() if header.lower().startswith("token ") else None))
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return "reviewer"
        return None

    def prepare(self) -> None:
        host = self.request.host.lower()
        port = self.settings["nbqueue_port"]
        if host not in (f"{HOST}:{port}", f"localhost:{port}"):
            raise HTTPError(403, "request for host %s refused", host)
        if self.current_user is None:
            raise HTTPError(403, "no valid token")
        if self.get_query_argument("token", None):  # keep it in a cookie from now on
            self.set_cookie(self.settings["nbqueue_cookie"], self.settings["nbqueue_token"],
                            path="/", httponly=True, samesite="Strict")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        if status_code == 403:
            self.finish("403 Forbidden: open the address `nbqueue serve` printed (it carries "
                        "the token), and decide from that page.\n")
        else:
            self.finish(f"{status_code} {responses.get(status_code, 'Error')}\n")


class RootHandler(TokenHandler):
    """``/`` and ``/nbqueue``: on to the page (the token, if given, is now a cookie)."""

    def get(self) -> None:
        self.redirect(page_address(self.get_query_argument("queue", None)))


class PageHandler(ReviewRequests, TokenHandler):
    async def get(self) -> None:
        if self.get_query_argument("token", None):  # drop it from the address bar
            self.redirect(page_address(self.get_query_argument("queue", None)))
            return
        await self.send_page()


class StateHandler(ReviewRequests, TokenHandler):
    async def get(self) -> None:
        await self.send_state()


class DecideHandler(ReviewRequests, TokenHandler):
    async def post(self) -> None:
        await self.receive_decision()


class NotFoundHandler(TokenHandler):
    def prepare(self) -> None:
        super().prepare()
        raise HTTPError(404)


def page_address(queue: str | None) -> str:
    """The page's path, for one queue (``?queue=``) or all.

    >>> page_address("/runs/q a")
    '/nbqueue/?queue=%2Fruns%2Fq+a'
    """
    return "/nbqueue/" + (f"?{urlencode({'queue': queue})}" if queue else "")


def desk_for(paths: Sequence[Path]) -> ReviewDesk:
    """The desk of ``nbqueue serve PATH...``: a PATH holding a queue is shown as it is; a
    folder shows the queues opened under it (the registry)."""
    from ..registry import is_queue_directory

    queues = [p for p in paths if is_queue_directory(p)]
    return ReviewDesk(roots=[p for p in paths if p not in queues], queues=queues)


def make_app(desk: ReviewDesk, *, port: int, token: str) -> Application:
    """The tornado application of ``nbqueue serve`` on ``port``."""
    return Application(
        [(r"/", RootHandler), (r"/nbqueue", RootHandler), (r"/nbqueue/", PageHandler),
         (r"/nbqueue/api/state", StateHandler), (r"/nbqueue/api/decide", DecideHandler)],
        default_handler_class=NotFoundHandler,
        nbqueue_desk=desk, nbqueue_token=token, nbqueue_port=port,
        nbqueue_where=f"nbqueue serve on {HOST}:{port}",
        # per port: two servers on 127.0.0.1 (or Jupyter's _xsrf) do not clobber each other
        nbqueue_cookie=f"nbqueue-token-{port}",
        xsrf_cookies=True, xsrf_cookie_name=f"_xsrf_nbqueue_{port}",
        xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict", "path": "/"},
    )


def serve(paths: Sequence[Path], *, port: int = 0, token: str | None = None,
          say: Callable[[str], None] = print) -> int:
    """Serve the review page of ``paths`` on 127.0.0.1:``port`` (0: any free port) until
    SIGINT or SIGTERM; ``say`` gets the address with its token. Returns 0."""
    token = token or secrets.token_urlsafe(24)
    sockets = bind_sockets(port, address=HOST)
    port = sockets[0].getsockname()[1]
    desk = desk_for(paths)

    async def main() -> None:
        server = HTTPServer(make_app(desk, port=port, token=token))
        server.add_sockets(sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        shown = ", ".join(str(p) for p in paths)
        say(f"serving the review page of {shown} at http://{HOST}:{port}/?token={token}")
        say("(only this machine can connect; anyone with the address can decide its "
            "reviews; Ctrl-C stops)")
        try:
            await stop.wait()
        finally:
            server.stop()
            await server.close_all_connections()

    try:
        asyncio.run(main())
    finally:
        desk.close()
    return 0
