"""ipywidgets front end: the queue panel and its review cards.

Every widget reads the store and nothing else (the directory is the truth). A
``Refresher`` daemon thread polls the store's change counter about twice a second
and re-renders only when it moved (or to tick the elapsed time of running jobs);
from that thread widgets are changed by setting traits only, never ``with output:``.
Buttons call the public queue API, then re-read the store. Widgets are made once
(pools of rows and cards) and then only updated.

- ``panel``: ``QueuePanel``, the whole queue;
- ``tree``: which job lines the panel shows (top-level jobs paged and filtered, earlier
  runs folded, children summarised under their parent), read from the store without
  widgets;
- ``rows``: a job row, a summary row (a parent's children, a job's earlier runs), a
  resource row;
- ``detail``: the detail view of one job (facts, traceback, each attempt's output, result);
- ``style``: the panel's stylesheet (columns that fit a laptop's width, busy labels);
- ``reviews``: a review card and a gate's payload as HTML;
- ``refresher``: ``Refresher``, the polling thread (also keeps ``%%enqueue`` cells'
  outputs current: ``nbqueue.notebook.cellstatus``, which are no widgets).
"""

from __future__ import annotations

from .panel import QueuePanel
from .refresher import Refresher
from .reviews import payload_html
from .tree import page_records

__all__ = ["QueuePanel", "Refresher", "payload_html", "page_records"]
