"""The output queue: every job that ends is delivered to each output exactly once.

``Queue(..., outputs=[JsonLines("results.jsonl"), NotebookReport("report.ipynb")])``
records the outputs in the queue directory, so that whichever process completes a
job (a kernel, a headless worker) delivers it. The store writes an outbox row in the
transaction that ends a job; each output has a cursor. Delivery, about once a second
in a background thread of each dispatcher, takes an output's lock (``flock`` on a
file in the queue directory, released by the OS if the process dies), reads from the
output file which outbox rows it already holds, appends the others, makes them
durable (fsync, or an atomic replace), and only then advances the cursor. A crash at
any point leaves the file holding a prefix of the endings, each once; the next
delivery completes it without repeating one.

Each delivered record carries ``queue`` (the queue directory) and ``outbox`` (its
outbox seq): that is how a file tells what it already holds. One file per output.

Besides endings, the outbox records events (``review``, ``reminder``, ``drained``) while
an output receives them; each output chooses with ``on=`` (``EVENTS``). Notifiers
(``Webhook``, ``Email``) send one message per row, in a thread apart from the files.
"""

from __future__ import annotations

from .base import EVENTS, Ending, Output, jsonable
from .delivery import Delivery, check_outputs, deliver, register, registered, unregister
from .export import export_jsonl, export_notebook
from .jsonlines import JsonLines
from .notebook import NotebookReport
from .notify import NOTIFY_ON, Email, Notifier, Webhook

__all__ = ["Output", "Ending", "JsonLines", "NotebookReport", "Webhook", "Email", "Notifier",
           "EVENTS", "NOTIFY_ON", "deliver", "register", "unregister", "registered",
           "check_outputs", "export_jsonl", "export_notebook", "Delivery", "jsonable"]
