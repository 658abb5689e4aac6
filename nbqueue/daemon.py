"""Serving a queue from a process of its own: the loop of ``nbqueue worker`` (in the
foreground) and the detached service's process.

``serve`` runs the queue's dispatcher in this process until SIGINT or SIGTERM, until
it has been idle for ``idle_exit`` seconds, or until the dispatcher dies. It also makes
this process the directory's service when none serves yet: it holds ``service.lock``
and keeps ``service.json`` (see ``nbqueue.service``), so that ``Queue(path,
detach=True)`` and ``nbqueue stop`` find it.

``python -m nbqueue.daemon DIR [--workers N] [--dask ADDRESS] [--idle-exit S]`` is the
detached service's process, started by ``nbqueue.service.ensure_service`` in a session
of its own: it logs to ``service.log`` (rotated) and runs ``serve``.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from .errors import ServiceError
from .queue import Queue
from .service import (
    CRASH_BYTES,
    FAILED,
    LOG,
    LOG_BACKUPS,
    LOG_BYTES,
    SERVING,
    STARTING,
    ServiceLock,
    ServiceRecord,
    has_work,
    open_private,
    remove_record,
    write_record,
)
from .store.directory import Owner

log = logging.getLogger("nbqueue.daemon")  # also when run as __main__

TICK = 0.5  # seconds between checks of the dispatcher, idleness and signals

Say = Callable[[str, str], None]  # (event, text): "serving", "stopping", "stopped", "idle", "info"


def serve(path: str | os.PathLike[str], *, workers: int | None = None, executor: Any = None,
          address: str | None = None, idle_exit: float | None = None, detached: bool = False,
          log_path: Path | None = None, say: Say) -> int:
    """Serve the queue at ``path`` in this process (from its main thread) until stopped.

    Returns 0 after a clean stop (SIGINT/SIGTERM: running jobs go back to the queue),
    after ``idle_exit`` seconds with nothing ready, running or due soon, or, ``detached``,
    when another service already serves the directory. Raises ``ServiceError`` if the
    dispatcher died. A second signal leaves at once (exit 1); the next process that opens
    the queue then puts its jobs back.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()

    q = Queue(path, workers=workers, executor=executor, start=False)
    lock = ServiceLock.acquire(q.path, wait=1.0 if detached else 0.05)
    record: ServiceRecord | None = None
    try:
        if lock is None and detached:
            say("info", f"another service already serves {q.path}; this one ({os.getpid()}) "
                        "leaves")
            return 0
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if lock is not None:
            record = ServiceRecord(
                path=str(q.path), pid=os.getpid(), owner=str(Owner.current()), since=time.time(),
                workers=q.workers, executor="dask" if executor is not None else "loky",
                address=address, log=str(log_path) if log_path else None, detached=detached,
                state=STARTING, idle_exit=idle_exit)
            write_record(record)
        q.start()
        kind = f"dask slots on {address}" if executor is not None else "local worker processes"
        how = (f"detached; stop it with: nbqueue stop {q.path}" if detached
               else "stop with Ctrl-C or SIGTERM")
        say("serving", f"serving {q.path} with {q.workers} {kind} (pid {os.getpid()}); {how}")
        if record is not None:
            record = replace(record, state=SERVING)
            write_record(record)
        idle_since: float | None = None
        try:
            while not stop.wait(TICK):
                dispatcher = q.dispatcher
                if dispatcher is not None and not dispatcher.alive:
                    error = (dispatcher.error or "unknown error").strip()
                    if record is not None:  # left behind: status shows why it died
                        write_record(replace(record, state=FAILED, error=error))
                        record = None
                    raise ServiceError(f"the dispatcher died: {error.splitlines()[-1]}")
                if idle_exit is None:
                    continue
                if (dispatcher is not None and dispatcher.busy()) or has_work(q._store):
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit:
                    say("idle", f"nothing to do for {idle_exit:g}s (--idle-exit): exiting")
                    break
        finally:
            say("stopping", "stopping; running jobs go back to the queue")
            if detached:
                q.stop(cause="the detached service stopped")
            else:
                q.stop()
    finally:
        try:
            q.close()
        finally:
            if record is not None:
                remove_record(q.path, record.owner)
            if lock is not None:
                lock.release()
    say("stopped", "stopped")
    return 0


# -- the detached service's process ------------------------------------------------------------


class PrivateLog(logging.handlers.RotatingFileHandler):
    """A rotated log file, each file created 0600 and never opened through a symlink."""

    def _open(self) -> Any:
        fd = open_private(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "a", encoding=self.encoding or "utf-8", errors=self.errors)


def main(argv: list[str] | None = None) -> NoReturn:
    """The detached service: log to ``DIR/service.log``, serve until stopped."""
    parser = argparse.ArgumentParser(prog="python -m nbqueue.daemon",
                                     description="A queue's detached service (started by "
                                                 "nbqueue worker DIR --detach).")
    parser.add_argument("path", metavar="DIR")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dask", metavar="ADDRESS", default=None)
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    os.umask(0o077)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # no terminal; never stop on a hangup
    path = Path(args.path).absolute()
    _cap_crash_output()
    handler = PrivateLog(path / LOG, maxBytes=LOG_BYTES, backupCount=LOG_BACKUPS)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("nbqueue").setLevel(logging.INFO)
    logging.captureWarnings(True)

    def say(event: str, text: str) -> None:
        log.info("%s", text)

    executor = None
    code = 1
    try:
        if args.dask:
            from distributed import Client

            executor = Client(args.dask)
        code = serve(path, workers=args.workers, executor=executor, address=args.dask,
                     idle_exit=args.idle_exit, detached=True, log_path=path / LOG, say=say)
    except Exception as exc:
        log.error("the service of %s stopped: %s", path, exc,
                  exc_info=not isinstance(exc, ServiceError))
    finally:
        if executor is not None:
            try:
                executor.close()
            except Exception:
                log.warning("closing the dask client failed", exc_info=True)
    # Leave now: the dispatcher has stopped and handed its jobs back; nothing at
    # interpreter exit (loky's hook waits for its tasks) may keep a stopped service alive.
    logging.shutdown()
    os._exit(code)


def _cap_crash_output() -> None:
    """Empty ``service.err`` (this process's fd 2) when it has grown past ``CRASH_BYTES``."""
    try:
        st = os.fstat(2)
        if stat.S_ISREG(st.st_mode) and st.st_size > CRASH_BYTES:
            os.ftruncate(2, 0)
    except OSError:
        pass


if __name__ == "__main__":
    main()
