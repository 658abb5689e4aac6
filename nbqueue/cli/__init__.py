"""The command line: ``nbqueue worker | stop | status | jobs | show | logs | reviews | approve |
reject | cancel | retry | pause | resume | resources | schedules | export | du | gc |
check | salvage | serve | demo``.

Every command goes through the queue API. Exit codes: 0 success, 1 a job or command
failed (one line on stderr, no traceback), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .. import job as J
from .._version import __version__
from ..errors import JobFailed, NbqueueError
from .commands import (
    cmd_cancel,
    cmd_decide,
    cmd_demo,
    cmd_export,
    cmd_jobs,
    cmd_pause,
    cmd_resources,
    cmd_retry,
    cmd_reviews,
    cmd_schedules,
    cmd_status,
    cmd_stop,
    cmd_worker,
)
from .common import CommandFailed, UsageError
from .printable import printable_output

# re-exported: public names of the one-module cli
from .render import job_dict as job_dict
from .render import job_table as job_table
from .render import status_text as status_text
from .repair import cmd_check, cmd_salvage
from .serve import cmd_serve
from .show import cmd_logs, cmd_show
from .space import cmd_du, cmd_gc

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nbqueue`` command line; returns the exit code.

    What it prints is filtered through ``printable``: job names, reasons, errors and
    payloads come from other people's code. ``nbqueue logs`` into a file or a pipe
    passes the output through as the job wrote it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with printable_output(raw_stdout=argv[:1] == ["logs"] and not _isatty(sys.stdout)):
        return _run(argv)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no such method, or closed
        return False


def _run(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except UsageError as exc:
        print(f"nbqueue {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `nbqueue jobs | head`: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CommandFailed, NbqueueError, ValueError, OSError) as exc:
        print(f"nbqueue {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nbqueue {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if isinstance(exc, JobFailed) else text


JOB_HELP = ("the job: its name (the newest job of that name), its id, the start of its id "
            "(4 or more hex digits) or its key")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nbqueue", description="A persistent job queue in a directory: serve it, "
        "inspect it, decide its review gates. PATH defaults to $NBQUEUE_DIR, else ./.nbqueue.",
        epilog="exit codes: 0 success, 1 a job or command failed, 2 bad usage")
    parser.add_argument("--version", action="version", version=f"nbqueue {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, run: Callable[[argparse.Namespace], int | None], help: str,
                path: str = "optional") -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if path == "optional":
            p.add_argument("path", nargs="?", metavar="PATH", help="queue directory "
                           "(default: $NBQUEUE_DIR, else ./.nbqueue)")
        else:
            p.add_argument("path", metavar="PATH", help="queue directory")
        p.set_defaults(run=run)
        return p

    p = command("worker", cmd_worker, "Serve a queue headless until SIGINT/SIGTERM.")
    p.add_argument("-w", "--workers", type=_positive_int, metavar="N",
                   help="worker processes (or dask slots); default: the number of CPUs")
    p.add_argument("--dask", metavar="ADDRESS", help="run jobs on this dask scheduler "
                   "(e.g. tcp://10.0.0.5:8786) instead of local processes")
    p.add_argument("--detach", action="store_true", help="serve from a background process "
                   "of its own (the directory's service: one at most), logging to "
                   "PATH/service.log; returns once it serves. Stop it with: nbqueue stop PATH")
    p.add_argument("--idle-exit", type=_positive_float, metavar="SECONDS",
                   help="exit after SECONDS with nothing ready, running or due within a "
                   "minute")

    p = command("stop", cmd_stop, "Stop the queue's service gracefully (its running jobs "
                "go back to the queue) and wait until it is gone.")
    p.add_argument("--timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                   help="give up (exit 1) if it is still there after this long (default 60)")

    p = command("status", cmd_status, "Show the queue: counts, running jobs, reviews, "
                "resources, dispatchers.")
    p.add_argument("--json", action="store_true", help="print q.status() as one JSON object")
    p.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")

    p = command("jobs", cmd_jobs, "List the jobs (children under their parents).")
    p.add_argument("--state", choices=J.STATES, help="only jobs in this state")
    p.add_argument("--json", action="store_true", help="print a JSON list of jobs")

    p = command("reviews", cmd_reviews, "List the review gates waiting for a decision.")
    p.add_argument("--json", action="store_true", help="print a JSON list of gates")

    p = command("show", cmd_show, "Everything about one job: state, attempts, times, needs, "
                "resources, its call, error with traceback, output, result.", path="required")
    p.add_argument("job", metavar="JOB", help=JOB_HELP)
    p.add_argument("--json", action="store_true", help="print it as one JSON object")

    p = command("logs", cmd_logs, "Print a job's output (stdout and stderr of every attempt, "
                "each after a header line).", path="required")
    p.add_argument("job", metavar="JOB", help=JOB_HELP)
    p.add_argument("-f", "--follow", action="store_true", help="print new output as it "
                   "arrives until the job ends (exit 0 if it succeeded, else 1); Ctrl-C stops")
    p.add_argument("--attempt", type=_positive_int, metavar="N", help="only attempt N's output")

    for name, verb in (("approve", "Approve"), ("reject", "Reject")):
        p = command(name, cmd_decide, f"{verb} a review gate.", path="required")
        p.add_argument("id", metavar="JOB", help=JOB_HELP)
        p.add_argument("-m", "--comment", default="", help="a comment recorded with the decision")
        if name == "approve":
            p.add_argument("--set", dest="values", metavar="NAME=VALUE", action="append",
                           type=_assignment, default=[],
                           help="an answer to one of the gate's fields (repeat for each; "
                           "nbqueue reviews lists them); those left out take their defaults")
    command("cancel", cmd_cancel, "Cancel a job (a running one is stopped).",
            path="required").add_argument("id", metavar="JOB", help=JOB_HELP)
    command("retry", cmd_retry, "Run a failed or cancelled job again.",
            path="required").add_argument("id", metavar="JOB", help=JOB_HELP)

    for name, help_text in (
            ("pause", "Pause the queue (or the jobs of NAME): nothing new starts, running "
                      "jobs finish, the others wait until resume."),
            ("resume", "Resume the queue (or the jobs of NAME) after a pause.")):
        command(name, cmd_pause, help_text, path="required").add_argument(
            "name", nargs="?", metavar="NAME", help="only the jobs of this name (each "
            "pause is lifted on its own)")

    p = command("resources", cmd_resources, "List resources, or change one with --set.",
                path="required")
    p.add_argument("--set", metavar="NAME", dest="name", help="the resource to change")
    p.add_argument("--capacity", type=_positive_int, metavar="N", help="units it has")
    p.add_argument("--available", choices=("yes", "no"), help="whether jobs may take it")
    p.add_argument("--rate", metavar="N/PERIOD", help="at most N jobs holding it start per "
                   "PERIOD (10/min, 5/s, 100/h, 3/10s), across every process; none removes "
                   "the limit")
    p.add_argument("--json", action="store_true", help="print the resources as JSON")

    p = command("schedules", cmd_schedules, "List the schedules with their next firing, or "
                "pause, resume or delete one.", path="required")
    change = p.add_mutually_exclusive_group()
    change.add_argument("--pause", metavar="NAME", help="make no more firings of it until "
                        "--resume")
    change.add_argument("--resume", metavar="NAME", help="fire it again from now on")
    change.add_argument("--delete", metavar="NAME", help="delete it (the jobs it made stay)")
    p.add_argument("--json", action="store_true", help="print the schedules as JSON")

    p = command("export", cmd_export, "Write the ended jobs to a file.", path="required")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--jsonl", metavar="FILE", help="one JSON record per job")
    target.add_argument("--notebook", metavar="FILE", help="a report notebook (.ipynb)")

    p = command("du", cmd_du, "Show where the queue directory's space goes: by kind (rows, "
                "results, arguments, logs, functions, files, wal; they add up to the total) "
                "and by state. Reads only.", path="required")
    p.add_argument("--json", action="store_true", help="print it as one JSON object")

    p = command("gc", cmd_gc, "Give space back: forget the ended jobs past the directory's "
                "retention (Queue(path, keep=...)) or --older-than, except those that jobs not "
                "ended yet need; delete what nothing refers to any more; empty the write-ahead "
                "log; VACUUM when worth it. Prints the space before and after.",
                path="required")
    p.add_argument("--older-than", type=_age, metavar="AGE", help="also forget every ended "
                   "job that ended more than AGE ago (30d, 12h, 90m, or seconds; 0: all)")
    p.add_argument("--dry-run", action="store_true", help="change nothing: say what it would "
                   "do")
    p.add_argument("--json", action="store_true", help="print what it did as one JSON object")

    p = command("check", cmd_check, "Check a queue directory for damage and broken "
                "invariants, reading only (one line per problem; exit 0 healthy, 1 problems).",
                path="required")
    p.add_argument("--quick", action="store_true", help="SQLite's quick_check instead of "
                   "its full integrity_check (faster on a large queue)")

    p = command("salvage", cmd_salvage, "Copy every job that can still be read from a "
                "damaged queue into a new queue directory (the damaged one is only read).",
                path="required")
    p.add_argument("new_path", metavar="NEW_DIR", help="the new queue directory (must be new "
                   "or empty)")

    p = sub.add_parser("serve", help="Serve the review page (pending reviews with Approve "
                       "and Reject) on 127.0.0.1, behind a token, without Jupyter.",
                       description="Serve the review page of queues on 127.0.0.1 until Ctrl-C: "
                       "prints its address with a token (http://127.0.0.1:PORT/?token=TOKEN); "
                       "every request without the token is refused.")
    p.add_argument("paths", nargs="*", metavar="PATH", help="a queue directory, or a folder: "
                   "the queues opened under it (default: $NBQUEUE_DIR, else ./.nbqueue)")
    p.add_argument("--port", type=_port, default=0, metavar="N",
                   help="the port (default: any free one)")
    p.set_defaults(run=cmd_serve)

    p = command("demo", cmd_demo, "Run a small job graph end to end and show what happened.")
    p.add_argument("-w", "--workers", type=_positive_int, default=2, metavar="N",
                   help="worker processes (default 2)")
    p.add_argument("--fresh", action="store_true", help="run every job anew (key=None) "
                   "instead of attaching to the jobs of an earlier demo")
    return parser


def _assignment(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. threshold=0.7)")
    return name.strip(), value


def _age(text: str) -> float:
    from ..times import parse_duration

    try:
        return parse_duration(text, allow_zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value
