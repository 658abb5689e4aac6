"""The detail view of one job, shown under its row: its facts, its remote traceback, the
output of each attempt and its result."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import ipywidgets as W

from .. import job as J
from ..details import Attempt, JobDetails, facts, tail
from ..errors import NoSuchJob
from ..handle import Job
from .base import result_html, set_traits, show

if TYPE_CHECKING:
    from .panel import QueuePanel

LOG_LINES = 200  # lines of each attempt's output shown (the tail)


class JobDetail(W.VBox):
    """Everything about one job (see ``details.job_details``), re-read at each refresh
    of the panel while it is open. Each attempt's output is an HTML ``<details>``
    element of its own, opened and closed in the browser alone; only the ones that
    changed are sent again."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.job_id: str | None = None
        self._facts = W.HTML()
        self._error = W.HTML()
        self._logs: list[W.HTML] = []
        self._logs_box = W.VBox()
        self._result = W.HTML()
        self._result_of: tuple[str, float | None] | None = None
        super().__init__([self._facts, self._error, self._logs_box, self._result])
        self.add_class("nbq-detail")

    def show(self, job_id: str) -> bool:
        """Show this job's details; False if it is gone (forgotten)."""
        try:
            details = Job(self._panel.queue, job_id).details()
        except NoSuchJob:
            self.hide()
            return False
        self.job_id = job_id
        set_traits(self._facts, value=facts_html(details))
        set_traits(self._error, value=error_html(details.record))
        self._show_logs(details)
        self._show_result(details.record)
        show(self, True)
        return True

    def hide(self) -> None:
        self.job_id = None
        show(self, False)

    def _show_logs(self, details: JobDetails) -> None:
        attempts = [a for a in details.attempts if a.log or a.why]
        while len(self._logs) < len(attempts):
            self._logs.append(W.HTML())
        for i, attempt in enumerate(attempts):
            last = i == len(attempts) - 1
            set_traits(self._logs[i], value=attempt_html(attempt, alone=len(attempts) == 1,
                                                         open_=last))
        children = tuple(self._logs[:len(attempts)])
        if self._logs_box.children != children:
            self._logs_box.children = children

    def _show_result(self, record: J.JobRecord) -> None:
        if record.state != J.DONE or record.kind == J.TIMER:
            self._result_of = None
            set_traits(self._result, value="")
            return
        if self._result_of == (record.id, record.ended):
            return  # loaded once per ending: a result can be large
        self._result_of = (record.id, record.ended)
        try:
            body = result_html(Job(self._panel.queue, record.id))
        except Exception as exc:  # e.g. a module this kernel cannot import
            body = (f'<pre class="nbq-error">cannot load the result here: '
                    f"{html.escape(f'{type(exc).__name__}: {exc}')}</pre>")
        set_traits(self._result, value=f'<div class="nbq-result"><b>result</b>{body}</div>')


def facts_html(details: JobDetails) -> str:
    """A job's facts as a two-column table, under its name and whole id."""
    r = details.record
    rows = "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(v)}</td></tr>"
                   for k, v in facts(details))
    return (f'<div class="nbq-detail-title"><b>{html.escape(r.name)}</b> '
            f'<span class="nbq-id">job {html.escape(r.id)}</span></div>'
            f'<table class="nbq-facts">{rows}</table>')


def error_html(record: J.JobRecord) -> str:
    """A job's error with its remote traceback (from the user's code on); for a job that
    has not failed, the error of an earlier attempt, said as such."""
    error = record.error
    if error is None:
        return ""
    what = "error" if record.state == J.FAILED else "error of an earlier attempt"
    text = error.traceback or f"{error.exc_type}: {error.exc_value}"
    return (f'<div class="nbq-error"><b>{what}</b>: {html.escape(error.exc_type)}: '
            f'{html.escape(error.exc_value)}<pre class="nbq-traceback">{html.escape(text)}'
            "</pre></div>")


def attempt_html(attempt: Attempt, *, alone: bool = False, open_: bool = False) -> str:
    """One attempt's output as a ``<details>`` element: its header says which attempt,
    why it ran and how many lines it printed.

    >>> "attempt 2: it died" in attempt_html(Attempt(2, "it died", "x\\n"))
    True
    """
    shown, left = tail(attempt.log, LOG_LINES)
    count = len(attempt.log.rstrip("\n").splitlines()) if attempt.log else 0
    title = "output" if alone else f"attempt {attempt.number}" + (
        f": {attempt.why}" if attempt.why else "")
    title += f" · {count} line{'s' if count != 1 else ''}" if count else " · no output"
    more = f"[{left} earlier lines not shown]\n" if left else ""
    body = f"<pre>{html.escape(more + shown)}</pre>" if shown else ""
    return (f'<details class="nbq-attempt-log"{" open" if open_ and shown else ""}>'
            f"<summary>{html.escape(title)}</summary>{body}</details>")
