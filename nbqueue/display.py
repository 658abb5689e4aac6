"""Pure renderers: display bundles of payloads and results, HTML of jobs and queues.

Nothing here imports IPython; panels, reports and ``_repr_html_`` share these.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from typing import Any

from . import job as J
from .arguments import MAX_COUNT

_STATE_COLORS = {
    J.WAITING: "#9e9e9e", J.READY: "#1e88e5", J.RUNNING: "#fb8c00", J.REVIEW: "#8e24aa",
    J.DONE: "#43a047", J.FAILED: "#e53935", J.CANCELLED: "#757575", J.REJECTED: "#6d4c41",
}


def bar_value(record: J.JobRecord) -> tuple[float, str]:
    """A job's progress bar: its fraction and style (``info``, ``success``, ``danger``).

    >>> bar_value(J.JobRecord(id="a", name="f", state="running",
    ...                       progress={"done": 1, "total": 4}))
    (0.25, 'info')
    >>> bar_value(J.JobRecord(id="a", name="f", state="done"))
    (1.0, 'success')
    """
    if record.state == J.DONE:
        return 1.0, "success"
    if record.state in (J.FAILED, J.REJECTED):
        return 1.0, "danger"
    progress = record.progress or {}
    done, total = progress.get("done"), progress.get("total")
    if total:
        return max(0.0, min(float(done or 0) / float(total), 1.0)), "info"
    return 0.0, "info"


def bundle(obj: Any) -> dict[str, str]:
    """A rich display bundle of ``obj``: text/plain always; text/html, image/png,
    image/svg+xml and text/markdown where the object offers them.

    >>> bundle("hello")
    {'text/plain': "'hello'"}
    >>> sorted(bundle(type("T", (), {"_repr_html_": lambda self: "<b>x</b>"})()))
    ['text/html', 'text/plain']
    """
    out: dict[str, str] = {}
    mimebundle = _call(obj, "_repr_mimebundle_")
    if isinstance(mimebundle, tuple):
        mimebundle = mimebundle[0]
    if isinstance(mimebundle, dict):
        for mime, data in mimebundle.items():
            if isinstance(data, bytes):
                data = base64.b64encode(data).decode()
            if isinstance(data, str):
                out[mime] = data
    for mime, method in (("text/html", "_repr_html_"), ("image/svg+xml", "_repr_svg_"),
                         ("text/markdown", "_repr_markdown_")):
        if mime not in out:
            value = _call(obj, method)
            if isinstance(value, str):
                out[mime] = value
    if "image/png" not in out:
        png = _call(obj, "_repr_png_")
        if png is None and hasattr(obj, "savefig"):  # a matplotlib figure
            buf = io.BytesIO()
            try:
                obj.savefig(buf, format="png", bbox_inches="tight")
                png = buf.getvalue()
            except Exception:
                png = None
        if isinstance(png, bytes):
            out["image/png"] = base64.b64encode(png).decode()
    if isinstance(obj, str) and not out:
        out["text/plain"] = repr(obj)
    else:
        out.setdefault("text/plain", _plain(obj))
    return {"text/plain": out.pop("text/plain"), **out}


def _call(obj: Any, method: str) -> Any:
    fn = getattr(obj, method, None)
    if fn is None or isinstance(obj, type):
        return None
    try:
        return fn()
    except Exception:
        return None


def _plain(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception as exc:
        text = f"<{type(obj).__name__}: repr failed: {exc}>"
    return text if len(text) <= 20000 else text[:20000] + " ..."


def payload_bytes(payload: Any) -> bytes | None:
    """A gate's payload as stored: its display bundle in JSON (None for no payload)."""
    if payload is None:
        return None
    data = bundle(payload) if not isinstance(payload, str) else {"text/plain": payload}
    return json.dumps(data).encode()


def payload_bundle(blob: bytes | None) -> dict[str, str]:
    return {} if not blob else json.loads(blob)


def bundle_html(data: dict[str, str]) -> str:
    """The richest HTML for a display bundle."""
    if "text/html" in data:
        return data["text/html"]
    if "image/png" in data:
        return f'<img src="data:image/png;base64,{data["image/png"]}"/>'
    if "image/svg+xml" in data:
        return data["image/svg+xml"]
    return f"<pre>{html.escape(data.get('text/plain', ''))}</pre>"


def state_badge(state: str) -> str:
    color = _STATE_COLORS.get(state, "#999")
    return (f'<span class="nbq-state nbq-{html.escape(state)}" style="background:{color};'
            f'color:white;border-radius:3px;padding:0 4px">{html.escape(state)}</span>')


def elapsed_text(record: J.JobRecord, now: float | None = None) -> str:
    if record.started is None:
        return ""
    end = record.ended or (now or time.time())
    seconds = max(end - record.started, 0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def progress_text(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    done, total = progress.get("done"), progress.get("total")
    text = f"{done}/{total}" if total else f"{done}"
    if progress.get("message"):
        text += f" {progress['message']}"
    return text


def job_html(record: J.JobRecord) -> str:
    """A job as a one-row HTML table.

    >>> "done" in job_html(J.JobRecord(id="a1", name="f", state="done"))
    True
    """
    cells = [html.escape(record.id), html.escape(record.name), state_badge(record.state),
             html.escape(record.note), html.escape(progress_text(record.progress)),
             html.escape(elapsed_text(record))]
    head = "".join(f"<th>{h}</th>" for h in ("id", "name", "state", "reason", "progress",
                                             "elapsed"))
    body = "".join(f"<td>{c}</td>" for c in cells)
    return f'<table class="nbq-job"><tr>{head}</tr><tr>{body}</tr></table>'


def queue_html(status: dict[str, Any]) -> str:
    """A queue's status (``Queue.status()``) as HTML.

    >>> html_text = queue_html({"path": "/q", "counts": {"done": 2}, "running": [],
    ...                         "reviews": [], "dispatchers": []})
    >>> "done" in html_text and "/q" in html_text
    True
    """
    counts = " ".join(f"{state_badge(s)}&nbsp;{n}" for s, n in status["counts"].items() if n)
    rows = "".join(
        f"<tr><td>{html.escape(j['id'])}</td><td>{html.escape(j['name'])}</td>"
        f"<td>{state_badge(j['state'])}</td><td>{html.escape(j.get('reason') or '')}</td></tr>"
        for j in status.get("running", []) + status.get("reviews", []))
    dispatchers = status.get("dispatchers", [])
    errors = "".join(f"<pre class='nbq-error'>dispatcher died: {html.escape(d['error'])}</pre>"
                     for d in dispatchers if d.get("error"))
    return (f'<div class="nbq-queue"><b>nbqueue</b> <code>{html.escape(status["path"])}</code>'
            f"<div>{counts or 'empty'}</div>{errors}"
            + (f"<table>{rows}</table>" if rows else "") + "</div>")


def children_summary(counts: dict[str, int]) -> str:
    """A parent's children by state, in words.

    >>> children_summary({"done": 3, "running": 2})
    '5 children: 2 running, 3 done'
    >>> children_summary({"ready": 1})
    '1 child: 1 ready'
    """
    total = sum(counts.values())
    parts = ", ".join(f"{counts[s]} {s}" for s in J.STATES if counts.get(s))
    return f"{total} {'child' if total == 1 else 'children'}: {parts}"


def tree_indent(depth: int) -> str:
    """The indentation and elbow that put a line ``depth`` levels under a top-level job.

    >>> tree_indent(0)
    ''
    >>> "padding-left:16px" in tree_indent(2)
    True
    """
    if depth <= 0:
        return ""
    return (f'<span class="nbq-indent" style="padding-left:{16 * (depth - 1)}px;'
            f'color:#999">&#x2514;&nbsp;</span>')


def tree_name_html(record: J.JobRecord, depth: int = 0) -> str:
    """A job's name and id, indented ``depth`` levels (children under their parent).

    >>> tree_name_html(J.JobRecord(id="a1.2", name="sq", state="ready"), 1).count("&#x2514;")
    1
    """
    return (f"{tree_indent(depth)}<b>{html.escape(record.name)}</b> "
            f"<small><code>{html.escape(record.id)}</code></small>")


def count_badges(counts: dict[str, int]) -> str:
    """A badge and a count for each state that has jobs, in the order of ``J.STATES``."""
    return " ".join(f"{state_badge(s)}&nbsp;{counts[s]}" for s in J.STATES if counts.get(s))


def children_html(counts: dict[str, int], *, depth: int, first: int = 0, shown: int = 0,
                  expanded: bool = False) -> str:
    """The summary line over a parent's children: how many in each state, which of them
    follow (``shown`` of them from the ``first``-th, 1-based, in the panel's order).

    >>> text = children_html({"running": 2, "done": 3}, depth=1, first=1, shown=2)
    >>> "5 children" in text and "nbq-running" in text and "2 active shown" in text
    True
    >>> "6&ndash;10 shown" in children_html({"done": 30}, depth=1, first=6, shown=5,
    ...                                       expanded=True)
    True
    """
    total = sum(counts.values())
    badges = count_badges(counts)
    if expanded and shown:
        which = f"{first}&ndash;{first + shown - 1} shown"
    elif shown:
        which = f"{shown} active shown"
    else:
        which = ""
    noun = "child" if total == 1 else "children"
    return (f'<span class="nbq-children-summary" title="{html.escape(children_summary(counts))}">'
            f"{tree_indent(depth)}<i>{total} {noun}</i> {badges}"
            + (f' <small style="color:#777">&middot; {which}</small>' if which else "")
            + "</span>")


def capacity_text(capacity: int) -> str:
    """``capacity 2``, or ``no capacity limit`` (a resource declared with a rate alone).

    >>> capacity_text(2), capacity_text(2 ** 53)
    ('capacity 2', 'no capacity limit')
    """
    return "no capacity limit" if capacity >= MAX_COUNT else f"capacity {capacity}"
