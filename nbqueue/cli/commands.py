"""The commands: each takes the parsed arguments, goes through the queue API, prints
its result and returns the exit code."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import time
from typing import Any

from .. import job as J
from ..daemon import serve
from ..details import needs_in, payload_text
from ..errors import ServiceError
from ..handle import Job
from ..queue import Queue
from ..reviews import pending_reviews
from ..service import ensure_service, find_service, stop_service
from ..store import Store
from .common import CommandFailed, UsageError, _existing, _job, _open, _path
from .render import (
    _clock,
    _resource_rows,
    _table,
    job_dict,
    job_table,
    schedule_rows,
    status_text,
)

# -- worker ---------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    if args.detach:
        return _detach(args)
    executor = None
    if args.dask:
        executor = _dask_client(args.dask)
    logging.getLogger("nbqueue").setLevel(logging.INFO)

    def say(event: str, text: str) -> None:
        err = event in ("stopping", "idle", "info")
        print(f"nbqueue worker: {text}", file=sys.stderr if err else sys.stdout, flush=True)

    try:
        return serve(_path(args.path), workers=args.workers, executor=executor,
                     address=args.dask, idle_exit=args.idle_exit, say=say)
    except ServiceError as exc:
        raise CommandFailed(str(exc)) from None
    finally:
        if executor is not None:
            executor.close()


def _dask_client(address: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise CommandFailed("--dask needs dask.distributed: pip install 'nbqueue[dask]'") from None
    return Client(address)


def _detach(args: argparse.Namespace) -> int:
    """``worker --detach``: make sure the directory's service runs; say which it is."""
    if args.dask and importlib.util.find_spec("distributed") is None:
        raise CommandFailed("--dask needs dask.distributed: pip install 'nbqueue[dask]'")
    path = _path(args.path)
    Store(path).close()  # creates a new queue, or refuses an unsafe or foreign directory
    record, started = ensure_service(path, workers=args.workers, address=args.dask,
                                     idle_exit=args.idle_exit)
    where = f"dask slots on {record.address}" if record.address else "local worker processes"
    log_text = record.log or "its terminal or journal"
    if started:
        print(f"nbqueue worker: serving {path} in the background: pid {record.pid}, "
              f"{record.workers} {where}; log {log_text}; stop it with: nbqueue stop {path}")
        return 0
    print(f"nbqueue worker: already serving {path}: the service pid {record.pid}, "
          f"{'detached' if record.detached else 'in the foreground'}, since "
          f"{_clock(record.since)}, {record.workers} {where}; log {log_text}")
    differs = [f"{what} {theirs} (not {mine})" for what, mine, theirs in (
        ("workers", args.workers, record.workers), ("dask", args.dask, record.address),
        ("idle-exit", args.idle_exit, record.idle_exit)) if mine is not None and mine != theirs]
    if differs:
        print(f"nbqueue worker: it runs with {', '.join(differs)}; to change that: nbqueue "
              f"stop {path}, then start it again", file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    path = _existing(args.path)
    stopped = stop_service(path, timeout=args.timeout)
    if stopped is not None:
        print(f"nbqueue stop: stopped the service of {path} (pid {stopped.pid}); its running "
              "jobs went back to the queue")
        return 0
    left = find_service(path)
    if left is not None and not left.alive:
        print(f"nbqueue stop: no service serves {path} (the last one, pid {left.pid}, did not "
              "stop cleanly: it was killed or crashed, or the machine restarted)")
    else:
        print(f"nbqueue stop: no service serves {path}")
    return 0


# -- status -----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        try:
            while True:
                status = q.status()
                if args.json:
                    print(json.dumps(status), flush=True)
                else:
                    if args.watch and sys.stdout.isatty():  # clear the screen: our own escape
                        getattr(sys.stdout, "unfiltered", sys.stdout).write("\x1b[H\x1b[2J")
                    print(status_text(status), flush=True)
                if not args.watch:
                    return 0
                time.sleep(1.0)
                if not args.json and not sys.stdout.isatty():
                    print()
        except KeyboardInterrupt:
            return 0


# -- jobs and reviews -------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        records = [h.record() for h in q.jobs(state=args.state)]
        names = {r.id: r.name for r in records}
        needed = {i for r in records for i in needs_in(r.reason) if i not in names}
        names.update(q.tree().names_of(needed))
    if args.json:
        print(json.dumps([job_dict(r) for r in records]))
    elif records:
        print("\n".join(job_table(records, names=names)))
    else:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
    return 0


def cmd_reviews(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        gates = [(h.record(), h.payload.get("text/plain"), payload_text(h))
                 for h in q.reviews()]
        asks = {r.id: r for r in pending_reviews(q)}
    if args.json:
        print(json.dumps([{"id": r.id, "name": r.name, "reason": r.reason,
                           "created": r.created, "payload": text, "summary": summary,
                           **_asks_json(asks.get(r.id))}
                          for r, text, summary in gates]))
        return 0
    if not gates:
        print("no review gates waiting")
    for r, _, summary in gates:
        review = asks.get(r.id)
        print(f"{r.id}  {r.name}  (created {_clock(r.created)})")
        print("\n".join("    " + line for line in (summary or "(no payload)").splitlines()))
        sets = ""
        if review is not None and review.deadline is not None:
            print(f"    deadline {_clock(review.deadline)}: {review.deadline_text()}")
        if review is not None and review.fields:
            print("    answers: " + "; ".join(f.describe() for f in review.fields))
            sets = "".join(f" --set {f.name}=..." for f in review.fields)
        print(f"    nbqueue approve {q.path} {r.id}{sets} -m '...'   |   "
              f"nbqueue reject {q.path} {r.id} -m '...'\n")
    return 0


def _asks_json(review: Any) -> dict[str, Any]:
    """What a gate asks for, in ``nbqueue reviews --json``."""
    if review is None:
        return {"fields": [], "deadline": None, "on_deadline": None}
    return {"fields": [f.to_dict() for f in review.fields], "deadline": review.deadline,
            "on_deadline": review.on_deadline if review.deadline is not None else None}


# -- actions ----------------------------------------------------------------------------------


def cmd_decide(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        h = _job(q, args.id)
        values: dict[str, str] = {}
        for name, value in getattr(args, "values", None) or []:
            if name in values:
                raise UsageError(f"--set {name}=... is given twice")
            values[name] = value
        if args.command == "approve":
            q.approve(h.id, comment=args.comment, values=values)
        else:
            q.reject(h.id, comment=args.comment)
        record = h.record()
        decision = h.result() if record.state == J.DONE else None
    verb = "approved" if args.command == "approve" else "rejected"
    answers = getattr(decision, "values", None)
    print(f"{verb} gate {record.id} ({record.name}); it is now {record.state}"
          + (f"; comment: {args.comment}" if args.comment else "")
          + ("; answers: " + ", ".join(f"{k}={v!r}" for k, v in answers.items())
             if answers else ""))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        h = _job(q, args.id)
        before = h.state
        if before in J.ENDED:
            raise CommandFailed(f"job {h.id} ({h.name}) has already ended ({before}); "
                                "nothing to cancel")
        h.cancel()
        record = h.record()
    if record.state == J.RUNNING:
        print(f"cancelling job {record.id} ({record.name}): its dispatcher stops it")
    else:
        print(f"{record.state}: job {record.id} ({record.name})")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        h = _job(q, args.id).retry()
        record = h.record()
    print(f"{record.state}: job {record.id} ({record.name}) will run again")
    return 0


def cmd_resources(args: argparse.Namespace) -> int:
    if args.name is None and (args.capacity is not None or args.available is not None
                              or args.rate is not None):
        raise UsageError("--capacity, --available and --rate need --set NAME")
    with _open(args.path) as q:
        if args.name is not None:
            available = None if args.available is None else args.available == "yes"
            rate = False if args.rate in ("none", "off") else args.rate
            q.set_resource(args.name, capacity=args.capacity, available=available, rate=rate)
        resources = q.resources()
    if args.json:
        print(json.dumps(resources))
    elif resources:
        print("\n".join(_table(None, _resource_rows(resources))))
    else:
        print("no resources declared or held")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    """``pause`` and ``resume``: the whole queue, or the jobs of a name."""
    with _open(args.path) as q:
        before = q.paused()
        moved = q.pause(args.name) if args.command == "pause" else q.resume(args.name)
        after = q.paused()
    what = f"jobs named {args.name}" if args.name else f"queue {q.path}"
    was = before["names"].count(args.name) > 0 if args.name else before["queue"]
    jobs = f"{moved} job{'s' if moved != 1 else ''}"
    if args.command == "pause":
        print(f"paused {what}" + (" (it was paused already)" if was else "")
              + f": nothing new starts, running jobs finish ({jobs} now wait); resume with: "
              f"nbqueue resume {q.path}" + (f" {args.name}" if args.name else ""))
    elif was:
        print(f"resumed {what}: {jobs} ready again")
    else:
        print(f"{what} was not paused; nothing changed")
    others = (["the whole queue"] if after["queue"] and args.name else []) + [
        f"jobs named {n}" for n in after["names"] if n != args.name]
    if others:
        print(f"{'also' if args.command == 'pause' else 'still'} paused: {', '.join(others)}")
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        for action, name in (("pause", args.pause), ("resume", args.resume),
                             ("delete", args.delete)):
            if name is not None:
                getattr(q.schedule_of(name), action)()
                print(f"{action}d schedule {name}" + (
                    "; the jobs it made stay" if action == "delete" else ""))
        records = [r.to_dict() for r in q.schedules()]
    if args.json:
        print(json.dumps(records))
    elif records:
        print("\n".join(_table(None, schedule_rows(records))))
    else:
        print("no schedules")
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
    with _open(args.path) as q:
        try:
            result = export(q, target)
        except OSError as exc:  # the file cannot be written where it was asked for
            flag = "--jsonl" if args.jsonl else "--notebook"
            raise CommandFailed(f"{flag} {target}: cannot write it ({exc.strerror or exc}: "
                                f"{exc.filename or target}); give a file in a directory you can "
                                "write") from None
    print(f"exported {q.path} to {target}" + (f" ({result} jobs)" if isinstance(result, int)
                                              else ""))
    return 0


# -- demo ---------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from .. import demo

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
    from ..demo import result

    cells = []
    for record, h in records:
        text = repr(result(h)) if record.state == J.DONE else ""
        cells.append(text if len(text) <= 40 else text[:37] + "...")
    return cells
