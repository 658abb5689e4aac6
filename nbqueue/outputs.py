"""The output queue: every job that ends is delivered to each output exactly once.

``Queue(..., outputs=[JsonLines("results.jsonl"), NotebookReport("report.ipynb")])``
records the outputs in the queue directory, so that whichever process completes a
job (a kernel, a headless worker) delivers it. The store writes an outbox row in the
transaction that ends a job; each output has a cursor. Delivery, about once a second
in a background thread of each dispatcher, takes an output's lock (``flock`` on a
file in the queue directory, released by the OS if the process dies), reads from the
output file which outbox rows it already holds, appends the others, makes them
durable (fsync, or an atomic replace), and only then advances the cursor. A crash at
any point leaves the file holding a prefix of the endings, each once; the next
delivery completes it without repeating one.

Each delivered record carries ``queue`` (the queue directory) and ``outbox`` (its
outbox seq): that is how a file tells what it already holds. One file per output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from . import job as J
from . import report
from .store import outbox

log = logging.getLogger(__name__)

BATCH = 500  # endings per write (each write is made durable before the cursor moves)
DELIVER_EVERY = 1.0  # seconds between a dispatcher's looks at the outbox
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


# -- JSON lines ---------------------------------------------------------------------------------


class JsonLines(Output):
    """Append one JSON object per ended job to a file (JSON Lines).

    Parameters
    ----------
    path : str or Path
        The file, made absolute against the current directory. It is created if
        missing and only ever appended to.

    Each line holds ``queue``, ``outbox`` (the delivery sequence number), ``id``,
    ``name``, ``kind``, ``state``, ``attempt``, ``parent``, ``reason``, ``created``,
    ``started``, ``ended`` (Unix times), ``result`` (the value if JSON can hold it,
    else its repr, with ``"result_repr": true``) and ``error`` (``exc_type``,
    ``exc_value``, ``traceback``) for a failed job.
    """

    kind = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)

    def open(self, queue: str) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb+") as f:
            _cut_torn_line(f)
            return _last_seq_in_tail(f, queue)

    def write(self, endings: list[Ending]) -> None:
        text = "".join(json.dumps(e.record(), ensure_ascii=False, default=repr) + "\n"
                       for e in endings)
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(text.encode())
            f.flush()
            os.fsync(f.fileno())
        if created:
            _fsync_dir(self.path.parent)


def _cut_torn_line(f: Any) -> None:
    """A crash in the middle of a write leaves a last line without its newline: that
    record was never counted as delivered, so it goes, and is written again whole."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    step = 4096
    pos = size
    while pos > 0:
        start = max(pos - step, 0)
        f.seek(start)
        chunk = f.read(pos - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            f.truncate(start + cut + 1)
            break
        pos = start
    else:
        f.truncate(0)
    f.flush()
    os.fsync(f.fileno())


def _last_seq_in_tail(f: Any, queue: str) -> int:
    """The outbox seq of the last record of ``queue`` in the file (0 if none)."""
    for line in _lines_backwards(f):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("queue") == queue \
                and isinstance(record.get("outbox"), int):
            return int(record["outbox"])
    return 0


def _lines_backwards(f: Any, chunk: int = 65536) -> Iterator[bytes]:
    pos = f.seek(0, os.SEEK_END)
    rest = b""
    while pos > 0:
        start = max(pos - chunk, 0)
        f.seek(start)
        data = f.read(pos - start) + rest
        pos = start
        lines = data.split(b"\n")
        rest = lines.pop(0)  # may continue in the previous chunk
        for line in reversed(lines):
            if line.strip():
                yield line
    if rest.strip():
        yield rest


# -- a notebook report ---------------------------------------------------------------------------


class NotebookReport(Output):
    """A notebook with one section per ended job, results shown with their rich display.

    Parameters
    ----------
    path : str or Path
        The ``.ipynb`` file, made absolute against the current directory.
    title : str, optional
        The heading of the report (default: the queue's directory).

    Each section is a Markdown cell (name, state, id, times, the reason, a review
    decision with who and when) and, for a result or a failure, a code cell whose
    output is the result's display (HTML, images, tables) or the error with its
    traceback. The file is rewritten whole and atomically (a temporary file, then
    ``os.replace``), so it can be opened while the run goes on.
    """

    kind = "notebook"

    def __init__(self, path: str | os.PathLike[str], title: str | None = None) -> None:
        super().__init__(path)
        self.title = title
        self._nb: Any = None

    def spec(self) -> dict[str, Any]:
        return {"path": str(self.path), "title": self.title}

    def open(self, queue: str) -> int:
        import nbformat

        # temporary files of a writer that died (we hold the output's lock: none is live)
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        if self.path.exists():
            # our own file: read without validating it whole (it was validated as written)
            self._nb = nbformat.v4.reads(self.path.read_text(encoding="utf-8"))
            if self._nb.get("nbformat") != 4:
                raise ValueError(f"{self.path} is not a version 4 notebook; move it away")
        else:
            self._nb = report.new_notebook(self.title or f"nbqueue report: {queue}", queue)
        last = 0
        for cell in self._nb.cells:
            meta = cell.get("metadata", {}).get("nbqueue", {})
            if meta.get("queue") == queue and isinstance(meta.get("outbox"), int):
                last = max(last, meta["outbox"])
        return last

    def write(self, endings: list[Ending]) -> None:
        import nbformat

        cells = [cell for ending in endings for cell in report.section(ending)]
        nbformat.validate(nbformat.v4.new_notebook(cells=cells))  # the new part only: fast
        self._nb.cells.extend(cells)
        write_atomically(self.path, nbformat.v4.writes(self._nb).encode())

    def close(self) -> None:
        self._nb = None


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


# -- registering and delivering ------------------------------------------------------------------

KINDS: dict[str, type[Output]] = {JsonLines.kind: JsonLines, NotebookReport.kind: NotebookReport}


def check_outputs(outputs: Any) -> tuple[Output, ...]:
    """Validate ``Queue(outputs=...)``: outputs of nbqueue, or a sequence of them."""
    if isinstance(outputs, Output):
        outputs = (outputs,)
    if isinstance(outputs, (str, bytes, os.PathLike)) or not isinstance(outputs, Iterable):
        raise TypeError(f"outputs={outputs!r}: give a list such as "
                        "[nbqueue.JsonLines('results.jsonl'), nbqueue.NotebookReport('report.ipynb')]")
    out = tuple(outputs)
    for item in out:
        if not isinstance(item, Output) or item.kind not in KINDS:
            raise TypeError(f"outputs: {item!r} is not an output; use nbqueue.JsonLines(path) "
                            "or nbqueue.NotebookReport(path)")
    return out


def register(store: Any, outputs: Sequence[Output]) -> None:
    """Record outputs in the queue directory (idempotent). Each gets the jobs that end
    from now on; for those that ended before, use ``export_jsonl``/``export_notebook``."""
    for output in check_outputs(outputs):
        outbox.register(store, output.name, output.kind, output.spec())


def unregister(queue: Any, output: Output) -> bool:
    """Stop delivering to ``output`` (its file stays); returns whether it was registered."""
    return outbox.unregister(_store(queue), output.name)


def registered(queue: Any) -> list[dict[str, Any]]:
    """The outputs recorded in a queue: name, kind, spec, cursor, ``behind`` (endings not
    yet delivered) and the last ``error`` (None when the last delivery worked)."""
    return outbox.registered(_store(queue))


def deliver(store: Any, outputs: Sequence[Output] = (), *, wait: bool = True,
            batch: int = BATCH) -> int:
    """Deliver the pending endings to every output recorded in the queue directory.

    ``outputs`` are registered first, and used instead of the recorded ones of the
    same name. With ``wait=False`` an output that another thread or process is
    delivering right now is skipped (it is being taken care of). Returns how many
    records were written. An output that fails is noted (``registered``) and tried
    again at the next delivery; it never stops the others.
    """
    store = _store(store)
    given = {o.name: o for o in check_outputs(outputs)}
    if given:
        register(store, list(given.values()))
    written = 0
    for entry in outbox.registered(store):
        output = given.get(entry["name"]) or _from_entry(entry)
        if output is None:
            continue
        try:
            written += _deliver_one(store, output, wait=wait, batch=batch)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            # said once per new error: delivery is tried again every second
            log.log(logging.DEBUG if error == entry["error"] else logging.WARNING,
                    "output %s: delivery failed, will try again: %s", output.name, error)
            try:
                outbox.failed(store, output.name, error)
            except Exception:
                log.debug("could not record the failure of output %s", output.name,
                          exc_info=True)
    return written


def _from_entry(entry: dict[str, Any]) -> Output | None:
    cls = KINDS.get(entry["kind"])
    if cls is None:  # recorded by a newer nbqueue: that one delivers it
        return None
    try:
        return cls.from_spec(entry["spec"])
    except Exception:
        log.warning("output %s: cannot rebuild it from %r", entry["name"], entry["spec"])
        return None


def _deliver_one(store: Any, output: Output, *, wait: bool, batch: int) -> int:
    with _output_lock(store, output, wait=wait) as locked:
        if not locked:
            return 0
        queue = str(store.path)
        written = 0
        in_file = output.open(queue)
        try:
            while True:
                cursor, rows = outbox.pending(store, output.name, batch)
                if not rows:
                    return written
                fresh = [row for row in rows if row["seq"] > max(cursor, in_file)]
                if fresh:
                    output.write([load(store, row, queue) for row in fresh])
                    written += len(fresh)
                    in_file = fresh[-1]["seq"]
                outbox.advance(store, output.name, rows[-1]["seq"])
        finally:
            output.close()


@contextmanager
def _output_lock(store: Any, output: Output, *, wait: bool) -> Iterator[bool]:
    """One deliverer per output at a time, across threads and processes (``flock`` on a
    file in the queue directory: the OS releases it when its holder dies)."""
    import fcntl

    folder = Path(store.path) / "outputs"
    folder.mkdir(mode=0o700, exist_ok=True)
    digest = hashlib.blake2b(output.name.encode(), digest_size=8).hexdigest()
    fd = os.open(folder / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def load(store: Any, row: dict[str, Any], queue: str) -> Ending:
    """An outbox row with the job's result (and a gate's payload) loaded."""
    from .display import payload_bundle

    ending = Ending(row, queue)
    if row["state"] not in (J.DONE, J.REJECTED):
        return ending
    blob, payload = outbox.result_and_payload(store, row["id"])
    if payload:
        ending.payload = payload_bundle(payload)
    if blob is None:  # forgotten since it ended
        return ending
    try:
        ending.value, ending.loaded = pickle.loads(blob), True
    except Exception as exc:  # its class may exist only where the job ran
        ending.load_error = f"<result not loadable here: {type(exc).__name__}: {exc}>"
    return ending


def _store(queue: Any) -> Any:
    return getattr(queue, "store", queue)


# -- a dispatcher's delivery thread --------------------------------------------------------------


class Delivery:
    """Delivers in a background thread, so that outputs never hold up job completion.

    A dispatcher calls ``poke`` from its housekeeping; about once a second, when an
    output lags behind, the thread runs ``deliver``. ``close`` stops the thread and
    delivers what is pending, so that a stopped queue leaves complete files.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._last = 0.0
        self._event = threading.Event()
        self._closing = False
        self._poked = False  # a dispatcher that never ran delivers nothing at close
        self._thread: threading.Thread | None = None

    def poke(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if abs(now - self._last) < DELIVER_EVERY or self._closing:
            return
        self._last = now
        self._poked = True
        if not outbox.behind(self.store):
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="nbqueue-outputs",
                                            daemon=True)
            self._thread.start()
        self._event.set()

    def _run(self) -> None:
        while True:
            self._event.wait()
            self._event.clear()
            if self._closing:
                return
            try:
                deliver(self.store, wait=False)
            except Exception:
                log.warning("delivering outputs of %s failed", self.store.path, exc_info=True)

    def close(self, timeout: float | None = 10.0) -> None:
        self._closing = True
        self._event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None
        try:
            if self._poked and outbox.behind(self.store):
                deliver(self.store, wait=False)  # another deliverer, if busy, does it
        except Exception:
            log.warning("delivering outputs of %s at stop failed", self.store.path,
                        exc_info=True)
        self._closing = False


# -- export: the whole history at once -----------------------------------------------------------


def export_jsonl(queue: Any, path: str | os.PathLike[str]) -> int:
    """Write every ended job of ``queue`` to a JSON Lines file (replacing it atomically),
    one record per job as ``JsonLines`` writes them (``outbox`` is null); returns how many."""
    store = _store(queue)
    name = str(store.path)
    lines = []
    for row in outbox.ended_jobs(store):
        lines.append(json.dumps(load(store, row, name).record(), ensure_ascii=False,
                                default=repr) + "\n")
    write_atomically(Path(path).expanduser().absolute(), "".join(lines).encode())
    return len(lines)


def export_notebook(queue: Any, path: str | os.PathLike[str], title: str | None = None) -> int:
    """Write a report notebook of every ended job of ``queue`` (replacing the file
    atomically), as ``NotebookReport`` writes them; returns how many jobs."""
    import nbformat

    store = _store(queue)
    name = str(store.path)
    nb = report.new_notebook(title or f"nbqueue report: {name}", name)
    count = 0
    for row in outbox.ended_jobs(store):
        nb.cells.extend(report.section(load(store, row, name)))
        count += 1
    nbformat.validate(nb)
    write_atomically(Path(path).expanduser().absolute(), nbformat.v4.writes(nb).encode())
    return count


__all__ = ["Output", "JsonLines", "NotebookReport", "deliver", "register", "unregister",
           "registered", "export_jsonl", "export_notebook", "Delivery"]
