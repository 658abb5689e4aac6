"""What a ``%%enqueue`` cell shows, as display bundles (``text/html`` and ``text/plain``).

These bundles are the cell's outputs in the notebook document, kept current by
``nbqueue.notebook.cellstatus.CellStatus``: what the saved ``.ipynb``, nbconvert and a viewer
without a kernel show is exactly this. So they hold no widget and no script, only
markup with inline styles and a plain-text twin. Pure functions of a ``CellState``;
nothing here imports IPython. The panel and the review page show a cell job's outputs
(``cellrun.CellOutputs``) as the cell does, with ``outputs_html``; a review payload of
type ``RESULT_REF_MIME`` stands for them until the job has run.
"""

from __future__ import annotations

import html
import types
from dataclasses import dataclass, field
from typing import Any

from . import job as J
from .display import (
    bar_value,
    bundle,
    bundle_html,
    elapsed_text,
    progress_text,
    state_badge,
)

LOG_LINES = 20  # lines of the job's output shown under its status

# A review payload that stands for "the outputs of job X", rendered by panels once
# that job has finished (a gate is created before the cell it reviews has run).
RESULT_REF_MIME = "application/vnd.nbqueue.job-result+json"

_BAR_COLORS = {"info": "#1e88e5", "success": "#43a047", "danger": "#e53935"}


@dataclass(frozen=True)
class CellState:
    """A cell job as its cell shows it, read from the store at one moment.

    ``result`` is the job's result once it is done (a ``CellOutputs``: the variables
    and the last expression's display), ``result_error`` why it could not be loaded;
    ``notes`` are lines about the variables (which came back, which were kept).
    """

    record: J.JobRecord
    gate: J.JobRecord | None = None
    result: Any = None
    result_error: str = ""
    logs: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def final(self) -> bool:
        """Whether the job (and its review gate) has ended."""
        if self.record.state != J.DONE:
            return self.record.state in J.ENDED
        return self.gate is None or self.gate.state in J.ENDED


def tail(text: str, lines: int = LOG_LINES) -> str:
    """The last ``lines`` lines of a log.

    >>> tail("a\\nb\\nc\\n", 2)
    'b\\nc'
    """
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def status_line(state: CellState) -> str:
    """The one-line summary: name, id, state, why it waits or runs again, progress,
    elapsed time, and the review's state.

    >>> status_line(CellState(J.JobRecord(id="a1", name="fit", state="waiting",
    ...                                   reason="not before 15:00")))
    'fit (job a1) waiting: not before 15:00'
    """
    record, gate = state.record, state.gate
    text = f"{record.name} (job {record.id}) {record.state}"
    if record.note:
        text += f": {record.note}"
    extra = [progress_text(record.progress), elapsed_text(record)]
    if gate is not None and record.state == J.DONE:
        extra.append(review_text(gate) + (f": {gate.reason}" if gate.reason
                                          and gate.reason != gate.state else ""))
    return " · ".join([text] + [e for e in extra if e])


def review_text(gate: J.JobRecord) -> str:
    """A cell's review gate in words: "waiting for review", "review done", ...

    >>> review_text(J.JobRecord(id="g", name="Review fit", state="review"))
    'waiting for review'
    """
    return "waiting for review" if gate.state == J.REVIEW else f"review {gate.state}"


def status_bundle(state: CellState) -> dict[str, str]:
    """The status output of a cell job: the summary line with a progress bar, the notes
    on its variables, then the remote traceback (failed) or the table of its variables
    (done), then the tail of its output.

    >>> data = status_bundle(CellState(J.JobRecord(id="a1", name="fit", state="running")))
    >>> sorted(data), "nbq-running" in data["text/html"], data["text/plain"]
    (['text/html', 'text/plain'], True, 'fit (job a1) running')
    """
    record, gate = state.record, state.gate
    parts = [f"<b>{html.escape(record.name)}</b>",
             f'<small><code>{html.escape(record.id)}</code></small>', state_badge(record.state)]
    if record.note:  # why it waits, or why this attempt runs again
        parts.append(html.escape(record.note))
    for text in (progress_text(record.progress), elapsed_text(record)):
        if text:
            parts.append(html.escape(text))
    if gate is not None and record.state == J.DONE:
        parts.append("&middot; " + (state_badge(gate.state) + " waiting for a person"
                                    if gate.state == J.REVIEW else
                                    "review " + state_badge(gate.state)))
        if gate.reason and gate.reason != gate.state:
            parts.append(html.escape(gate.reason))
    fraction, style = bar_value(record)
    if gate is not None and record.state == J.DONE and gate.state in (J.REJECTED, J.CANCELLED):
        style = "danger"  # the outputs were not accepted
    progress = (f'<span class="nbq-bar" title="{fraction:.0%}" style="display:inline-block;'
                f"width:120px;height:8px;margin-left:8px;background:#e0e0e0;border-radius:4px;"
                f'vertical-align:middle"><span style="display:block;height:8px;width:'
                f'{fraction * 100:.0f}%;background:{_BAR_COLORS[style]};border-radius:4px">'
                "</span></span>")
    blocks = [f'<div><span class="nbq-line">{" ".join(parts)}</span>{progress}</div>']
    lines = [status_line(state)]
    for note in state.notes:
        blocks.append(f'<div class="nbq-bound">{html.escape(note)}</div>')
        lines.append(note)
    if record.state == J.FAILED:
        error = record.error
        trace = (error.traceback or f"{error.exc_type}: {error.exc_value}") if error \
            else record.reason
        blocks.append(f'<pre class="nbq-traceback">{html.escape(trace)}</pre>')
        lines.append(trace.rstrip("\n"))
    elif record.state == J.DONE:
        if state.result_error:
            blocks.append(f'<pre class="nbq-error">{html.escape(state.result_error)}</pre>')
            lines.append(state.result_error)
        elif state.result is not None:
            blocks.append(variables_html(state.result))
            lines.append(variables_text(state.result))
    logs = tail(state.logs) if state.logs else ""
    if logs:
        blocks.append(f'<pre class="nbq-logs" style="max-height:20em;overflow:auto">'
                      f"{html.escape(logs)}</pre>")
        lines.append(f"--- its output (last {LOG_LINES} lines) ---\n{logs}")
    return {"text/html": f'<div class="nbq-cell">{"".join(blocks)}</div>',
            "text/plain": "\n".join(line for line in lines if line)}


def result_display(state: CellState) -> dict[str, str]:
    """The display bundle of the cell's last expression once the job is done (a figure's
    ``image/png``, a table's ``text/html``...), as a plain cell would show it; empty
    before, and for a cell whose last line is not an expression.

    >>> result_display(CellState(J.JobRecord(id="a", name="f", state="running")))
    {'text/plain': ''}
    """
    result = state.result
    if state.record.state != J.DONE or result is None:
        return {"text/plain": ""}
    if isinstance(result, dict) and hasattr(result, "dropped"):  # a cell's outputs
        return dict(getattr(result, "display", None) or {"text/plain": ""})
    return bundle(result)


def outputs_html(outputs: dict[str, Any]) -> str:
    """A cell job's outputs as HTML: the last expression's display, then the variables.

    >>> from nbqueue.cellrun import CellOutputs
    >>> ">x</td>" in outputs_html(CellOutputs({"x": 1}))
    True
    """
    display = getattr(outputs, "display", None)
    shown = f'<div class="nbq-cell-display">{bundle_html(display)}</div>' if display else ""
    table = variables_html(outputs) if outputs or getattr(outputs, "dropped", None) else ""
    return shown + table or "<i>no outputs</i>"


def variables_html(result: Any) -> str:
    """A cell job's variables as an HTML table (any other result as its display).

    >>> from nbqueue.cellrun import CellOutputs
    >>> ">x</td>" in variables_html(CellOutputs({"x": 1}))
    True
    """
    if not (isinstance(result, dict) and hasattr(result, "dropped")):
        return bundle_html(bundle(result))
    left = 'style="text-align:left"'  # JupyterLab aligns table cells right
    rows = "".join(
        f"<tr><td {left}>{html.escape(k)}</td><td {left}>{html.escape(type(v).__name__)}</td>"
        f"<td {left}><code>{html.escape(short_repr(v))}</code></td></tr>"
        for k, v in result.items())
    parts = []
    if rows:
        head = "".join(f"<th {left}>{h}</th>" for h in ("name", "type", "value"))
        parts.append(f'<table class="nbq-cell-outputs"><tr>{head}</tr>{rows}</table>')
    for var, why in result.dropped.items():
        parts.append(f'<div class="nbq-dropped">left out: <code>{html.escape(var)}</code> '
                     f"({html.escape(why)})</div>")
    return "".join(parts) or "<i>no variables</i>"


def variables_text(result: Any) -> str:
    """The plain-text twin of ``variables_html``.

    >>> from nbqueue.cellrun import CellOutputs
    >>> print(variables_text(CellOutputs({"x": 1, "name": "a"})))
    x     int  1
    name  str  'a'
    """
    if not (isinstance(result, dict) and hasattr(result, "dropped")):
        return bundle(result)["text/plain"]
    rows = [(k, type(v).__name__, short_repr(v)) for k, v in result.items()]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(2)]
    lines = [f"{k:<{widths[0]}}  {t:<{widths[1]}}  {v}" for k, t, v in rows]
    lines += [f"left out: {var} ({why})" for var, why in result.dropped.items()]
    return "\n".join(lines) or "no variables"


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (a module: its name).

    >>> short_repr(types), short_repr("x" * 200)[-5:]
    ('types', 'xx...')
    """
    if isinstance(value, types.ModuleType):
        return value.__name__
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<repr failed: {exc}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
