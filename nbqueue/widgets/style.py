"""The panel's stylesheet: a ``<style>`` element in its header, every rule scoped to
``.nbq-panel``.

Layout. A job row is a line of fixed and flexible columns: the state, the progress bar
and the elapsed time have fixed widths (the bar stays where it is, row after row and
second after second); the name and the note share what is left and cut their text with
an ellipsis (the whole text is in their tooltip) instead of wrapping; buttons take the
width of their label and never shrink. So a row fits 1280 px wide with JupyterLab's
file browser open (about 800 px for the output area), and narrower still.

A click that shows at once. A click on a panel button is handled by the kernel when it
is idle (an ipykernel rule), so while a cell runs nothing in the kernel can answer it.
Panel buttons are toggle buttons (``ActionButton``): the browser marks one pressed
(``mod-active``) the moment it is clicked, without the kernel, and these rules then
show what it does ("approving…") and take no second click. The kernel un-presses it
once the action is done.
"""

from __future__ import annotations

#: the label a pressed button shows until the kernel has done its action, per CSS class
BUSY_LABELS = {
    "nbq-approve": "approving…",
    "nbq-reject": "rejecting…",
    "nbq-cancel": "cancelling…",
    "nbq-retry": "retrying…",
    "nbq-details": "opening…",
    "nbq-expand": "…",
}

_RULES = """
.nbq-panel { max-width: 1200px; }
.nbq-panel .nbq-job, .nbq-panel .nbq-children, .nbq-panel .nbq-resource,
.nbq-panel .nbq-toolbar, .nbq-panel .nbq-pager, .nbq-panel .nbq-controls,
.nbq-panel .nbq-schedule { align-items: center; }
.nbq-panel .nbq-job, .nbq-panel .nbq-children { width: 100%; }
.nbq-panel .nbq-cell { min-width: 0; overflow: hidden; }
.nbq-panel .nbq-cell > .widget-html-content, .nbq-panel .nbq-cell > .jupyter-widget-html-content {
  min-width: 0; overflow: hidden; white-space: nowrap; text-overflow: ellipsis; }
.nbq-panel .nbq-col-name { flex: 3 1 120px; }
.nbq-panel .nbq-col-state { flex: 0 0 70px; width: 70px; }
.nbq-panel .nbq-col-note { flex: 4 1 80px; color: var(--jp-ui-font-color2, #555); }
.nbq-panel .nbq-col-bar { flex: 0 0 72px; width: 72px; }
.nbq-panel .nbq-col-elapsed { flex: 0 0 52px; width: 52px; text-align: right; }
.nbq-panel .nbq-col-summary { flex: 1 1 120px; }
.nbq-panel .nbq-col-resource { flex: 1 1 160px; }
.nbq-panel .nbq-action, .nbq-panel .nbq-switch { flex: 0 0 auto; width: auto;
  min-width: max-content; padding: 0 8px; }
.nbq-panel .nbq-details { min-width: 5em; }  /* "details" and "hide": one width */
.nbq-panel .nbq-action.mod-active { pointer-events: none; font-size: 0; }
.nbq-panel .nbq-action.mod-active::after {
  font-size: var(--jp-widgets-font-size, 13px); content: "…"; }
.nbq-panel .nbq-id { white-space: nowrap; color: var(--jp-ui-font-color2, #777);
  font-family: var(--jp-code-font-family, monospace); font-size: 85%; }
.nbq-panel .nbq-attempt { white-space: nowrap; border: 1px solid #bbb; border-radius: 3px;
  padding: 0 3px; margin-right: 4px; font-size: 85%; }
.nbq-panel .nbq-filter-state { flex: 0 0 130px; width: 130px; }
.nbq-panel .nbq-filter-name { flex: 0 1 200px; width: 200px; min-width: 80px; }
.nbq-panel .nbq-card-title { display: flex; gap: 8px; align-items: baseline;
  line-height: 1.4; padding: 2px 0; }
.nbq-panel .nbq-card-title b { min-width: 0; overflow-wrap: anywhere; }
.nbq-panel .nbq-review-card { max-width: 100%; }
.nbq-panel .nbq-payload { max-height: 480px; overflow: auto; line-height: 1.4; }
.nbq-panel .nbq-header { line-height: 1.6; }
.nbq-panel .nbq-comment { width: 100%; max-width: 520px; }
.nbq-panel .nbq-detail { border-left: 3px solid #90caf9; padding-left: 8px; margin: 2px 0 6px 0; }
.nbq-panel .nbq-detail .widget-html-content, .nbq-panel .nbq-detail .jupyter-widget-html-content {
  line-height: 1.4; }
.nbq-panel .nbq-detail table.nbq-facts td { padding: 0 8px 0 0; vertical-align: top; }
.nbq-panel .nbq-detail pre { max-height: 320px; overflow: auto; margin: 2px 0;
  white-space: pre-wrap; overflow-wrap: anywhere; font-size: 85%; }
.nbq-panel .nbq-detail summary { cursor: pointer; }
"""


def stylesheet() -> str:
    """The panel's ``<style>`` element.

    >>> "approving…" in stylesheet() and stylesheet().startswith("<style")
    True
    """
    busy = "".join(f'.nbq-panel .{cls}.mod-active::after {{ content: "{label}"; }}\n'
                   for cls, label in BUSY_LABELS.items())
    return f'<style class="nbq-style">{_RULES}{busy}</style>'
