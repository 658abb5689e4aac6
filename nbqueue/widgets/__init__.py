"""ipywidgets front end: the queue panel, its review cards, and a cell job's status line.

Every widget reads the store and nothing else (the directory is the truth). A
``Refresher`` daemon thread polls the store's change counter about twice a second
and re-renders only when it moved (or to tick the elapsed time of running jobs);
from that thread widgets are changed by setting traits only, never ``with output:``.
Buttons call the public queue API, then re-read the store. Widgets are made once
(pools of rows and cards) and then only updated.

- ``panel``: ``QueuePanel``, the whole queue;
- ``tree``: which job lines the panel shows (top-level jobs paged, children summarised
  under their parent), read from the store without widgets;
- ``rows``: a job row, a children summary row, a resource row;
- ``reviews``: a review card and a gate's payload as HTML;
- ``status_line``: ``CellStatus``, one cell job's live status;
- ``refresher``: ``Refresher``, the polling thread.
"""

from __future__ import annotations

from .panel import QueuePanel
from .refresher import Refresher
from .reviews import payload_html
from .status_line import CellStatus
from .tree import page_records

__all__ = ["QueuePanel", "CellStatus", "Refresher", "payload_html", "page_records"]
