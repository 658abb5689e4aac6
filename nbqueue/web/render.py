"""The review page's HTML: pure functions of reviews (``nbqueue.reviewing.Review``).

Everything from a queue is escaped, except a payload's ``text/html``: that is the gate
owner's own content, shown in an ``<iframe sandbox="" srcdoc=...>`` (no script, no
same-origin access: it cannot act on the page). Images are ``<img>`` of ``data:`` URLs,
which run nothing either.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..reviewing import Field, Review, duration_text

_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]*$")


@dataclass(frozen=True)
class QueueView:
    """One queue as the page shows it: its pending reviews, or why they cannot be read."""

    id: str
    path: Path
    reviews: list[Review] = field(default_factory=list)
    error: str = ""


def esc(value: Any) -> str:
    """``value`` as text, escaped for HTML text and attribute values.

    >>> esc('<a href="x">&</a>')
    '&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;'
    """
    return html.escape(str(value), quote=True)


def age_html(created: float, now: float) -> str:
    return (f'<span class="nbq-age" data-since="{created!r}">'
            f"created {duration_text(now - created)} ago</span>")


THEN = {"reject": "rejected", "approve": "approved", "keep": "kept waiting"}


def deadline_html(review: Review, now: float) -> str:
    """Time left to the gate's deadline and what happens then, in the words of
    ``Review.deadline_text`` (``page.js`` keeps it up to date); "no deadline" without one.

    >>> from nbqueue.reviewing import Review
    >>> r = Review("g1", "t", "review", "t", 0.0, (), 1000.0, "reject", None, {})
    >>> text = deadline_html(r, 880)
    >>> "2m left (then rejected)" in text and 'data-then="rejected"' in text
    True
    >>> "overdue by 10s" in deadline_html(r, 1010)
    True
    """
    reminders = ""
    if review.remind_every:
        reminders = (f' &middot; <span class="nbq-remind">reminders every '
                     f"{duration_text(review.remind_every)}</span>")
    if review.deadline is None:
        return f'<span class="nbq-no-deadline">no deadline</span>{reminders}'
    then = THEN.get(review.on_deadline, review.on_deadline)
    overdue = review.overdue or review.deadline <= now
    return (f'<span class="nbq-left{" nbq-overdue" if overdue else ""}" '
            f'data-deadline="{review.deadline!r}" data-then="{esc(then)}" '
            f'data-overdue="{int(review.overdue)}">{esc(review.deadline_text(now))}</span>'
            f"{reminders}")


def payload_html(data: dict[str, str], label: str = "payload") -> str:
    """A display bundle as page HTML: text/html in a sandboxed iframe, images as
    ``data:`` images, text escaped.

    >>> frame = payload_html({"text/html": "<script>alert(1)</script><b>hi</b>"})
    >>> 'sandbox=""' in frame and "<script>" not in frame and "&lt;b&gt;hi" in frame
    True
    >>> payload_html({"text/plain": "<1 & 2>"})
    '<pre class="nbq-text">&lt;1 &amp; 2&gt;</pre>'
    >>> payload_html({})
    '<p class="nbq-none">no payload</p>'
    """
    if "text/html" in data:
        doc = ('<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{margin:8px;'
               "font:13px/1.4 system-ui,sans-serif}table{border-collapse:collapse}"
               "td,th{padding:2px 6px;border-bottom:1px solid #ddd}img,svg{max-width:100%}"
               f"</style></head><body>{data['text/html']}</body></html>")
        return (f'<div class="nbq-frame-box"><iframe class="nbq-frame" sandbox="" '
                f'title="{esc(label)}" srcdoc="{esc(doc)}"></iframe></div>')
    png = data.get("image/png")
    if isinstance(png, str) and _BASE64.match(png):
        return f'<img class="nbq-image" alt="{esc(label)}" src="data:image/png;base64,{png}">'
    svg = data.get("image/svg+xml")
    if isinstance(svg, str):
        encoded = base64.b64encode(svg.encode()).decode()
        return (f'<img class="nbq-image" alt="{esc(label)}" '
                f'src="data:image/svg+xml;base64,{encoded}">')
    if "text/plain" in data:
        return f'<pre class="nbq-text">{esc(data["text/plain"])}</pre>'
    return '<p class="nbq-none">no payload</p>'


def field_html(card: str, f: Field) -> str:
    """One form field: a labelled input (text, number, select or checkbox) and the place
    where its validation error shows.

    >>> text = field_html("c1", Field("n<", "choice", "b", ("a", "b")))
    >>> '<option value="b" selected>' in text and 'data-field="n&lt;"' in text
    True
    """
    ident = f"{card}-f-{_slug(f.name)}"
    common = f'id="{ident}" name="field:{esc(f.name)}" data-field="{esc(f.name)}"'
    default = f.default
    if f.kind == "bool":
        checked = " checked" if default else ""
        control = f'<input type="checkbox" class="nbq-input" {common}{checked}>'
    elif f.kind == "choice":
        options = "".join(
            f'<option value="{esc(c)}"{" selected" if c == default else ""}>{esc(c)}</option>'
            for c in f.choices)
        control = f'<select class="nbq-input" {common}>{options}</select>'
    else:
        # numbers are typed as text: the server's parser says what is wrong with them,
        # next to the field, instead of the browser silently sending nothing
        mode = {"number": ' inputmode="decimal"', "integer": ' inputmode="numeric"'}.get(
            f.kind, "")
        value = "" if default is None else esc(default)
        hint = ' placeholder="required"' if default is None else ""
        control = (f'<input type="text" class="nbq-input" autocomplete="off"{mode} {common} '
                   f'value="{value}"{hint}>')
    return (f'<div class="nbq-field nbq-kind-{esc(f.kind)}"><label for="{ident}">'
            f"{esc(f.name)}</label> {control} "
            f'<span class="nbq-error" role="alert" data-error-for="{esc(f.name)}"></span></div>')


def card_html(queue_id: str, review: Review, now: float) -> str:
    """A pending review's card: title, name, id, age, deadline, payload, fields, comment,
    Approve and Reject."""
    card = f"gate-{_slug(review.id)}"  # the anchor of reviewing.review_link
    fields = "".join(field_html(card, f) for f in review.fields)
    name = (f' <span class="nbq-name">{esc(review.name)}</span>'
            if review.name and review.name != review.title else "")
    return (
        f'<article class="nbq-card" id="{card}" data-key="{esc(queue_id)}/{esc(review.id)}" '
        f'data-queue="{esc(queue_id)}" data-gate="{esc(review.id)}">'
        f'<header><h3 class="nbq-title">{esc(review.title)}</h3>{name} '
        f'<code class="nbq-id">{esc(review.id)}</code></header>'
        f'<p class="nbq-times">{age_html(review.created, now)} &middot; '
        f"{deadline_html(review, now)}</p>"
        f'<div class="nbq-payload">{payload_html(review.payload_bundle, review.title)}</div>'
        f'<form class="nbq-decide" novalidate autocomplete="off"><div class="nbq-fields">'
        f'{fields}<div class="nbq-field nbq-comment-box"><label for="{card}-comment">comment'
        f'</label> <textarea id="{card}-comment" name="comment" class="nbq-comment" rows="2" '
        f'placeholder="optional"></textarea></div></div>'
        f'<div class="nbq-buttons"><button type="button" class="nbq-approve" '
        f'data-action="approve">Approve</button> <button type="button" class="nbq-reject" '
        f'data-action="reject">Reject</button> <span class="nbq-message" role="status">'
        f"</span></div></form></article>")


def queue_head_html(view: QueueView) -> str:
    """A queue's heading: its path and how many reviews wait (or why it cannot be read)."""
    n = len(view.reviews)
    if view.error:
        what = f'<span class="nbq-queue-error">{esc(view.error)}</span>'
    else:
        what = (f'<span class="nbq-count">{n} review{"" if n == 1 else "s"} waiting</span>'
                if n else '<span class="nbq-count nbq-zero">nothing to review</span>')
    return (f'<header class="nbq-queue-head"><h2><code>{esc(view.path)}</code></h2> '
            f"{what}</header>")


def state(views: list[QueueView], version: str, now: float) -> dict[str, Any]:
    """What the page's JSON endpoint answers: per queue its heading and its cards."""
    return {"version": version, "now": now, "queues": [
        {"id": v.id, "head": queue_head_html(v),
         "cards": [{"key": f"{v.id}/{r.id}", "html": card_html(v.id, r, now)}
                   for r in v.reviews]}
        for v in views]}


def queues_html(views: list[QueueView], now: float) -> str:
    """The queues' sections as the page first shows them (``page.js`` keeps them up)."""
    return "".join(
        f'<section class="nbq-queue" id="nbq-q-{esc(v.id)}" data-queue="{esc(v.id)}">'
        f'{queue_head_html(v)}<div class="nbq-cards">'
        + "".join(card_html(v.id, r, now) for r in v.reviews)
        + "</div></section>" for v in views)


def page_html(views: list[QueueView], *, version: str, now: float, xsrf: str, nonce: str,
              where: str, only: str = "") -> str:
    """The whole page; ``xsrf`` is the token its POSTs send back, ``nonce`` the one of
    its inline script (``content_security_policy``); ``only``: the path of the one queue
    asked for (``?queue=PATH``, as in ``reviewing.review_link``)."""
    none = "" if views else " nbq-show"
    shown = [str(v.path) for v in views]
    if only and shown == [only]:
        scope = (f'<p class="nbq-scope">Only the queue <code>{esc(only)}</code>: '
                 '<a href="./">all queues</a></p>')
    elif only:
        scope = (f'<p class="nbq-scope">The queue <code>{esc(only)}</code> is not among those '
                 "this page shows (docs/reviews.md says which): all of them follow.</p>")
    else:
        scope = ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="nbq-xsrf" content="{esc(xsrf)}"><title>nbqueue reviews</title>'
        f'<style>{_asset("page.css")}</style></head><body>'
        '<header class="nbq-top"><h1>nbqueue reviews</h1> '
        f'<span class="nbq-where">{esc(where)}</span> '
        '<span id="nbq-banner" class="nbq-banner" role="status"></span></header>'
        f'{scope}<main id="nbq-queues" data-version="{esc(version)}" data-now="{now!r}" '
        f'data-only="{esc(only)}">{queues_html(views, now)}</main>'
        f'<p id="nbq-none" class="nbq-none{none}">No queue known yet: open one with '
        "<code>nbqueue.Queue(path)</code> under this server's directory, or list it in the "
        "configuration (docs/reviews.md).</p>"
        f'<script nonce="{esc(nonce)}">{_asset("page.js")}</script></body></html>')


def content_security_policy(nonce: str) -> str:
    """The page's policy: its own inline script only (by nonce), inline styles, ``data:``
    images, requests to itself only. A payload's iframe inherits it (and runs no script
    in any case: ``sandbox=""``), so a payload's styles and images work while it can load
    nothing from elsewhere. (A nonce on styles would disable 'unsafe-inline'.)"""
    return (f"default-src 'none'; script-src 'nonce-{nonce}'; "
            "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
            "frame-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'self'")


def _slug(text: str) -> str:
    """An id-safe form of ``text`` (hex of it if it has other characters).

    >>> _slug("a1b2.3"), _slug("x y")
    ('a1b2.3', '782079')
    """
    if re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        return text
    return binascii.hexlify(text.encode()).decode()


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text()


def dumps(data: Any) -> str:
    """JSON for the page's endpoints (``<`` escaped: safe even inside HTML)."""
    return json.dumps(data).replace("<", "\\u003c")
