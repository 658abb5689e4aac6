"""What the commands share: their errors and opening a queue."""

from __future__ import annotations

from pathlib import Path

from ..errors import NoSuchJob
from ..handle import Job
from ..queue import Queue, default_path


class CommandFailed(Exception):
    """A command ran but did not succeed: its message is printed, the exit code is 1."""


class UsageError(CommandFailed):
    """Options that do not go together (what argparse cannot check): exit code 2."""


def _path(arg: str | None) -> Path:
    return Path(arg).expanduser().absolute() if arg else default_path()


def _existing(arg: str | None) -> Path:
    """The path of an existing queue (``CommandFailed`` if there is none); opens nothing."""
    path = _path(arg)
    if not path.exists():
        raise CommandFailed(f"no queue at {path}: the directory does not exist (give the queue "
                            "directory as PATH, or set $NBQUEUE_DIR)")
    if path.is_dir() and not any(path.iterdir()):
        raise CommandFailed(f"no queue at {path}: the directory is empty")
    return path


def _open(arg: str | None) -> Queue:
    """An existing queue, opened without a dispatcher; never creates one."""
    return Queue(_existing(arg), start=False)


def _job(q: Queue, ref: str) -> Job:
    """The job ``ref`` names: its name (the newest job of that name), id, start of its id
    (4 or more hex digits) or key. ``CommandFailed`` if none; ``AmbiguousJob`` (exit 1,
    listing them) if the start of an id matches several."""
    try:
        return q.find(ref)
    except NoSuchJob as exc:
        raise CommandFailed(str(exc)) from None
