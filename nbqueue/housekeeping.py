"""Retention and disk space: ``Queue(path, keep=...)``, ``q.gc()``, the dispatcher's keeper.

A *garbage collection* (``collect``) forgets the ended jobs past their retention (the
directory's ``keep``, and with ``older_than`` every ended job older than that), with
``forget``'s rules: what a job not ended yet needs stays. Then it deletes what nothing
refers to any more (the values of large results and arguments, stored functions, value
files no row names), empties the write-ahead log, and VACUUMs ``cache.db`` when that is
worth it (``VACUUM_SHARE``). Each deletion is a small transaction of its own (see
``store.cleanup``), so the write lock is never held long; a VACUUM is the exception,
which is why only ``q.gc()``/``nbqueue gc`` runs one, and only when ``vacuum_rule`` says so.

Every dispatcher runs a ``Keeper``: a thread that collects in the background (no VACUUM)
every ``$NBQUEUE_KEEP_EVERY`` seconds (default ``KEEP_EVERY``), the first time soon after
it starts, pausing between its transactions as long as each took (so it holds the lock
at most half the time while it works).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import job as J
from .arguments import check_duration
from .errors import InvalidArgument, InvalidArgumentType
from .store import Store
from .store import cleanup as C
from .store.usage import Usage, usage

log = logging.getLogger(__name__)

KEEP_EVERY = 300.0  # seconds between a dispatcher's background collections
KEEP_ENV = "NBQUEUE_KEEP_EVERY"
FIRST_AFTER = 10.0  # the first one, this long after the dispatcher starts (at most)
WAL_WORTH = 64_000_000  # a background collection truncates a log larger than this
VACUUM_SHARE = 0.25  # VACUUM when it gives back at least this share of cache.db...
VACUUM_BYTES = 8_000_000  # ... and at least this many bytes
VACUUM_BUSY_LIMIT = 64_000_000  # with jobs running, VACUUM only a cache.db below this
BACKGROUND_ROWS = 20_000  # child jobs (of each state) and diskcache rows a background
# collection reads at most: the next goes on from there


def check_keep(keep: Any) -> dict[str, float] | None:
    """``keep=`` of ``Queue``: None (leave the directory's retention as it is), or a dict
    of ended state -> how long its jobs are kept after they end (seconds, a ``timedelta``,
    ``"30d"``); ``{}`` keeps every job. Returns state -> seconds."""
    if keep is None:
        return None
    ended = ", ".join(sorted(J.ENDED))
    if not isinstance(keep, dict):
        raise InvalidArgumentType(f"keep={keep!r}: give a dict of ended state -> how long to "
                                  f"keep its jobs, e.g. {{'done': '30d', 'failed': '90d'}} "
                                  f"(states: {ended}), or None")
    out = {}
    for state, age in keep.items():
        if state not in J.ENDED:
            raise (InvalidArgument if isinstance(state, str) else InvalidArgumentType)(
                f"keep: {state!r} is not an ended state; only ended jobs are forgotten "
                f"({ended})")
        out[state] = check_duration(age, f"keep[{state!r}]")
    return dict(sorted(out.items()))


def keep_every() -> float:
    """Seconds between background collections: ``$NBQUEUE_KEEP_EVERY``, else ``KEEP_EVERY``."""
    text = os.environ.get(KEEP_ENV, "").strip()
    if not text:
        return KEEP_EVERY
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"${KEEP_ENV}={text!r}: give a number of seconds > 0 (the default "
                         f"is {KEEP_EVERY:g})")
    return value


@dataclass
class Collected:
    """What a garbage collection did (or, ``dry_run``, would do)."""

    dry_run: bool
    forgotten: int = 0  # ended jobs deleted
    kept: tuple[str, ...] = ()  # ended jobs past their retention that active jobs need
    values: int = 0  # values of results and arguments nothing referred to
    value_bytes: int = 0
    functions: int = 0  # stored functions no job called
    files: int = 0  # value files no row named
    file_bytes: int = 0
    value_cursor: int = 0  # where the next look for unreferenced values goes on (0: start)
    kids_cursor: dict[str, int] = field(default_factory=dict)  # and for ended children
    checkpointed: bool = False  # the write-ahead log was emptied
    vacuum: str = ""  # what was done about a VACUUM, and why
    before: Usage | None = None
    after: Usage | None = None
    notes: list[str] = field(default_factory=list)


def cutoffs_for(keep: dict[str, float], older_than: float | None,
                now: float) -> dict[str, float | None]:
    """The end time before which each ended state's jobs go: the directory's ``keep``, and
    ``older_than`` for every ended state (the earlier-deleting of the two wins)."""
    cutoffs: dict[str, float | None] = {state: now - age for state, age in keep.items()}
    if older_than is not None:
        for state in sorted(J.ENDED):
            cut = cutoffs.get(state)
            cutoffs[state] = now - older_than if cut is None else max(cut, now - older_than)
    return cutoffs


def collect(store: Store, *, older_than: float | None = None, dry_run: bool = False,
            background: bool = False, pause: Callable[[float], bool] | None = None,
            value_cursor: int = 0, kids_cursor: dict[str, int] | None = None,
            now: float | None = None) -> Collected:
    """One garbage collection of ``store``'s directory (see the module). ``pause(seconds)``
    is called between transactions (a background collection waits there, and stops when
    it returns True); ``background`` measures nothing, runs no VACUUM, empties the log
    only past ``WAL_WORTH``, and reads at most ``BACKGROUND_ROWS`` child jobs of each state
    (from ``kids_cursor`` on) and as many of diskcache's rows (for values nothing refers
    to, from ``value_cursor`` on), so that its work is bounded however large the queue
    (``Collected`` says where the next goes on). A dry run only reads."""
    now = time.time() if now is None else now
    done = Collected(dry_run=dry_run)
    if not background:
        done.before = usage(store)
    cutoffs = cutoffs_for(C.read_keep(store), older_than, now)

    def rest(took: float) -> bool:
        return pause is not None and pause(took)

    if cutoffs:
        if dry_run:
            done.forgotten, kept = C.would_forget(store, cutoffs)
            done.kept = tuple(kept)
        else:
            expired = C.Expired(store, cutoffs, kids=kids_cursor,
                                budget=BACKGROUND_ROWS if background else None)
            done.kids_cursor = expired.kids
            while ids := expired.next():
                started = time.perf_counter()
                deleted, kept = C.forget_batch(store, ids, cutoffs)
                done.forgotten += deleted
                done.kept += tuple(kept)
                if rest(time.perf_counter() - started):
                    return done
    after, looked = value_cursor, 0
    while True:  # values nothing refers to, a chunk of diskcache's rows at a time
        found, after_next = C.orphan_values(store, after)
        looked += C.VALUE_CHUNK
        done.value_bytes += sum(size for _, _, size in found)
        if dry_run:
            done.values += len(found)
        else:
            started = time.perf_counter()
            done.values += C.delete_values(store, found)
            if found and rest(time.perf_counter() - started):
                return done
        if after_next is None:
            break
        after = after_next
        if background and looked >= BACKGROUND_ROWS:
            done.value_cursor = after
            break
    functions, seq = C.orphan_functions(store)
    done.functions = len(functions) if dry_run else C.delete_functions(store, functions, seq)
    if not background:
        files = C.orphan_files(store)
        done.files, done.file_bytes = len(files), sum(size for _, size in files)
        if files and not dry_run:
            done.files = C.sweep_files(store)
    if not dry_run and (not background or C.wal_bytes(store.path) > WAL_WORTH):
        done.checkpointed = C.checkpoint(store, wait=0.0 if background else 5.0)
    if not background:
        done.vacuum = _vacuum(store, dry_run)
        done.after = done.before if dry_run else usage(store)
    return done


def vacuum_rule(store: Store) -> tuple[bool, str]:
    """Whether a VACUUM of ``cache.db`` is worth it and safe now, and why (see the module):
    it must give back at least ``VACUUM_SHARE`` of the file and ``VACUUM_BYTES``; the disk
    must have room for a copy of the file (VACUUM writes one, through the log); and while
    jobs run, the file must be below ``VACUUM_BUSY_LIMIT``, because a VACUUM holds the write
    lock until it ends and their dispatchers renew their leases through it."""
    from .sizes import size_text

    gain, size = C.slack(store)
    if gain < VACUUM_BYTES or gain < VACUUM_SHARE * size:
        return False, (f"no VACUUM: it would give back {size_text(gain)} of {size_text(size)} "
                       f"(worth it from {VACUUM_SHARE:.0%} and {size_text(VACUUM_BYTES)})")
    free = shutil.disk_usage(store.path).free
    if free < 2 * size:
        return False, (f"no VACUUM: it would give back {size_text(gain)}, but needs room for a "
                       f"copy of cache.db ({size_text(size)}) and the disk has "
                       f"{size_text(free)} free")
    running = store.counts().get(J.RUNNING, 0)
    if running and size > VACUUM_BUSY_LIMIT:
        return False, (f"no VACUUM: it would give back {size_text(gain)}, but {running} job(s) "
                       f"run and a VACUUM of {size_text(size)} would hold the queue's write lock "
                       "too long for their leases; run gc again when nothing runs")
    return True, f"VACUUM: {size_text(gain)} of {size_text(size)} given back"


def _vacuum(store: Store, dry_run: bool) -> str:
    worth, why = vacuum_rule(store)
    if not worth or dry_run:
        return why.replace("VACUUM:", "would VACUUM:") if dry_run and worth else why
    C.vacuum(store)
    C.checkpoint(store, wait=5.0)  # a VACUUM wrote the whole file to the log
    return why


class Keeper:
    """A dispatcher's background collector: a daemon thread that runs ``collect`` every
    ``every`` seconds (default ``keep_every()``). Errors are logged and it tries again at
    the next turn; it never stops the dispatcher. ``forgot`` is called after a pass that
    forgot jobs (the dispatcher drops the results it kept ahead, ``waiters``)."""

    def __init__(self, store: Store, every: float | None = None, *,
                 forgot: Callable[[], None] | None = None) -> None:
        self.store = store
        self._forgot = forgot
        self.every = keep_every() if every is None else every
        self.passes = 0
        self.last: Collected | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="nbqueue-keeper", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Collect now (a new retention was recorded in this process)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def _pause(self, took: float) -> bool:
        return self._stop.wait(max(took, 0.01))

    def _run(self) -> None:
        wait = min(FIRST_AFTER, self.every)
        while True:
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                last = self.last
                self.last = collect(self.store, background=True, pause=self._pause,
                                    value_cursor=last.value_cursor if last else 0,
                                    kids_cursor=last.kids_cursor if last else None)
                self.passes += 1
                if self.last.forgotten and self._forgot is not None:
                    self._forgot()
                if self.last.forgotten or self.last.values or self.last.functions:
                    log.info("nbqueue keeper: forgot %d ended job(s), deleted %d value(s) and "
                             "%d function(s) nothing referred to", self.last.forgotten,
                             self.last.values, self.last.functions)
            except Exception as exc:  # a full disk, a lock held long: the next turn retries
                log.warning("nbqueue keeper of %s: %s: %s (trying again in %gs)",
                            self.store.path, type(exc).__name__, exc, self.every)
            wait = self.every
