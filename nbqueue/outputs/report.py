"""Ended jobs as notebook cells: the rendering behind ``NotebookReport`` and
``export_notebook`` (pure: nothing here reads the store or writes a file)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .. import job as J

if TYPE_CHECKING:
    from . import Ending


def new_notebook(title: str, queue: str) -> Any:
    """An empty report: a title cell."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(
        f"# {title}\n\nOne section per ended job of the queue `{queue}`, written by nbqueue "
        "as the jobs end.", metadata={"nbqueue": {"queue": queue}}))
    nb.metadata["nbqueue"] = {"queue": queue}
    return nb


def section(ending: Ending) -> list[Any]:
    """The cells of one ended job: a heading with its facts, then its result or error."""
    import nbformat

    from ..display import bundle

    d = ending.data
    meta = {"nbqueue": {"queue": ending.queue, "outbox": ending.seq, "job": d["id"]}}
    if ending.event != "ended":  # an event (review, reminder, drained): one line
        what = {"review": "review requested", "reminder": "reminder"}.get(ending.event,
                                                                          ending.event)
        subject = f": {_md(d['name'])} (`{d['id']}`)" if d["id"] else ""
        text = f"### {what}{subject}\n\n- {_when(d.get('at'))}" + (
            f": {_md(d['reason'])}" if d["reason"] else "")
        return [nbformat.v4.new_markdown_cell(text, metadata=meta)]
    lines = [f"## {_md(d['name'] or d['id'])} — {d['state']}", "",
             f"- job `{d['id']}`" + (f", attempt {d['attempt']}" if d["attempt"] else "")
             + (f", child of `{d['parent']}`" if d["parent"] else "")]
    times = [f"{label} {_when(d[key])}" for label, key in
             (("created", "created"), ("started", "started"), ("ended", "ended")) if d[key]]
    if times:
        lines.append("- " + ", ".join(times)
                     + (f" ({d['ended'] - d['started']:.1f} s)" if d["started"] and d["ended"]
                        else ""))
    if ending.loaded and isinstance(ending.value, J.Decision):
        decision = ending.value
        verdict = "approved" if decision.approved else "rejected"
        lines.append(f"- **{verdict}** by {_md(decision.by)} at {_when(decision.at)}"
                     + (f": {_md(decision.comment)}" if decision.comment else ""))
        if getattr(decision, "values", None):
            lines.append("- answers: " + ", ".join(f"{_md(k)} = {_md(repr(v))}"
                                                   for k, v in decision.values.items()))
    elif d["reason"]:
        lines.append(f"- {_md(d['reason'])}")
    cells = [nbformat.v4.new_markdown_cell("\n".join(lines), metadata=meta)]
    outputs = []
    if ending.payload:
        outputs.append(_display(ending.payload))
    if d["state"] == J.FAILED and d["error"]:
        err = d["error"]
        outputs.append(nbformat.v4.new_output(
            "error", ename=err.get("exc_type", "Error"), evalue=err.get("exc_value", ""),
            traceback=(err.get("traceback") or "").splitlines()))
    elif ending.loaded and ending.value is not None and not isinstance(ending.value, J.Decision):
        outputs.append(_display(bundle(ending.value)))
    elif ending.load_error:
        outputs.append(_display({"text/plain": ending.load_error}))
    if outputs:
        source = (f"# the payload of review {d['id']}" if d["kind"] == J.GATE else
                  f"# the result of job {d['id']}: q.job({d['id']!r}).result()")
        cells.append(nbformat.v4.new_code_cell(source, outputs=outputs, metadata=meta))
    return cells


def _display(data: dict[str, str]) -> Any:
    import nbformat

    clean: dict[str, Any] = {}
    for mime, value in data.items():
        if mime == "application/json" or mime.endswith("+json"):
            try:  # the notebook format wants JSON data as JSON, not as a string
                clean[mime] = json.loads(value)
            except ValueError:
                continue
        else:
            clean[mime] = value
    clean.setdefault("text/plain", "")
    return nbformat.v4.new_output("display_data", data=clean, metadata={})


def _md(text: Any) -> str:
    return str(text).replace("\n", " ").replace("<", "&lt;")


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")
