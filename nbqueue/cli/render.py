"""Plain-text rendering for the terminal: status, job tables (pure functions)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import job as J
from ..details import clock, note_with_names
from ..display import capacity_text, elapsed_text, progress_text


def status_text(status: dict[str, Any]) -> str:
    """A readable summary of ``Queue.status()``."""
    path = status["path"]
    lines = [f"queue {path} (format {status['format']})"]
    counts = {s: n for s, n in status["counts"].items() if n}
    lines.append("jobs: " + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none"))
    paused = status.get("paused") or {}
    if paused.get("queue"):
        lines.append(f"PAUSED: nothing new starts until: nbqueue resume {path}")
    for name in paused.get("names", []):
        lines.append(f"PAUSED: jobs named {name}, until: nbqueue resume {path} {name}")
    dispatchers = status["dispatchers"]
    for d in dispatchers:
        if d.get("error"):
            lines += ["", f"!! DISPATCHER DIED: pid {d['pid']} on {d['host']} "
                          f"(started {_clock(d['started'])}):"]
            lines += ["!!   " + line for line in d["error"].rstrip().splitlines()[-15:]]
    service = status.get("service")
    if service is not None and not service["alive"]:
        lines += [""] + service_died_lines(service, path)
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
                     f"nbqueue worker {path} --detach (or open the queue in a notebook)")
    else:
        lines.append("dispatchers: none")
    if service is not None and service["alive"]:
        lines += ["", "service: " + service_text(service)]
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
    if status.get("schedules"):
        lines += ["", "schedules:"]
        lines += _table(None, schedule_rows(status["schedules"]), indent="  ")
    return "\n".join(lines)


def schedule_rows(schedules: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    """One row per schedule (``ScheduleRecord.to_dict()``): name, when it fires, its next
    firing, its last job, what came of its firings, and its note."""
    from ..recurrence import Timing

    rows = []
    for r in schedules:
        when = Timing(r["every"], r["cron"], r["tz"]).describe()
        following = "PAUSED" if r["paused"] else f"next {_clock(r['next'])}"
        last = f"last {_clock(r['last'])} job {r['last_job']}" if r["last_job"] else "no job yet"
        counts = ", ".join(f"{r[k]} {k}" for k in ("fired", "missed", "skipped") if r[k])
        rows.append((r["name"], when, following, last, counts, r["note"]))
    return rows


def service_text(service: dict[str, Any]) -> str:
    """One line on a live service (``status["service"]``)."""
    how = "detached" if service["detached"] else "in the foreground"
    where = f" on {service['address']}" if service.get("address") else ""
    running = service.get("running", 0)
    log = service["log"] or "its terminal or journal"
    idle = (f", exits after {service['idle_exit']:g}s idle" if service.get("idle_exit") is not None
            else "")
    return (f"pid {service['pid']}, {how}, since {_clock(service['since'])}, "
            f"{service['workers']} {service['executor']} workers{where}, "
            f"{running} job{'s' if running != 1 else ''} running{idle}, log {log}")


def service_died_lines(service: dict[str, Any], path: str) -> list[str]:
    """What ``status`` says about a service that did not stop cleanly."""
    how = ("its dispatcher died" if service.get("state") == "failed" else
           "it did not stop cleanly (killed, crashed, or the machine restarted)")
    lines = [f"!! SERVICE DIED: pid {service['pid']} (since {_clock(service['since'])}): {how}"]
    if service.get("error"):
        lines += ["!!   " + line for line in service["error"].rstrip().splitlines()[-15:]]
    if service.get("log"):
        lines.append(f"!! its log: {service['log']}")
    lines.append(f"!! start it again: nbqueue worker {path} --detach")
    return lines


def _resource_rows(resources: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for name, r in resources.items():
        holders = ", ".join(f"{h['job']}" + (f" x{h['units']}" if h["units"] != 1 else "")
                            + f" since {_clock(h['since'])}" for h in r["holders"])
        rate = f"rate {r['rate']}" if r.get("rate") else ""
        if r.get("next_start"):
            rate += f" (next start {_clock(r['next_start'])})"
        rows.append((name, capacity_text(r["capacity"]),
                     "available" if r["available"] else "UNAVAILABLE",
                     f"held by {holders}" if holders else "free", rate,
                     f"{r.get('waiting', 0)} waiting" if r.get("waiting") else ""))
    return rows


def job_dict(r: J.JobRecord) -> dict[str, Any]:
    """A job as JSON: what ``nbqueue jobs --json`` prints for each job."""
    return {"id": r.id, "name": r.name, "state": r.state, "kind": r.kind, "reason": r.reason,
            "attempt": r.attempt, "why": r.why, "parent": r.parent, "key": r.key, "created": r.created,
            "started": r.started, "ended": r.ended, "elapsed": r.elapsed,
            "progress": r.progress, "error": r.error.to_dict() if r.error else None}


def job_table(records: list[J.JobRecord], extra: tuple[str, list[str]] | None = None,
              names: Mapping[str, str] | None = None) -> list[str]:
    """Lines of a job table, children indented under their parents (in this list);
    ``extra`` is one more column (a title and a cell per record, in ``records`` order);
    ``names`` (id -> name) shows the jobs a reason names by name."""
    cells = dict(zip([r.id for r in records], extra[1], strict=True)) if extra else {}
    rows = [(("  " * depth) + r.name, r.id, r.state, str(r.attempt or ""), elapsed_text(r),
             *([cells[r.id]] if extra else []),
             " ".join(note_with_names(r, names or {}).split()))
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
    return clock(ts)


def _since(ts: float | None) -> str:
    if ts is None:
        return ""
    return elapsed_text(J.JobRecord(id="", name="", state=J.RUNNING, started=ts))


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    return f"{max(time.time() - ts, 0):.0f}s ago"
