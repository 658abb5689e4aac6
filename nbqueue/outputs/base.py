"""What every output shares: the ``Output`` base class, an ``Ending`` as delivered, and
durable file writing."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from .. import job as J

_REPR_CAP = 10_000


class Output:
    """Where ended jobs are delivered; subclasses write one file each."""

    kind: ClassVar[str] = ""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # relative to the current directory now (a notebook's folder), like Queue()
        self.path = Path(path).expanduser().absolute()

    @property
    def name(self) -> str:
        """The identity of this output in the queue directory."""
        return f"{self.kind}:{self.path}"

    def spec(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Output:
        return cls(**spec)

    def open(self, queue: str) -> int:
        """Prepare to append; return the last outbox seq this file holds for ``queue``."""
        raise NotImplementedError

    def write(self, endings: list[Ending]) -> None:
        """Append these endings durably (they are not in the file yet)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``open`` took."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Output) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"nbqueue.{type(self).__name__}({str(self.path)!r})"


@dataclasses.dataclass
class Ending:
    """One ended job, as delivered: the outbox snapshot plus its result, loaded once."""

    data: dict[str, Any]
    queue: str
    value: Any = None
    loaded: bool = False  # whether ``value`` holds the job's result
    load_error: str = ""
    payload: dict[str, str] | None = None  # a gate's payload bundle

    @property
    def seq(self) -> int | None:
        return self.data.get("seq")

    def record(self) -> dict[str, Any]:
        """The JSON record: id, name, state, result (JSON-able form or repr) or error, times."""
        d = self.data
        out: dict[str, Any] = {"queue": self.queue, "outbox": d["seq"], "id": d["id"],
                               "name": d["name"], "kind": d["kind"], "state": d["state"],
                               "attempt": d["attempt"], "parent": d["parent"],
                               "reason": d["reason"], "created": d["created"],
                               "started": d["started"], "ended": d["ended"],
                               "result": None, "error": None}
        if self.loaded:
            out["result"], is_json = jsonable(self.value)
            if not is_json:
                out["result_repr"] = True
        elif self.load_error:
            out["result"], out["result_repr"] = self.load_error, True
        if d["state"] == J.FAILED:
            out["error"] = d["error"]
        return out


def jsonable(value: Any) -> tuple[Any, bool]:
    """``value`` itself if JSON can hold it, else its repr; and which of the two.

    >>> jsonable({"a": [1, 2.5, None]})
    ({'a': [1, 2.5, None]}, True)
    >>> jsonable({1, 2})
    ('{1, 2}', False)
    >>> jsonable(J.Decision(True, "ok", "ann", 1.0))
    ({'approved': True, 'comment': 'ok', 'by': 'ann', 'at': 1.0}, True)
    """
    if isinstance(value, J.Decision):
        return dataclasses.asdict(value), True
    try:
        json.dumps(value, allow_nan=False)
        return value, True
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__}: repr failed: {exc}>"
    return (text if len(text) <= _REPR_CAP else text[:_REPR_CAP] + " ..."), False


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _store(queue: Any) -> Any:
    return getattr(queue, "store", queue)
