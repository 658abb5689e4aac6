"""The commands that read one job: ``nbqueue logs`` (with ``--follow``) and ``nbqueue show``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from .. import job as J
from ..details import (
    JobDetails,
    cut,
    facts,
    payload_text,
    result_text,
    split_attempts,
    tail,
)
from ..handle import Job
from ..queue import Queue
from .common import CommandFailed, UsageError, _job, _open

FOLLOW_POLL = 0.25  # seconds between reads of the store's change counter
LOG_TAIL = 20  # lines of the last attempt's output that ``show`` prints

# -- logs -------------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    if args.follow and args.attempt is not None:
        raise UsageError("--attempt and --follow do not go together: --follow prints the "
                         "output as it comes, whichever attempt writes it")
    try:
        with _open(args.path) as q:
            h = _job(q, args.job)
            if args.follow:
                return _follow(q, h, sys.stdout)
            return _print_log(q, h, args.attempt)
    except KeyboardInterrupt:  # Ctrl-C while following: stop, quietly
        return 130


def _print_log(q: Queue, h: Job, attempt: int | None) -> int:
    record = h.record()
    text = h.logs
    if attempt is not None:
        parts = {a.number: a for a in split_attempts(text, record.attempt)}
        if attempt not in parts:
            raise CommandFailed(f"job {h.id} ({record.name}) has no attempt {attempt} in its "
                                f"log: it has {_listed(sorted(parts)) or 'none'}")
        text = parts[attempt].log
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        print(f"nbqueue logs: job {h.id} ({record.name}, {record.state}) has printed nothing"
              + (f" in attempt {attempt}" if attempt is not None else ""), file=sys.stderr)
    return 0


def _listed(numbers: list[int]) -> str:
    return ", ".join(f"attempt {n}" for n in numbers)


def _follow(q: Queue, h: Job, out: TextIO) -> int:
    """Print the job's output as it comes until it ends: 0 if it succeeded, else 1."""
    printed, seen = "", None
    while True:
        changes = q.changes()
        if changes != seen:  # nothing is read again until something was committed
            seen = changes
            record = h.record()  # before the log: once ended, the log read after is final
            text = h.logs
            new = new_output(printed, text)
            if new:
                out.write(new)
                out.flush()
            printed = text
            if record.state in J.ENDED:
                if printed and not printed.endswith("\n"):
                    out.write("\n")
                    out.flush()
                return _ended(record)
        time.sleep(FOLLOW_POLL)


def _ended(record: J.JobRecord) -> int:
    label = f"job {record.id} ({record.name})"
    if record.state == J.DONE:
        print(f"nbqueue logs: {label} is done", file=sys.stderr)
        return 0
    what = (f"{record.error.exc_type}: {record.error.exc_value}" if record.error
            else record.reason)
    print(f"nbqueue logs: {label} ended {record.state}" + (f": {what}" if what else ""),
          file=sys.stderr)
    return 1


def new_output(printed: str, text: str, anchor: int = 400) -> str:
    """What of ``text`` (a log as read now) follows what was ``printed`` already. A log
    only grows, except that its start is dropped past the cap (``job.cap_log``): then
    the end of what was printed is looked for in it.

    >>> new_output("ab", "abcd")
    'cd'
    >>> new_output("[... earlier output dropped ...]\\nabcdef", "[... earlier output dropped ...]\\ncdef12",
    ...            anchor=4)
    '12'
    >>> new_output("old", "unrelated")
    '[... output dropped ...]\\nunrelated'
    """
    if text.startswith(printed):
        return text[len(printed):]
    for size in (anchor, min(anchor, 40)):
        end = printed[-size:]
        at = text.rfind(end) if end else -1
        if at >= 0:
            return text[at + len(end):]
    return "[... output dropped ...]\n" + text


# -- show -------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        h = _job(q, args.job)
        details = h.details()
        record = details.record
        result = result_text(h) if record.state == J.DONE else None
        payload = payload_text(h) if record.kind == J.GATE else None
    if args.json:
        print(json.dumps({**details.to_dict(), "result": result, "payload": payload}))
    else:
        print(show_text(details, result=result, payload=payload, path=str(q.path)))
    return 0


def show_text(details: JobDetails, *, result: str | None = None, payload: str | None = None,
              path: str = "PATH") -> str:
    """``nbqueue show``: a job, one fact per line, then its error, output and result."""
    r = details.record
    rows = facts(details)
    if details.children:
        rows = [(k, v + f"  (nbqueue jobs {path})" if k == "children" else v) for k, v in rows]
    width = max(len(k) for k, _ in rows)
    lines = [f"{r.name}  (job {r.id})"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    if payload is not None:
        lines += ["", "payload:"] + _indented(payload)
    if r.error is not None:
        what = "error" if r.state == J.FAILED else "error of an earlier attempt"
        lines += ["", f"{what}: {r.error.exc_type}: {r.error.exc_value}"]
        if r.error.traceback:
            lines += _indented(r.error.traceback.rstrip())
    lines += _log_lines(details, path)
    if result is not None:
        lines += ["", "result:"] + _indented(result)
    return "\n".join(lines)


def _log_lines(details: JobDetails, path: str) -> list[str]:
    if not details.attempts or not any(a.log for a in details.attempts):
        return ["", "output: none"] if details.record.kind == J.CALL else []
    last = details.attempts[-1]
    shown, left = tail(last.log, LOG_TAIL)
    title = f"output of attempt {last.number}" if len(details.attempts) > 1 else "output"
    where = f"nbqueue logs {path} {details.record.id}"
    if left or len(details.attempts) > 1:
        title += f" (its last {LOG_TAIL} lines; all of it: {where})" if left else \
            f" (every attempt's: {where})"
    return ["", title + ":"] + (_indented(cut(shown, lines=LOG_TAIL, width=400))
                                if shown else ["    (nothing)"])


def _indented(text: str) -> list[str]:
    return ["    " + line for line in text.splitlines()]
