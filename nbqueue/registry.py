"""The queues this user has opened: a small per-user list, so that the review page
(``/nbqueue/`` in Jupyter, ``nbqueue serve``) can find them without being told.

Every ``Queue`` records its directory in ``queues.json`` on opening (once: a path
already listed costs one read of a small file). The file lives in
``$NBQUEUE_REGISTRY`` if set (a file path; ``off`` records nothing), else in
``$JUPYTER_DATA_DIR/nbqueue/``, else in ``$XDG_DATA_HOME/nbqueue/`` (by default
``~/.local/share/nbqueue/``). Recording is best effort: a registry that cannot be
written never stops a queue from opening.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .store.files import DB

log = logging.getLogger(__name__)

MAX_ENTRIES = 500  # the oldest entries go first past this many
FORMAT = 1


def registry_path() -> Path | None:
    """The registry file (None when ``$NBQUEUE_REGISTRY`` is ``off``)."""
    explicit = os.environ.get("NBQUEUE_REGISTRY")
    if explicit:
        return None if explicit.strip().lower() == "off" else Path(explicit).expanduser()
    data = os.environ.get("JUPYTER_DATA_DIR")
    if data:
        return Path(data).expanduser() / "nbqueue" / "queues.json"
    xdg = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(xdg).expanduser() / "nbqueue" / "queues.json"


def is_queue_directory(path: Path) -> bool:
    """Whether ``path`` holds a queue (its database file exists); opens nothing."""
    try:
        return (path / DB).is_file()
    except OSError:
        return False


def known_queues(registry: Path | None = None) -> list[Path]:
    """The queue directories recorded, oldest first, that still hold a queue."""
    registry = registry_path() if registry is None else registry
    if registry is None:
        return []
    return [p for p in _read(registry) if is_queue_directory(p)]


def record_queue(path: Path, registry: Path | None = None) -> None:
    """Add ``path`` (a queue directory, made absolute) to the registry, if not there yet.

    Best effort: an error is logged at debug level and otherwise ignored.
    """
    registry = registry_path() if registry is None else registry
    if registry is None:
        return
    path = Path(path).absolute()
    try:
        if path in _read(registry):
            return
        with _locked(registry):
            paths = [p for p in _read(registry) if p != path and p.exists()]
            _write(registry, (paths + [path])[-MAX_ENTRIES:])
    except OSError as exc:
        log.debug("could not record queue %s in %s: %s", path, registry, exc)


def _read(registry: Path) -> list[Path]:
    try:
        data = json.loads(registry.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.debug("ignoring unreadable queue registry %s: %s", registry, exc)
        return []
    queues = data.get("queues") if isinstance(data, dict) else None
    return [Path(p) for p in queues if isinstance(p, str)] if isinstance(queues, list) else []


def _write(registry: Path, paths: Iterable[Path]) -> None:
    """Replace the file atomically (readers never see half of it)."""
    text = json.dumps({"format": FORMAT, "queues": [str(p) for p in paths]}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=".queues-", dir=registry.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, registry)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(registry: Path) -> Iterator[None]:
    """Hold the registry's lock file: processes opening queues at once add them all."""
    registry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(registry.with_name(registry.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
