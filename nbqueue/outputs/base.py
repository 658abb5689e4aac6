"""What every output shares: the ``Output`` base class, an ``Ending`` as delivered, and
durable file writing."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .. import job as J
from ..errors import InvalidArgument

_REPR_CAP = 10_000

# What an output may receive (``on=``). ``ended``: every job that ends; ``failed``: a
# job that ends failed; ``decided``: a review gate that ends (approved, rejected by a
# person or its deadline, cancelled). Those three are endings: one outbox row each,
# which an output receives once whichever of them it asks for. ``review``: a gate
# entered review (a person is asked); ``reminder``: a gate still waits
# (``remind_every``), or its kept deadline passed; ``drained``: nothing ready, running
# or due, once per drain.
EVENTS = ("ended", "failed", "decided", "review", "reminder", "drained")
ENDINGS = ("ended",)  # what JsonLines and NotebookReport receive unless told otherwise


def check_on(on: Any) -> tuple[str, ...] | None:
    """Validate ``on=``: a list of ``EVENTS`` (or one as a string), or None for all.

    >>> check_on(["review", "failed"]), check_on("drained"), check_on(None)
    (('review', 'failed'), ('drained',), None)
    """
    if on is None:
        return None
    kinds = (on,) if isinstance(on, str) else tuple(on) if isinstance(on, (list, tuple)) else None
    if not kinds or not all(isinstance(k, str) for k in kinds):
        raise InvalidArgument(f"on={on!r}: give a list of events among {', '.join(EVENTS)}, "
                              "or None for all of them")
    unknown = [k for k in kinds if k not in EVENTS]
    if unknown:
        raise InvalidArgument(f"on: {unknown[0]!r} is not an event; one of {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(kinds))


def kinds_of(data: dict[str, Any]) -> tuple[str, ...]:
    """The events an outbox row is: ``("review",)``, ``("ended", "failed")``, ..."""
    event = data.get("event") or "ended"
    if event != "ended":
        return (event,)
    return ("ended",) + (("failed",) if data["state"] == J.FAILED else ()) + (
        ("decided",) if data["kind"] == J.GATE else ())


class Output:
    """Where ended jobs (and, with ``on=``, other events) are delivered.

    ``remote``: delivered over the network (a notifier): in a thread apart from the
    files, retried with backoff. ``batch``: at most this many records per ``write``
    (the cursor moves after each write).
    """

    kind: ClassVar[str] = ""
    default_on: ClassVar[tuple[str, ...] | None] = ENDINGS
    remote: ClassVar[bool] = False
    batch: ClassVar[int | None] = None

    def __init__(self, path: str | os.PathLike[str],
                 on: Sequence[str] | str | None = ENDINGS) -> None:
        # relative to the current directory now (a notebook's folder), like Queue()
        self.path = Path(path).expanduser().absolute()
        self.on = check_on(on)

    @property
    def name(self) -> str:
        """The identity of this output in the queue directory."""
        return f"{self.kind}:{self.path}"

    def backoff(self, failures: int) -> float:
        """Seconds to wait before trying again after ``failures`` failures in a row (a
        file: none, the next delivery tries again)."""
        return 0.0

    def receives(self, data: dict[str, Any]) -> bool:
        """Whether this output gets an outbox row (see ``EVENTS``)."""
        return self.on is None or any(kind in self.on for kind in kinds_of(data))

    def store_events(self) -> list[str] | None:
        """The kinds of outbox rows the store must record for this output (None: all)."""
        if self.on is None:
            return None
        return sorted({"ended" if kind in ("failed", "decided") else kind for kind in self.on})

    def spec(self) -> dict[str, Any]:
        return self._with_on({"path": str(self.path)})

    def _with_on(self, spec: dict[str, Any]) -> dict[str, Any]:
        # only when not the default: a spec an older nbqueue reads stays valid
        if self.on != self.default_on:
            spec["on"] = None if self.on is None else list(self.on)
        return spec

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
    review: Any = None  # a gate's ``reviewing.Review`` (its fields, deadline), if still there
    queue_id: str = ""  # the queue's id (nbq_meta), for idempotency keys

    @property
    def event(self) -> str:
        return str(self.data.get("event") or "ended")

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
        if self.event != "ended":  # an ending's record is as it always was
            out = {"queue": self.queue, "outbox": d["seq"], "event": self.event,
                   "at": d.get("at"), **{k: v for k, v in out.items()
                                         if k not in ("queue", "outbox", "result", "error")}}
        if self.review is not None and self.event in ("review", "reminder"):
            r = self.review
            out["review"] = {"title": r.title, "deadline": r.deadline,
                             "on_deadline": r.on_deadline, "overdue": r.overdue,
                             "fields": [f.to_dict() for f in r.fields]}
        return out


def jsonable(value: Any) -> tuple[Any, bool]:
    """``value`` itself if JSON can hold it, else its repr; and which of the two.

    >>> jsonable({"a": [1, 2.5, None]})
    ({'a': [1, 2.5, None]}, True)
    >>> jsonable({1, 2})
    ('{1, 2}', False)
    >>> jsonable(J.Decision(True, "ok", "ann", 1.0))
    ({'approved': True, 'comment': 'ok', 'by': 'ann', 'at': 1.0, 'values': {}}, True)
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
    return getattr(queue, "_store", queue)
