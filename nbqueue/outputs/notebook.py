"""``NotebookReport``: a notebook with one section per ended job, rewritten atomically."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from . import report
from .base import ENDINGS, Ending, Output, write_atomically


class NotebookReport(Output):
    """A notebook with one section per ended job, results shown with their rich display.

    Parameters
    ----------
    path : str or Path
        The ``.ipynb`` file, made absolute against the current directory.
    title : str, optional
        The heading of the report (default: the queue's directory).
    on : list of str or None
        What it receives (``outputs.EVENTS``): job endings by default; None: every
        event (one short section each).

    Raises
    ------
    InvalidArgument
        ``on`` names no event of ``outputs.EVENTS``.

    Notes
    -----
    Each section is a Markdown cell (name, state, id, times, the reason, a review
    decision with who and when) and, for a result or a failure, a code cell whose
    output is the result's display (HTML, images, tables) or the error with its
    traceback. The file is rewritten whole and atomically (a temporary file, then
    ``os.replace``), so it can be opened while the run goes on.

    Examples
    --------
    ::

        q = nbqueue.Queue("runs/q", outputs=[nbqueue.NotebookReport("report.ipynb",
                                                                    title="Q3 runs")])
    """

    kind = "notebook"

    def __init__(self, path: str | os.PathLike[str], title: str | None = None,
                 on: Sequence[str] | str | None = ENDINGS) -> None:
        super().__init__(path, on)
        self.title = title
        self._nb: Any = None

    def spec(self) -> dict[str, Any]:
        return self._with_on({"path": str(self.path), "title": self.title})

    def open(self, queue: str) -> int:
        import nbformat

        # temporary files of a writer that died (we hold the output's lock: none is live)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        if self.path.exists():
            # our own file: read without validating it whole (it was validated as written)
            self._nb = nbformat.v4.reads(self.path.read_text(encoding="utf-8"))
            if self._nb.get("nbformat") != 4:
                raise ValueError(f"{self.path} is not a version 4 notebook; move it away")
        else:
            self._nb = report.new_notebook(self.title or f"nbqueue report: {queue}", queue)
        last = 0
        for cell in self._nb.cells:
            meta = cell.get("metadata", {}).get("nbqueue", {})
            if meta.get("queue") == queue and isinstance(meta.get("outbox"), int):
                last = max(last, meta["outbox"])
        return last

    def write(self, endings: list[Ending]) -> None:
        import nbformat

        cells = [cell for ending in endings for cell in report.section(ending)]
        nbformat.validate(nbformat.v4.new_notebook(cells=cells))  # the new part only: fast
        self._nb.cells.extend(cells)
        write_atomically(self.path, nbformat.v4.writes(self._nb).encode())

    def close(self) -> None:
        self._nb = None
