"""Where a queue directory's space goes (``nbqueue du``), read only.

The kinds split the bytes of every regular file in the directory, so they add up to its
total (apparent sizes, ``st_size``):

- ``results``, ``arguments``: what large and small results and arguments take, in the
  job rows (small ones), in diskcache's table, or as value files;
- ``logs``: the jobs' output (``nbq_log``, and the log columns of older rows);
- ``functions``: stored functions (``nbq_fn``: a notebook function's pickle, a reference);
- ``rows``: the rest of ``cache.db``: the job rows without the above, the indexes, the other
  tables, and room SQLite has not given back yet;
- ``files``: the other files: the space reserve, the service's log, the locks, and value
  files that no row names;
- ``wal``: the write-ahead log and its index (``cache.db-wal``, ``cache.db-shm``).

By state, each state's jobs and the results, arguments and logs they hold; what nothing
refers to any more (values of jobs that are gone, or of an earlier run of a job) is under
``unreferenced``: ``nbqueue gc`` deletes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import job as J
from .backend import value_sizes
from .files import DB

if TYPE_CHECKING:
    from . import Store

KINDS = ("rows", "results", "arguments", "logs", "functions", "files", "wal")
UNREFERENCED = "unreferenced"


@dataclass
class StateUsage:
    """The jobs of one state and what they hold, in bytes."""

    jobs: int = 0
    results: int = 0
    arguments: int = 0
    logs: int = 0

    @property
    def total(self) -> int:
        return self.results + self.arguments + self.logs


@dataclass
class Usage:
    """A queue directory's space: ``kinds`` (bytes by kind, adding up to ``total``) and
    ``states`` (each state's jobs and bytes, and ``unreferenced``)."""

    path: Path
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    states: dict[str, StateUsage] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "total": self.total, "kinds": dict(self.kinds),
                "states": {state: {"jobs": s.jobs, "results": s.results,
                                   "arguments": s.arguments, "logs": s.logs}
                           for state, s in self.states.items()}}


def _regular_files(root: Path) -> dict[str, int]:
    """Every regular file under ``root`` (relative path -> bytes); links are not followed."""
    out: dict[str, int] = {}
    for directory, dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if os.path.isfile(path) and not os.path.islink(path):
                out[os.path.relpath(path, root)] = st.st_size
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
    return out


def usage(store: Store) -> Usage:
    """Measure ``store``'s directory (reads only: a read-only store stays read-only)."""
    root = store.path
    files = _regular_files(root)
    out = Usage(root)
    states = out.states = {state: StateUsage() for state in J.STATES}
    states[UNREFERENCED] = StateUsage()
    wal = files.pop(f"{DB}-wal", 0) + files.pop(f"{DB}-shm", 0)
    db = files.pop(DB, 0)
    in_db = 0  # bytes of results, arguments, logs and functions inside the database

    refs: dict[str, str] = {}  # value key -> the state of the job that refers to it
    for state, result_ref, args_ref, result, args, logs in store._rows(
            "SELECT state, result_ref, args_ref, length(result), length(args), "
            "COALESCE(length(log), 0) + COALESCE(length(log_before), 0) FROM nbq_job"):
        s = states.setdefault(state, StateUsage())
        s.jobs += 1
        s.results += result or 0
        s.arguments += args or 0
        s.logs += logs  # rows an older nbqueue wrote
        in_db += (result or 0) + (args or 0)
        for ref in (result_ref, args_ref):
            if ref:
                refs[ref] = state
    for key, filename, inline in value_sizes(store._rows):
        key = str(key)
        kind = "results" if key.startswith("result:") else \
            "arguments" if key.startswith("args:") else None
        if kind is None:  # not nbqueue's: its file (if any) counts among the other files
            continue
        if filename:
            size = files.pop(filename, 0)
        else:
            size = inline or 0
            in_db += size
        target = states[refs.get(key, UNREFERENCED)]
        setattr(target, kind, getattr(target, kind) + size)
    for state, n in store._rows(
            "SELECT COALESCE(j.state, ?), SUM(length(l.log) + COALESCE(length(l.before), 0)) "
            "FROM nbq_log l LEFT JOIN nbq_job j ON j.id = l.job GROUP BY j.state",
            (UNREFERENCED,)):
        states[state].logs += n or 0

    kinds = out.kinds
    for s in states.values():
        kinds["results"] += s.results
        kinds["arguments"] += s.arguments
        kinds["logs"] += s.logs
    kinds["functions"] = int(store._one("SELECT COALESCE(SUM(length(blob)), 0) FROM nbq_fn"))
    in_db += kinds["logs"] + kinds["functions"]
    kinds["files"] = sum(files.values())  # the reserve, the service's files, orphan files
    # what the log holds that is not copied into cache.db yet counts as what it is
    kinds["rows"] = max(db - in_db, 0)
    kinds["wal"] = wal - max(in_db - db, 0)
    return out
