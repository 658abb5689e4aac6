"""The review page as a Jupyter server extension: ``<base_url>/nbqueue/``.

Enabled on install (``jupyter-config/jupyter_server_config.d/nbqueue.json``, shipped
as shared data); ``jupyter server extension enable nbqueue`` enables it by hand. The
handlers are Jupyter's own (``JupyterHandler``, ``APIHandler``), so the page is behind
the server's login, token and XSRF check, and authorized as the resource ``nbqueue``.
It runs in the server process: no kernel is needed.

Configuration (``jupyter_server_config.py``, or ``--NbqueueReviews.queues=...``)::

    c.NbqueueReviews.queues = ["/data/shared/q"]   # shown besides those under the root
"""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import List, Unicode
from traitlets.config import Configurable

from .desk import ReviewDesk
from .handlers import ReviewRequests

RESOURCE = "nbqueue"


class NbqueueReviews(Configurable):
    """The review page's settings."""

    queues = List(Unicode(), help=(
        "Queue directories the review page shows, besides the queues opened under the "
        "server's root directory (recorded in nbqueue's registry)")).tag(config=True)


class PageHandler(ReviewRequests, JupyterHandler):
    auth_resource = RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.send_page()


class StateHandler(ReviewRequests, APIHandler):
    auth_resource = RESOURCE

    @web.authenticated
    @authorized
    async def get(self) -> None:
        await self.send_state()


class DecideHandler(ReviewRequests, APIHandler):
    auth_resource = RESOURCE

    @web.authenticated
    @authorized
    async def post(self) -> None:
        await self.receive_decision()


class SlashHandler(JupyterHandler):
    """``/nbqueue`` -> ``/nbqueue/`` (the page's requests are relative to it)."""

    def get(self) -> None:
        query = f"?{self.request.query}" if self.request.query else ""
        self.redirect(url_path_join(self.base_url, "nbqueue/") + query)


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the review page's handlers to the Jupyter server."""
    settings = NbqueueReviews(parent=serverapp)
    desk = ReviewDesk(roots=[serverapp.root_dir], queues=settings.queues)
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    web_app.settings["nbqueue_desk"] = desk
    web_app.settings["nbqueue_where"] = f"Jupyter server, {serverapp.root_dir}"
    web_app.add_handlers(".*$", [
        (url_path_join(base, "nbqueue"), SlashHandler),
        (url_path_join(base, "nbqueue/"), PageHandler),
        (url_path_join(base, "nbqueue/api/state"), StateHandler),
        (url_path_join(base, "nbqueue/api/decide"), DecideHandler),
    ])
    serverapp.log.info("nbqueue: the review page is at %snbqueue/", base)


load_jupyter_server_extension = _load_jupyter_server_extension  # the older name
