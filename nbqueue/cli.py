"""The command line: ``nbqueue worker | status | jobs | reviews | approve | reject | cancel |
retry | resources | export | demo``.

Every command goes through the queue API. Exit codes: 0 success, 1 a job or command
failed (one line on stderr, no traceback), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from . import job as J
from .display import elapsed_text, payload_bundle, progress_text
from .errors import JobFailed, NbqueueError, NoSuchJob
from .queue import Job, Queue, default_path

log = logging.getLogger(__name__)


class CommandFailed(Exception):
    """A command ran but did not succeed: its message is printed, the exit code is 1."""


class UsageError(CommandFailed):
    """Options that do not go together (what argparse cannot check): exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nbqueue`` command line; returns the exit code."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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

    p = command("status", cmd_status, "Show the queue: counts, running jobs, reviews, "
                "resources, dispatchers.")
    p.add_argument("--json", action="store_true", help="print q.status() as one JSON object")
    p.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")

    p = command("jobs", cmd_jobs, "List the jobs (children under their parents).")
    p.add_argument("--state", choices=J.STATES, help="only jobs in this state")
    p.add_argument("--json", action="store_true", help="print a JSON list of jobs")

    p = command("reviews", cmd_reviews, "List the review gates waiting for a decision.")
    p.add_argument("--json", action="store_true", help="print a JSON list of gates")

    for name, verb in (("approve", "Approve"), ("reject", "Reject")):
        p = command(name, cmd_decide, f"{verb} a review gate.", path="required")
        p.add_argument("id", metavar="ID", help="the gate's id or key")
        p.add_argument("-m", "--comment", default="", help="a comment recorded with the decision")
    command("cancel", cmd_cancel, "Cancel a job (a running one is stopped).",
            path="required").add_argument("id", metavar="ID", help="the job's id or key")
    command("retry", cmd_retry, "Run a failed or cancelled job again.",
            path="required").add_argument("id", metavar="ID", help="the job's id or key")

    p = command("resources", cmd_resources, "List resources, or change one with --set.",
                path="required")
    p.add_argument("--set", metavar="NAME", dest="name", help="the resource to change")
    p.add_argument("--capacity", type=_positive_int, metavar="N", help="units it has")
    p.add_argument("--available", choices=("yes", "no"), help="whether jobs may take it")
    p.add_argument("--json", action="store_true", help="print the resources as JSON")

    p = command("export", cmd_export, "Write the ended jobs to a file.", path="required")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--jsonl", metavar="FILE", help="one JSON record per job")
    target.add_argument("--notebook", metavar="FILE", help="a report notebook (.ipynb)")

    p = command("demo", cmd_demo, "Run a small job graph end to end and show what happened.")
    p.add_argument("-w", "--workers", type=_positive_int, default=2, metavar="N",
                   help="worker processes (default 2)")
    p.add_argument("--fresh", action="store_true", help="run every job anew (key=None) "
                   "instead of attaching to the jobs of an earlier demo")
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


# -- opening a queue ------------------------------------------------------------------------


def _path(arg: str | None) -> Path:
    return Path(arg).expanduser().absolute() if arg else default_path()


def _open(arg: str | None) -> Queue:
    """An existing queue, opened without a dispatcher; never creates one."""
    path = _path(arg)
    if not path.exists():
        raise CommandFailed(f"no queue at {path}: the directory does not exist (give the queue "
                            "directory as PATH, or set $NBQUEUE_DIR)")
    if path.is_dir() and not any(path.iterdir()):
        raise CommandFailed(f"no queue at {path}: the directory is empty")
    return Queue(path, start=False)


def _job(q: Queue, id_or_key: str) -> Job:
    try:
        return q.job(id_or_key)
    except NoSuchJob:
        raise CommandFailed(f"no job with id or key {id_or_key!r} in queue {q.path}; list them "
                            f"with: nbqueue jobs {q.path}") from None


# -- worker ---------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    executor = None
    if args.dask:
        try:
            from distributed import Client
        except ImportError:
            raise CommandFailed("--dask needs dask.distributed: pip install 'nbqueue[dask]'") from None
        executor = Client(args.dask)
    logging.getLogger("nbqueue").setLevel(logging.INFO)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():  # a second Ctrl-C: leave now; whoever opens the queue next recovers
            os._exit(1)
        stop.set()

    try:
        q = Queue(_path(args.path), workers=args.workers, executor=executor, start=False)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        q.start()
        kind = f"dask slots on {args.dask}" if executor is not None else "local worker processes"
        print(f"nbqueue worker: serving {q.path} with {q.workers} {kind} (pid {os.getpid()}); "
              "stop with Ctrl-C or SIGTERM", flush=True)
        try:
            while not stop.wait(0.5):
                dispatcher = q.dispatcher
                if dispatcher is not None and not dispatcher.alive:
                    error = (dispatcher.error or "unknown error").strip().splitlines()[-1]
                    raise CommandFailed(f"the dispatcher died: {error}")
        finally:
            print("nbqueue worker: stopping; running jobs go back to the queue",
                  file=sys.stderr, flush=True)
            q.close()
    finally:
        if executor is not None:
            executor.close()
    print("nbqueue worker: stopped", flush=True)
    return 0


# -- status -----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    q = _open(args.path)
    try:
        while True:
            status = q.status()
            if args.json:
                print(json.dumps(status), flush=True)
            else:
                if args.watch and sys.stdout.isatty():
                    print("\x1b[H\x1b[2J", end="")
                print(status_text(status), flush=True)
            if not args.watch:
                return 0
            time.sleep(1.0)
            if not args.json and not sys.stdout.isatty():
                print()
    except KeyboardInterrupt:
        return 0
    finally:
        q.close()


def status_text(status: dict[str, Any]) -> str:
    """A readable summary of ``Queue.status()``."""
    path = status["path"]
    lines = [f"queue {path} (format {status['format']})"]
    counts = {s: n for s, n in status["counts"].items() if n}
    lines.append("jobs: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"))
    dispatchers = status["dispatchers"]
    for d in dispatchers:
        if d.get("error"):
            lines += ["", f"!! DISPATCHER DIED: pid {d['pid']} on {d['host']} "
                          f"(started {_clock(d['started'])}):"]
            lines += ["!!   " + line for line in d["error"].rstrip().splitlines()[-15:]]
    serving = [d for d in dispatchers if d["alive"] and not d.get("error")]
    lines.append("")
    if serving:
        lines.append("dispatchers:")
        for d in serving:
            lines.append(f"  pid {d['pid']} on {d['host']}: {d['workers']} {d['executor']} "
                         f"workers, since {_clock(d['started'])}, heartbeat "
                         f"{_ago(d['heartbeat'])}")
    elif any(status["counts"].get(s) for s in (J.READY, J.WAITING, J.RUNNING)):
        lines.append(f"dispatchers: none; nothing runs these jobs until one starts: "
                     f"nbqueue worker {path} (or open the queue in a notebook)")
    else:
        lines.append("dispatchers: none")
    if status["running"]:
        lines += ["", "running:"]
        rows = [(j["id"], j["name"], f"attempt {j['attempt']}", _since(j["started"]),
                 progress_text(j["progress"]), j["reason"]) for j in status["running"]]
        lines += _table(None, rows, indent="  ")
    if status["reviews"]:
        lines += ["", "waiting for review:"]
        lines += _table(None, [(j["id"], j["name"], f"nbqueue approve {path} {j['id']}")
                               for j in status["reviews"]], indent="  ")
    if status["resources"]:
        lines += ["", "resources:"]
        lines += _table(None, _resource_rows(status["resources"]), indent="  ")
    return "\n".join(lines)


def _resource_rows(resources: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for name, r in resources.items():
        holders = ", ".join(f"{h['job']}" + (f" x{h['units']}" if h["units"] != 1 else "")
                            + f" since {_clock(h['since'])}" for h in r["holders"])
        rows.append((name, f"capacity {r['capacity']}",
                     "available" if r["available"] else "UNAVAILABLE",
                     f"held by {holders}" if holders else "free",
                     f"{r.get('waiting', 0)} waiting" if r.get("waiting") else ""))
    return rows


# -- jobs and reviews -------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    q = _open(args.path)
    try:
        records = [h.record() for h in q.jobs(state=args.state)]
    finally:
        q.close()
    if args.json:
        print(json.dumps([job_dict(r) for r in records]))
    elif records:
        print("\n".join(job_table(records)))
    else:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
    return 0


def job_dict(r: J.JobRecord) -> dict[str, Any]:
    """A job as JSON: what ``nbqueue jobs --json`` prints for each job."""
    return {"id": r.id, "name": r.name, "state": r.state, "kind": r.kind, "reason": r.reason,
            "attempt": r.attempt, "parent": r.parent, "key": r.key, "created": r.created,
            "started": r.started, "ended": r.ended, "elapsed": r.elapsed,
            "progress": r.progress, "error": r.error.to_dict() if r.error else None}


def job_table(records: list[J.JobRecord],
              extra: tuple[str, list[str]] | None = None) -> list[str]:
    """Lines of a job table, children indented under their parents (in this list);
    ``extra`` is one more column (a title and a cell per record, in ``records`` order)."""
    cells = dict(zip([r.id for r in records], extra[1], strict=True)) if extra else {}
    rows = [(("  " * depth) + r.name, r.id, r.state, str(r.attempt or ""), elapsed_text(r),
             *([cells[r.id]] if extra else []), " ".join(r.reason.split()))
            for r, depth in _tree(records)]
    headers = ("NAME", "ID", "STATE", "ATTEMPT", "ELAPSED", *([extra[0]] if extra else []),
               "REASON")
    return _table(headers, rows)


def _tree(records: list[J.JobRecord]) -> list[tuple[J.JobRecord, int]]:
    ids = {r.id for r in records}
    children: dict[str, list[J.JobRecord]] = {}
    roots = []
    for r in records:
        if r.parent in ids:
            children.setdefault(r.parent, []).append(r)  # type: ignore[arg-type]
        else:
            roots.append(r)
    out: list[tuple[J.JobRecord, int]] = []
    stack = [(r, 0) for r in reversed(roots)]
    while stack:
        record, depth = stack.pop()
        out.append((record, depth))
        stack += [(c, depth + 1) for c in reversed(children.get(record.id, []))]
    return out


def cmd_reviews(args: argparse.Namespace) -> int:
    q = _open(args.path)
    try:
        gates = [(h.record(), _payload_text(q, h)) for h in q.reviews()]
    finally:
        q.close()
    if args.json:
        print(json.dumps([{"id": r.id, "name": r.name, "reason": r.reason,
                           "created": r.created, "payload": text} for r, text in gates]))
        return 0
    if not gates:
        print("no review gates waiting")
    for r, text in gates:
        print(f"{r.id}  {r.name}  (created {_clock(r.created)})")
        if text:
            shown = text.splitlines()
            print("\n".join("    " + line for line in shown[:20]))
            if len(shown) > 20:
                print(f"    ... {len(shown) - 20} more lines")
        print(f"    nbqueue approve {q.path} {r.id} -m '...'   |   "
              f"nbqueue reject {q.path} {r.id} -m '...'\n")
    return 0


def _payload_text(q: Queue, h: Job) -> str | None:
    return payload_bundle(q.store.payload(h.id)).get("text/plain")


# -- actions ----------------------------------------------------------------------------------


def cmd_decide(args: argparse.Namespace) -> int:
    q = _open(args.path)
    try:
        h = _job(q, args.id)
        if args.command == "approve":
            q.approve(h.id, comment=args.comment)
        else:
            q.reject(h.id, comment=args.comment)
        record = h.record()
    finally:
        q.close()
    verb = "approved" if args.command == "approve" else "rejected"
    print(f"{verb} gate {record.id} ({record.name}); it is now {record.state}"
          + (f"; comment: {args.comment}" if args.comment else ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    q = _open(args.path)
    try:
        h = _job(q, args.id)
        before = h.state
        if before in J.ENDED:
            raise CommandFailed(f"job {h.id} ({h.name}) has already ended ({before}); "
                                "nothing to cancel")
        h.cancel()
        record = h.record()
    finally:
        q.close()
    if record.state == J.RUNNING:
        print(f"cancelling job {record.id} ({record.name}): its dispatcher stops it")
    else:
        print(f"{record.state}: job {record.id} ({record.name})")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    q = _open(args.path)
    try:
        h = _job(q, args.id).retry()
        record = h.record()
    finally:
        q.close()
    print(f"{record.state}: job {record.id} ({record.name}) will run again")
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    if args.name is None and (args.capacity is not None or args.available is not None):
        raise UsageError("--capacity and --available need --set NAME")
    q = _open(args.path)
    try:
        if args.name is not None:
            available = None if args.available is None else args.available == "yes"
            q.set_resource(args.name, capacity=args.capacity, available=available)
        resources = q.resources()
    finally:
        q.close()
    if args.json:
        print(json.dumps(resources))
    elif resources:
        print("\n".join(_table(None, _resource_rows(resources))))
    else:
        print("no resources declared or held")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    name, target = ("export_jsonl", args.jsonl) if args.jsonl else ("export_notebook",
                                                                      args.notebook)
    try:
        outputs = importlib.import_module("nbqueue.outputs")
    except ModuleNotFoundError as exc:
        if exc.name != "nbqueue.outputs":
            raise
        outputs = None
    export = getattr(outputs, name, None)
    if export is None:
        raise CommandFailed(f"export is not available in this nbqueue (no nbqueue.outputs.{name})")
    q = _open(args.path)
    try:
        result = export(q, target)
    finally:
        q.close()
    print(f"exported {q.path} to {target}" + (f" ({result} jobs)" if isinstance(result, int)
                                              else ""))
    return 0


# -- demo ---------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    path = _path(args.path)
    t0 = time.time()
    print(f"nbqueue demo: queue directory {path} ({args.workers} workers)", flush=True)
    with Queue(path, workers=args.workers) as q:
        jobs = demo.submit_demo(q, fresh=args.fresh)
        roots = jobs.roots()
        old = sum(h.record().created < t0 for h in roots)
        if old:
            print(f"{old} of {len(roots)} jobs already existed from an earlier demo: the same "
                  "calls have the same automatic keys (key='auto'), so submitting them again "
                  "attached to those jobs instead of running them twice.\n"
                  "(`nbqueue demo --fresh` runs everything anew.)", flush=True)
        else:
            print(f"submitted {len(roots)} jobs: {demo.TEXTS} x count_words (q.map), "
                  "merge_counts (needs them), a review gate, publish (after the gate; spawns a "
                  "child), flaky_download (fails once; retries=2), sum_of_squares (a generator "
                  f"fanning out {demo.SQUARES} calls)", flush=True)
        jobs.merged.wait(timeout=120)
        if jobs.gate.state == J.REVIEW:
            print(f"gate {jobs.gate.id} 'Publish the word counts?' waits for a person; approving "
                  f"it here (elsewhere: the panel's Approve button, or nbqueue approve {path} "
                  f"{jobs.gate.id})", flush=True)
            q.approve(jobs.gate.id, comment="approved by nbqueue demo")
        records = demo.wait_all(roots, timeout=120)
    print()
    print("\n".join(job_table([r for r, _ in records], extra=("RESULT", _result_cell(records)))))
    ok = all(r.state == J.DONE for r, _ in records)
    print("\nwhat those jobs did (in an earlier demo):" if old else
          f"\nwhat happened ({time.time() - t0:.1f}s):")
    print("\n".join("  " + line for line in demo.story(jobs)))
    print(f"\nall of it is stored in {path}; look again with:\n"
          f"  nbqueue status {path}\n  nbqueue jobs {path}\n"
          "run `nbqueue demo` again: it attaches to these finished jobs (same keys) and runs "
          "nothing; `nbqueue demo --fresh` runs everything anew.")
    if not ok:
        raise CommandFailed("some demo jobs did not succeed (see the table above)")
    return 0


def _result_cell(records: list[tuple[J.JobRecord, Job]]) -> list[str]:
    from .demo import result

    cells = []
    for record, h in records:
        text = repr(result(h)) if record.state == J.DONE else ""
        cells.append(text if len(text) <= 40 else text[:37] + "...")
    return cells


# -- formatting ---------------------------------------------------------------------------------


def _table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]],
           indent: str = "") -> list[str]:
    """Columns padded to their widest cell; the last column is left ragged."""
    body = [list(map(str, row)) for row in rows]
    if headers is not None:
        body.insert(0, list(headers))
    if not body:
        return []
    widths = [max(len(row[i]) for row in body) for i in range(len(body[0]))]
    lines = []
    for row in body:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=False))
        lines.append((indent + line + ("  " + row[-1] if row[-1] else "")).rstrip())
    return lines


def _clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    t = time.localtime(ts)
    today = time.localtime()
    fmt = "%H:%M:%S" if t[:3] == today[:3] else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, t)


def _since(ts: float | None) -> str:
    if ts is None:
        return ""
    return elapsed_text(J.JobRecord(id="", name="", state=J.RUNNING, started=ts))


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    return f"{max(time.time() - ts, 0):.0f}s ago"


if __name__ == "__main__":  # pragma: no cover - python -m nbqueue.cli
    sys.exit(main())
