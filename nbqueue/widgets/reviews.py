"""Pending reviews: a card per gate with its payload and Approve / Reject buttons."""

from __future__ import annotations

import html
import json
import re
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from .. import job as J
from ..cellview import RESULT_REF_MIME
from ..display import bundle_html
from ..handle import Job
from ..reviewing import Field, Review
from ..reviews import review_of
from .base import ActionButton, result_html, set_traits, show

if TYPE_CHECKING:
    from ..queue import Queue
    from .panel import QueuePanel


DEADLINE_TICK = 20.0  # seconds between redraws of a card's time left while nothing changes


class ReviewCard(W.VBox):
    """One pending gate: title, payload, a comment box, Approve and Reject."""

    def __init__(self, panel: QueuePanel) -> None:
        self._panel = panel
        self.gate_id: str | None = None
        self._title = W.HTML()
        self._payload = W.HTML()
        self._deadline = W.HTML()  # the time left, when the gate has a deadline
        self._deadline.add_class("nbq-deadline")
        self._fields = W.VBox()  # the answers the gate asks for (its fields)
        self._fields.add_class("nbq-fields")
        self._review: Review | None = None
        self._inputs: dict[str, W.Widget] = {}
        self._comment = W.Textarea(placeholder="comment (optional)",
                                   layout=W.Layout(height="48px"))
        self._comment.add_class("nbq-comment")
        self._approve = ActionButton("Approve", "nbq-approve", button_style="success")
        self._reject = ActionButton("Reject", "nbq-reject", button_style="danger")
        self._approve.on_press(self._on_approve)
        self._reject.on_press(self._on_reject)
        # in the browser alone: once one is pressed, the other and the comment are disabled
        # until the kernel has decided (it releases the button, and the links undo it)
        self._links = [W.jsdlink((self._approve, "value"), (self._reject, "disabled")),
                       W.jsdlink((self._reject, "value"), (self._approve, "disabled")),
                       W.jsdlink((self._approve, "value"), (self._comment, "disabled")),
                       W.jsdlink((self._reject, "value"), (self._comment, "disabled"))]
        super().__init__([self._title, self._deadline, self._payload, self._fields,
                          self._comment, W.HBox([self._approve, self._reject])],
                         layout=W.Layout(border="1px solid #ccc", padding="4px", margin="4px 0"))
        self.add_class("nbq-review-card")

    def show(self, record: J.JobRecord, payload: str) -> None:
        if record.id != self.gate_id:
            self.gate_id = record.id
            set_traits(self._comment, value="")
            self._ask(record.id)
        left = self._review.deadline_text() if self._review is not None else ""
        set_traits(self._deadline, value=f"<small>deadline: {html.escape(left)}</small>"
                   if left else "")
        set_traits(self._title, value=card_title_html(record))
        set_traits(self._payload, value=f'<div class="nbq-payload">{payload}</div>')
        show(self, True)

    def hide(self) -> None:
        self.gate_id = None
        show(self, False)

    @property
    def counts_down(self) -> bool:
        """Whether it shows a gate's time left (the panel redraws it now and then)."""
        return self.gate_id is not None and self._review is not None \
            and self._review.deadline is not None

    def _ask(self, gate_id: str) -> None:
        """One input per field of the gate (read once per gate: fields never change)."""
        try:
            self._review = review_of(self._panel.queue, gate_id)
        except Exception:  # forgotten meanwhile: the next refresh hides the card
            self._review = None
        fields = self._review.fields if self._review is not None else ()
        self._inputs = {f.name: field_input(f) for f in fields}
        self._fields.children = tuple(self._inputs.values())

    def answers(self) -> dict[str, Any]:
        """The answers as entered (``Queue.approve`` checks them against the fields)."""
        return {name: widget.value for name, widget in self._inputs.items()}

    def _on_approve(self, _button: W.Widget) -> None:
        self._decide(True)

    def _on_reject(self, _button: W.Widget) -> None:
        self._decide(False)

    def close(self) -> None:
        for link in self._links:
            link.close()
        super().close()

    def _decide(self, approved: bool) -> None:
        if self.gate_id is None:
            return
        gate_id, comment, queue = self.gate_id, self._comment.value, self._panel.queue
        if approved:
            values = self.answers() or None
            self._panel._act(lambda: queue.approve(gate_id, comment=comment, values=values))
        else:
            self._panel._act(lambda: queue.reject(gate_id, comment=comment))


def field_input(field: Field) -> W.Widget:
    """The input of one field: a dropdown for a choice, a checkbox for yes/no, else a text
    box (empty: its default), checked by ``Queue.approve`` as the CLI's ``--set`` is."""
    style = {"description_width": "initial"}
    if field.kind == "choice":
        widget: W.Widget = W.Dropdown(options=list(field.choices), value=field.default,
                                      description=field.name, style=style)
    elif field.kind == "bool":
        widget = W.Checkbox(value=bool(field.default), description=field.name, indent=False)
    else:
        widget = W.Text(value="" if field.default is None else str(field.default),
                        description=field.name, style=style,
                        placeholder=field.kind + ("" if field.default is not None
                                                  else " (required)"))
    widget.add_class("nbq-field-" + re.sub(r"[^A-Za-z0-9_-]", "-", field.name))
    return widget


def card_title_html(record: J.JobRecord) -> str:
    """A gate's title and id on one line: the title wraps, the id does not.

    >>> "nbq-card-title" in card_title_html(J.JobRecord(id="a1", name="Check", state="review"))
    True
    """
    return (f'<div class="nbq-card-title"><b>{html.escape(record.name)}</b>'
            f'<span class="nbq-id">{html.escape(record.id)}</span></div>')


def payload_html(queue: Queue, gate_id: str) -> str:
    """A gate's payload as HTML. A payload that stands for a job's outputs shows that
    job's result once it has finished."""
    data = Job(queue, gate_id).payload
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
