"""A local worker's memory: what its job uses, and who the kernel kills first.

``memory="4GB"`` is enforced by the worker itself: its watchdog thread (``runtime``) reads
the resident set size (RSS) of the worker and of every process its job started, every
``EVERY`` seconds while a job with a limit runs, and past the limit stops the job: it
sends the dispatcher a failure naming the limit, then kills its process group. Not
``RLIMIT_AS``: that caps *address space*, which numeric libraries reserve far beyond what
they use (OpenBLAS and MKL thread arenas, jemalloc, CUDA, memory-mapped files), so a
harmless job would die with an allocation error, and what it measures is not what fills
the machine. Not a cgroup: creating one needs a cgroup v2 subtree delegated to the user,
which a notebook server rarely has. RSS is what the kernel's out-of-memory killer weighs.

Limits of a watchdog: it looks every ``EVERY`` seconds, so a job may pass its limit by
what it allocates in that time; and it is a thread of the worker, so a job that holds the
interpreter in one C call (a single huge allocation that does not release the GIL) is
seen over its limit only when the call returns. If the machine runs out first, the
kernel's OOM killer steps in: each local worker raises its ``oom_score_adj`` to
``OOM_SCORE_ADJ`` (Linux), so the kernel kills a worker (the largest) before the
dispatcher, the notebook's kernel or anything else of yours.

Linux only (``/proc``): elsewhere a limit is not enforced, and the dispatcher says so once.
"""

from __future__ import annotations

import os

EVERY = 0.05  # seconds between two looks at a limited job's memory
OOM_SCORE_ADJ = 1000  # the kernel's out-of-memory killer picks a worker first
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def supported() -> bool:
    """Whether memory limits are enforced on this system (Linux's ``/proc``)."""
    return os.path.exists("/proc/self/statm")


def _rss(pid: int | str) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):  # gone meanwhile
        return 0


def _children(pid: int | str) -> list[str]:
    out: list[str] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += f.read().decode().split()
        except OSError:
            pass
    return out


def tree_rss(pid: int | str = "self") -> int:
    """The RSS of a process and of all its descendants, in bytes. Pages a forked child
    shares with its parent count in each, as the kernel's per-process RSS counts them."""
    total, todo, seen = 0, [str(pid)], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss(current)
        todo += _children(current)
    return total


def raise_oom_score() -> bool:
    """Ask the kernel to kill this process first when memory runs out (Linux
    ``oom_score_adj``; raising it needs no privilege). Returns whether it was set."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(OOM_SCORE_ADJ))
        return True
    except OSError:
        return False


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot
    (``/proc/vmstat``), or None where that cannot be read."""
    try:
        with open("/proc/vmstat", "rb") as f:
            for line in f:
                if line.startswith(b"oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None
