"""Export: the whole history of a queue written at once, as the outputs write it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..store import outbox
from . import report
from .base import _store, write_atomically
from .delivery import load


def export_jsonl(queue: Any, path: str | os.PathLike[str]) -> int:
    """Write every ended job of ``queue`` to a JSON Lines file (replacing it atomically),
    one record per job as ``JsonLines`` writes them (``outbox`` is null); returns how many."""
    store = _store(queue)
    name = str(store.path)
    lines = []
    for row in outbox.ended_jobs(store):
        lines.append(json.dumps(load(store, row, name).record(), ensure_ascii=False,
                                default=repr) + "\n")
    write_atomically(Path(path).expanduser().absolute(), "".join(lines).encode())
    return len(lines)


def export_notebook(queue: Any, path: str | os.PathLike[str], title: str | None = None) -> int:
    """Write a report notebook of every ended job of ``queue`` (replacing the file
    atomically), as ``NotebookReport`` writes them; returns how many jobs."""
    import nbformat

    store = _store(queue)
    name = str(store.path)
    nb = report.new_notebook(title or f"nbqueue report: {name}", name)
    count = 0
    for row in outbox.ended_jobs(store):
        nb.cells.extend(report.section(load(store, row, name)))
        count += 1
    nbformat.validate(nb)
    write_atomically(Path(path).expanduser().absolute(), nbformat.v4.writes(nb).encode())
    return count
