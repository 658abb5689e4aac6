"""What the command line prints is text, never terminal commands.

Job names, reasons, errors, review payloads and logs come from job code and from
whoever submitted the job: an escape sequence among them could retitle the terminal,
hide lines, or forge a prompt. ``printable`` removes ANSI escape sequences and control
characters (line breaks and tabs stay); ``printable_output`` filters ``sys.stdout`` and
``sys.stderr`` so for the length of one command. JSON output needs nothing of this:
``json.dumps`` escapes control characters itself.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erasing
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks, clipboard
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings
    r"|\x1b[ -/]*[0-~]?"  # the other escapes (ESC c resets the terminal), or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"  # an 8-bit CSI
)
# C0 controls but tab and line feed, DEL, C1 controls; bidirectional overrides and isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    r"""``text`` without escape sequences or control characters; a carriage return
    becomes a line break (it could overwrite what was printed before it on the line).

    >>> printable("\x1b[31mred\x1b[0m \x1b]0;title\x07ok\x07\x08!")
    'red ok!'
    >>> printable("10%\r50%\r\n")
    '10%\n50%\n'
    """
    text = _ESCAPE.sub("", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


class PrintableStream:
    """A text stream that writes ``printable`` text to ``stream``; ``unfiltered`` is
    ``stream`` itself, for the command line's own terminal control (clearing the
    screen of ``status --watch``)."""

    def __init__(self, stream: TextIO) -> None:
        self.unfiltered = stream

    def write(self, text: str) -> int:
        self.unfiltered.write(printable(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, buffer...
        return getattr(self.unfiltered, name)


@contextmanager
def printable_output(*, raw_stdout: bool = False) -> Iterator[None]:
    """Filter ``sys.stdout`` (unless ``raw_stdout``) and ``sys.stderr`` through
    ``printable`` for the length of the block."""
    out, err = sys.stdout, sys.stderr
    if not raw_stdout:
        sys.stdout = PrintableStream(out)  # type: ignore[assignment]
    sys.stderr = PrintableStream(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = out, err
