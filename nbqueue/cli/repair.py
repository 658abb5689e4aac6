"""``nbqueue check`` and ``nbqueue salvage``: a damaged queue directory, reported and
copied. Both only read the directory they are given."""

from __future__ import annotations

import argparse
import sys

from ..store.check import check_queue
from ..store.salvage import salvage
from .common import CommandFailed, _existing, _path


def cmd_check(args: argparse.Namespace) -> int:
    """Print one line per problem (exit 1), or one line saying the queue is healthy (0)."""
    path = _existing(args.path)
    report = check_queue(path, quick=args.quick)
    if report.healthy:
        jobs = "" if report.jobs is None else f": {report.jobs} jobs"
        print(f"nbqueue check: {path} is healthy{jobs}")
        return 0
    for line in report.problems:
        print(line)
    print(f"nbqueue check: {len(report.problems)} problem"
          f"{'s' if len(report.problems) != 1 else ''} in {path}; to copy what can be read "
          f"into a new queue: nbqueue salvage {path} NEW_DIR", file=sys.stderr)
    return 1


def cmd_salvage(args: argparse.Namespace) -> int:
    source = _existing(args.path)
    target = _path(args.new_path)
    if target == source:
        raise CommandFailed("salvage copies the queue into a new directory: give NEW_DIR "
                            "other than PATH")
    report = salvage(source, target)
    print(f"nbqueue salvage: {report.summary()}")
    for job_id, reason in sorted(report.changed.items()):
        print(f"  job {job_id}: {reason}")
    print(f"nbqueue salvage: serve the new queue with: nbqueue worker {target}")
    return 0
