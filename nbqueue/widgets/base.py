"""Small helpers the widgets share: showing, hiding, setting only changed traits, a
button whose click shows at once, and the HTML of a result or a failure."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from .. import job as J
from ..cellview import outputs_html
from ..display import bundle, bundle_html
from ..handle import Job

HIDDEN = "none"


def show(widget: W.Widget, visible: bool) -> None:
    """Show or hide a widget (its layout's ``display``)."""
    widget.layout.display = None if visible else HIDDEN


def set_traits(widget: W.Widget, **traits: Any) -> None:
    """Set the traits whose value differs: each set is a message to the front end."""
    for name, value in traits.items():
        if getattr(widget, name) != value:
            setattr(widget, name, value)


class ActionButton(W.ToggleButton):
    """A panel button whose click shows at once, in the browser, that it was taken.

    A toggle button: the browser presses it (``mod-active``) on a click, without waiting
    for the kernel, and the panel's stylesheet then shows its busy label ("approving…")
    and takes no second click. The kernel runs the handlers when it gets the click (when
    it is idle) and un-presses it. ``click()`` does what a click in the browser does.

    Parameters
    ----------
    description : str
        Its label.
    css_class : str
        Its CSS class (``nbq-approve``...): tests find it by it, the stylesheet gives its
        busy label (``style.BUSY_LABELS``).
    """

    def __init__(self, description: str, css_class: str, **kwargs: Any) -> None:
        super().__init__(value=False, description=description, **kwargs)
        self.add_class("nbq-action")
        self.add_class(css_class)
        self._handlers: list[Callable[[ActionButton], Any]] = []
        self.observe(self._pressed, names="value")

    def on_press(self, handler: Callable[[ActionButton], Any]) -> None:
        """Call ``handler(button)`` on each click."""
        self._handlers.append(handler)

    def click(self) -> None:
        """Press it, as a click in the browser does: the handlers run, then it is
        released."""
        self.value = True

    def _pressed(self, change: dict[str, Any]) -> None:
        if not change["new"]:
            return
        try:
            if not self.disabled:
                for handler in list(self._handlers):
                    handler(self)
        finally:
            self.value = False


def result_html(job: Job) -> str:
    """A finished job's result as HTML (a cell job's outputs as their table)."""
    value = job.result()
    if isinstance(value, dict) and hasattr(value, "dropped"):
        return outputs_html(value)
    return bundle_html(bundle(value))


def failure_html(record: J.JobRecord) -> str:
    """A failed job's remote traceback (or its reason) as HTML."""
    error = record.error
    text = (error.traceback or f"{error.exc_type}: {error.exc_value}") if error else record.reason
    return f'<pre class="nbq-traceback">{html.escape(text)}</pre>'
