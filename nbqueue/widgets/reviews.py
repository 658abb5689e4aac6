"""Pending reviews: a card per gate with its payload and Approve / Reject buttons."""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING

import ipywidgets as W

from .. import job as J
from ..cells import RESULT_REF_MIME
from ..display import bundle_html, payload_bundle, tree_name_html
from ..queue import Job, Queue
from .base import result_html, set_traits, show

if TYPE_CHECKING:
    from .panel import QueuePanel


class ReviewCard(W.VBox):
    """One pending gate: title, payload, a comment box, Approve and Reject."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.gate_id: str | None = None
        self._title = W.HTML()
        self._payload = W.HTML()
        self._comment = W.Textarea(placeholder="comment (optional)",
                                   layout=W.Layout(width="420px", height="48px"))
        self._comment.add_class("nbq-comment")
        self._approve = W.Button(description="Approve", button_style="success")
        self._reject = W.Button(description="Reject", button_style="danger")
        self._approve.add_class("nbq-approve")
        self._reject.add_class("nbq-reject")
        self._approve.on_click(self._on_approve)
        self._reject.on_click(self._on_reject)
        super().__init__([self._title, self._payload, self._comment,
                          W.HBox([self._approve, self._reject])],
                         layout=W.Layout(border="1px solid #ccc", padding="4px", margin="4px 0"))
        self.add_class("nbq-review-card")

    def show(self, record: J.JobRecord, payload: str) -> None:
        if record.id != self.gate_id:
            self.gate_id = record.id
            set_traits(self._comment, value="")
        set_traits(self._title, value=tree_name_html(record))
        set_traits(self._payload, value=f'<div class="nbq-payload">{payload}</div>')
        show(self, True)

    def hide(self) -> None:
        self.gate_id = None
        show(self, False)

    def _on_approve(self, _button: W.Button) -> None:
        self._decide(True)

    def _on_reject(self, _button: W.Button) -> None:
        self._decide(False)

    def _decide(self, approved: bool) -> None:
        if self.gate_id is None:
            return
        gate_id, comment, queue = self.gate_id, self._comment.value, self._panel.queue
        if approved:
            self._panel._act(lambda: queue.approve(gate_id, comment=comment))
        else:
            self._panel._act(lambda: queue.reject(gate_id, comment=comment))


def payload_html(queue: Queue, gate_id: str) -> str:
    """A gate's payload as HTML. A payload that stands for a job's outputs shows that
    job's result once it has finished."""
    data = payload_bundle(queue.store.payload(gate_id))
    if not data:
        return "<i>no payload</i>"
    ref = data.get(RESULT_REF_MIME)
    if ref:
        job = Job(queue, json.loads(ref)["job"])
        try:
            if job.state == J.DONE:
                return result_html(job)
        except Exception:  # forgotten, or a result this kernel cannot load: the text says what
            pass
        return f"<pre>{html.escape(data.get('text/plain', ''))}</pre>"
    return bundle_html(data)
