"""``nbqueue du`` and ``nbqueue gc``: where a queue directory's space goes, and giving it back."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..housekeeping import Collected
from ..sizes import size_text
from ..store.usage import KINDS, UNREFERENCED, Usage
from .common import _open
from .render import _table


def cmd_du(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        found = q.du()
    print(json.dumps(found.to_dict()) if args.json else "\n".join(usage_lines(found)))
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with _open(args.path) as q:
        done = q.gc(older_than=args.older_than, dry_run=args.dry_run)
        keep = q.keep
    if args.json:
        print(json.dumps(collected_dict(done)))
    else:
        print("\n".join(collected_lines(done, keep, args.older_than is not None)))
    return 0


def usage_lines(found: Usage) -> list[str]:
    """``nbqueue du``: the kinds (they add up to the total), then the states."""
    lines = [f"queue {found.path}: {size_text(found.total)} ({found.total} bytes)", ""]
    lines += _table(("kind", "size", "bytes"), [(kind, size_text(n), str(n))
                                               for kind, n in found.kinds.items()])
    rows = [(state, "" if state == UNREFERENCED else str(s.jobs), size_text(s.results),
             size_text(s.arguments), size_text(s.logs))
            for state, s in found.states.items() if s.jobs or s.total]
    if rows:
        lines += [""] + _table(("state", "jobs", "results", "arguments", "logs"), rows)
    return lines


def _kinds(found: Usage | None) -> str:
    if found is None:
        return ""
    parts = ", ".join(f"{kind} {size_text(found.kinds[kind])}" for kind in KINDS
                      if found.kinds[kind])
    return f"{size_text(found.total)}" + (f" ({parts})" if parts else "")


def collected_lines(done: Collected, keep: dict[str, float], aged: bool) -> list[str]:
    """What ``nbqueue gc`` did (or, ``--dry-run``, would do), with the space before and after."""
    did = (lambda now, then: then) if done.dry_run else (lambda now, then: now)
    lines = []
    if not keep and not aged:
        lines.append("no retention set (Queue(path, keep=...)) and no --older-than: no job "
                     "is forgotten")
    else:
        kept = (f" (and kept {len(done.kept)} that jobs not ended yet need)"
                if done.kept else "")
        lines.append(f"{did('forgot', 'would forget')} {done.forgotten} ended job(s){kept}")
    lines.append(f"{did('deleted', 'would delete')} {done.values} value(s) of results and "
                 f"arguments nothing refers to ({size_text(done.value_bytes)}), "
                 f"{done.functions} stored function(s) no job calls, {done.files} value "
                 f"file(s) no row names ({size_text(done.file_bytes)})")
    if not done.dry_run:
        lines.append("emptied the write-ahead log" if done.checkpointed else
                     "could not empty the write-ahead log now (a reader is on an older "
                     "commit); the next gc will")
    lines.append(done.vacuum)
    if done.dry_run:
        lines.append(f"now:    {_kinds(done.before)}")
    else:
        lines += [f"before: {_kinds(done.before)}", f"after:  {_kinds(done.after)}"]
    return lines


def collected_dict(done: Collected) -> dict[str, Any]:
    return {"dry_run": done.dry_run, "forgotten": done.forgotten, "kept": list(done.kept),
            "values": done.values, "value_bytes": done.value_bytes,
            "functions": done.functions, "files": done.files, "file_bytes": done.file_bytes,
            "checkpointed": done.checkpointed, "vacuum": done.vacuum,
            "before": done.before.to_dict() if done.before else None,
            "after": done.after.to_dict() if done.after else None}
