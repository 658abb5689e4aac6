"""``JsonLines``: one JSON object per ended job, appended to a file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from .base import ENDINGS, Ending, Output, _fsync_dir


class JsonLines(Output):
    """Append one JSON object per ended job to a file (JSON Lines).

    Parameters
    ----------
    path : str or Path
        The file, made absolute against the current directory. It is created if
        missing and only ever appended to.
    on : list of str or None
        What it receives (``outputs.EVENTS``): job endings by default; None: every
        event, whose records carry ``event`` and ``at`` (docs/outputs.md).

    Raises
    ------
    InvalidArgument
        ``on`` names no event of ``outputs.EVENTS``.

    Notes
    -----
    Each line holds ``queue``, ``outbox`` (the delivery sequence number), ``id``,
    ``name``, ``kind``, ``state``, ``attempt``, ``parent``, ``reason``, ``created``,
    ``started``, ``ended`` (Unix times), ``result`` (the value if JSON can hold it,
    else its repr, with ``"result_repr": true``) and ``error`` (``exc_type``,
    ``exc_value``, ``traceback``) for a failed job. Given to ``Queue(outputs=[...])``,
    it is recorded in the directory, and whichever process ends a job delivers it, once
    (docs/outputs.md).

    Examples
    --------
    ::

        q = nbqueue.Queue("runs/q", outputs=[nbqueue.JsonLines("results.jsonl")])
    """

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str],
                 on: Sequence[str] | str | None = ENDINGS) -> None:
        super().__init__(path, on)

    def open(self, queue: str) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb+") as f:
            _cut_torn_line(f)
            return _last_seq_in_tail(f, queue)

    def write(self, endings: list[Ending]) -> None:
        text = "".join(json.dumps(e.record(), ensure_ascii=False, default=repr) + "\n"
                       for e in endings)
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        if created:
            _fsync_dir(self.path.parent)


def _cut_torn_line(f: Any) -> None:
    """A crash in the middle of a write leaves a last line without its newline: that
    record was never counted as delivered, so it goes, and is written again whole."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    step = 4096
    pos = size
    while pos > 0:
        start = max(pos - step, 0)
        f.seek(start)
        chunk = f.read(pos - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            f.truncate(start + cut + 1)
            break
        pos = start
    else:
        f.truncate(0)
    f.flush()
    os.fsync(f.fileno())


def _last_seq_in_tail(f: Any, queue: str) -> int:
    """The outbox seq of the last record of ``queue`` in the file (0 if none)."""
    for line in _lines_backwards(f):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("queue") == queue \
                and isinstance(record.get("outbox"), int):
            return int(record["outbox"])
    return 0


def _lines_backwards(f: Any, chunk: int = 65536) -> Iterator[bytes]:
    pos = f.seek(0, os.SEEK_END)
    rest = b""
    while pos > 0:
        start = max(pos - chunk, 0)
        f.seek(start)
        data = f.read(pos - start) + rest
        pos = start
        lines = data.split(b"\n")
        rest = lines.pop(0)  # may continue in the previous chunk
        for line in reversed(lines):
            if line.strip():
                yield line
    if rest.strip():
        yield rest
