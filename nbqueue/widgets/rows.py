"""The panel's rows: a job, the summary of a parent's children, a resource.

Rows are pooled: made once, then shown with new values or hidden.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from .. import job as J
from ..display import children_html, elapsed_text, state_badge, tree_name_html
from ..queue import Job
from .base import bar_value, set_traits, show
from .tree import ChildrenLine

if TYPE_CHECKING:
    from .panel import QueuePanel


class JobRow(W.HBox):
    """One job: name (indented under its parent), state, reason, progress, elapsed,
    resources, cancel and retry."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.job_id: str | None = None
        self.depth = 0
        self._name = W.HTML(layout=W.Layout(width="230px"))
        self._state = W.HTML(layout=W.Layout(width="80px"))
        self._reason = W.HTML(layout=W.Layout(width="240px"))
        self._bar = W.FloatProgress(min=0.0, max=1.0, layout=W.Layout(width="120px"))
        self._elapsed = W.HTML(layout=W.Layout(width="70px"))
        self._resources = W.HTML(layout=W.Layout(width="100px"))
        self._cancel = W.Button(description="cancel", layout=W.Layout(width="70px"))
        self._retry = W.Button(description="retry", layout=W.Layout(width="60px"))
        self._cancel.add_class("nbq-cancel")
        self._retry.add_class("nbq-retry")
        self._cancel.on_click(self._on_cancel)
        self._retry.on_click(self._on_retry)
        super().__init__([self._name, self._state, self._reason, self._bar, self._elapsed,
                          self._resources, self._cancel, self._retry])
        self.add_class("nbq-job")

    def show(self, record: J.JobRecord, depth: int = 0) -> None:
        self.job_id, self.depth = record.id, depth
        # both leave the classes as they are (no message) when nothing changes
        (self.add_class if depth > 0 else self.remove_class)("nbq-child")
        set_traits(self._name, value=tree_name_html(record, depth))
        set_traits(self._state, value=state_badge(record.state))
        set_traits(self._reason, value=html.escape(record.note))
        value, style = bar_value(record)
        set_traits(self._bar, value=value, bar_style=style)
        set_traits(self._elapsed, value=html.escape(elapsed_text(record)))
        resources = record.options.resources
        set_traits(self._resources, value=html.escape(", ".join(
            k if n == 1 else f"{k}={n}" for k, n in resources.items())))
        set_traits(self._cancel, disabled=record.state in J.ENDED)
        set_traits(self._retry, disabled=record.state not in (J.FAILED, J.CANCELLED)
                   or record.kind == J.GATE)
        show(self, True)

    def hide(self) -> None:
        self.job_id = None
        show(self, False)

    def _on_cancel(self, _button: W.Button) -> None:
        if self.job_id is not None:
            job_id = self.job_id
            self._panel._act(lambda: Job(self._panel.queue, job_id).cancel())

    def _on_retry(self, _button: W.Button) -> None:
        if self.job_id is not None:
            job_id = self.job_id
            self._panel._act(lambda: Job(self._panel.queue, job_id).retry())


class ChildrenRow(W.HBox):
    """The summary of a parent's children by state, with an expand / collapse toggle
    and, when expanded over several pages, buttons to page through them."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.parent_id: str | None = None
        self.depth = 0
        self.expanded = False
        self._page = 0
        self._summary = W.HTML(layout=W.Layout(width="560px"))
        self._toggle = W.Button(description="expand", layout=W.Layout(width="80px"))
        self._newer = W.Button(description="newer", layout=W.Layout(width="70px"))
        self._older = W.Button(description="older", layout=W.Layout(width="70px"))
        self._toggle.add_class("nbq-expand")
        self._newer.add_class("nbq-children-newer")
        self._older.add_class("nbq-children-older")
        self._toggle.on_click(self._on_toggle)
        self._newer.on_click(lambda _b: self._turn(-1))
        self._older.on_click(lambda _b: self._turn(1))
        super().__init__([self._summary, self._toggle, self._newer, self._older])
        self.add_class("nbq-children")

    def show(self, line: ChildrenLine) -> None:
        self.parent_id, self.depth, self._page = line.parent, line.depth, line.page
        self.expanded = line.expanded
        set_traits(self._summary, value=children_html(
            line.counts, depth=line.depth, first=line.first, shown=line.shown,
            expanded=line.expanded))
        set_traits(self._toggle, description="collapse" if line.expanded else "expand")
        paged = line.expanded and line.pages > 1
        show(self._newer, paged)
        show(self._older, paged)
        set_traits(self._newer, disabled=line.page == 0)
        set_traits(self._older, disabled=line.page >= line.pages - 1)
        show(self, True)

    def hide(self) -> None:
        self.parent_id = None
        show(self, False)

    def _on_toggle(self, _button: W.Button) -> None:
        if self.parent_id is not None:
            self._panel._expand(self.parent_id, None if self.expanded else 0)

    def _turn(self, step: int) -> None:
        if self.parent_id is not None:
            self._panel._expand(self.parent_id, max(self._page + step, 0))


class ResourceRow(W.HBox):
    """One resource: capacity, holders, waiting jobs, and an availability switch."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.resource: str | None = None
        self._available: bool | None = None
        self._info = W.HTML(layout=W.Layout(width="520px"))
        self._toggle = W.ToggleButton(description="available", layout=W.Layout(width="110px"))
        self._toggle.add_class("nbq-available")
        self._toggle.observe(self._on_toggle, names="value")
        super().__init__([self._info, self._toggle])
        self.add_class("nbq-resource")

    def show(self, name: str, info: dict[str, Any], names: dict[str, str]) -> None:
        self.resource = name
        holders = ", ".join(
            f"{names.get(h['job'], h['job'])}" + (f" ({h['units']})" if h["units"] != 1 else "")
            for h in info.get("holders", []))
        text = (f"<b>{html.escape(name)}</b> capacity {info['capacity']}; "
                f"held by {html.escape(holders) if holders else 'nobody'}"
                + (f"; {info['waiting']} waiting" if info.get("waiting") else ""))
        set_traits(self._info, value=text)
        self._available = bool(info["available"])
        set_traits(self._toggle, value=self._available,
                   description="available" if self._available else "unavailable",
                   button_style="success" if self._available else "warning")
        show(self, True)

    def hide(self) -> None:
        self.resource = None
        show(self, False)

    def _on_toggle(self, change: dict[str, Any]) -> None:
        # a change made by show() repeats what the store says: nothing to do
        if self.resource is None or change["new"] == self._available:
            return
        name, available = self.resource, bool(change["new"])
        self._panel._act(lambda: self._panel.queue.set_resource(name, available=available))
