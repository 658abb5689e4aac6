"""Everything about one job, as data and plain text: what ``nbqueue show`` prints and
the panel's detail view renders.

Pure where it can be (a log split into attempts, reasons with names instead of ids, text
cut to size); the rest reads the store once per call. Arguments and results are loaded
with ``pickle``, which may import the modules they come from: what cannot be loaded here
is said, never raised.
"""

from __future__ import annotations

import html.parser
import io
import json
import pickle
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import job as J

if TYPE_CHECKING:
    from .handle import Job
    from .store import Store

#: the line that starts each attempt after the first in a job's log (store/transitions.py)
ATTEMPT_HEADER = re.compile(r"^--- attempt (\d+): (.*) ---$", re.MULTILINE)
_NEEDS = re.compile(r"\bneeds job ((?:[0-9a-f][\w.]*)(?:, [0-9a-f][\w.]*)*)")


# -- logs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One attempt's part of a job's log: ``why`` it ran ("" for the first), its output."""

    number: int
    why: str
    log: str


def split_attempts(log: str, attempt: int = 1) -> list[Attempt]:
    """A job's log cut at its ``--- attempt N: why ---`` header lines, one part per attempt.

    ``attempt`` numbers the part before the first header when there is none (the job's
    attempt as recorded).

    >>> [(a.number, a.why, a.log) for a in split_attempts("a\\n--- attempt 2: it died ---\\nb\\n")]
    [(1, '', 'a\\n'), (2, 'it died', 'b\\n')]
    >>> [(a.number, a.log) for a in split_attempts("out\\n", attempt=3)]
    [(3, 'out\\n')]
    >>> [(a.number, a.log) for a in split_attempts("--- attempt 2: x ---\\n")]
    [(1, ''), (2, '')]
    """
    headers = list(ATTEMPT_HEADER.finditer(log))
    if not headers:
        return [Attempt(max(attempt, 1), "", log)] if log or attempt else []
    parts = [Attempt(max(int(headers[0].group(1)) - 1, 1), "", log[:headers[0].start()])]
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(log)
        parts.append(Attempt(int(header.group(1)), header.group(2),
                             log[header.end():end].lstrip("\n")))
    return parts


def tail(text: str, lines: int) -> tuple[str, int]:
    """The last ``lines`` lines of ``text``, and how many lines were left out.

    >>> tail("a\\nb\\nc\\n", 2)
    ('b\\nc', 1)
    """
    kept = text.rstrip("\n").splitlines()
    return "\n".join(kept[-lines:]), max(len(kept) - lines, 0)


def cut(text: str, *, lines: int = 20, width: int = 160) -> str:
    """``text`` cut to ``lines`` lines of ``width`` characters at most, saying what was cut.

    >>> cut("x" * 10, width=6)
    'xxxxx…'
    >>> cut("a\\nb\\nc", lines=2)
    'a\\nb\\n… 1 more line'
    """
    rows = text.rstrip("\n").splitlines()
    shown = [r if len(r) <= width else r[:width - 1] + "…" for r in rows[:lines]]
    if len(rows) > lines:
        more = len(rows) - lines
        shown.append(f"… {more} more line{'s' if more != 1 else ''}")
    return "\n".join(shown)


# -- reasons with names -----------------------------------------------------------------------


def needs_in(reason: str) -> list[str]:
    """The job ids a reason names ("needs job a1, b2 and more", "needs job a1, which
    ended failed"), as the store writes them.

    >>> needs_in("needs job 1f3a, 9c2e.0.1 and more")
    ['1f3a', '9c2e.0.1']
    >>> needs_in("not before 15:00")
    []
    """
    match = _NEEDS.search(reason)
    return match.group(1).split(", ") if match else []


def with_names(reason: str, names: Mapping[str, str]) -> str:
    """A reason with the jobs it needs shown by name ("needs fit" rather than "needs job
    f50d…"); an id with no known name stays as it was. The stored reason is unchanged:
    this is how it reads.

    >>> with_names("needs job 1f3a, 9c2e and more", {"1f3a": "fit", "9c2e": "prep"})
    'needs fit, prep and more'
    >>> with_names("needs job 1f3a, which ended failed", {})
    'needs job 1f3a, which ended failed'
    """
    ids = needs_in(reason)
    if not ids or not any(i in names for i in ids):
        return reason
    shown = ", ".join(names.get(i, f"job {i}") for i in ids)
    return _NEEDS.sub(lambda _m: "needs " + shown, reason, count=1)


def note_with_names(record: J.JobRecord, names: Mapping[str, str]) -> str:
    """``record.note`` (why it waits, or why it runs again) with needed jobs by name."""
    return with_names(record.note, names)


# -- one job --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """A job that a job needs: its id, name and state (None: forgotten)."""

    id: str
    name: str | None
    state: str | None


@dataclass(frozen=True)
class JobDetails:
    """Everything about one job that can be read without running anything."""

    record: J.JobRecord
    note: str  # the reason or attempt note, needed jobs by name
    function: str | None
    arguments: str  # in short
    needs: tuple[Need, ...] = ()
    children: dict[str, int] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """As JSON (``nbqueue show --json``)."""
        r = self.record
        return {"id": r.id, "name": r.name, "state": r.state, "kind": r.kind, "key": r.key,
                "note": self.note, "reason": r.reason, "attempt": r.attempt, "why": r.why,
                "deaths": r.deaths, "created": r.created, "started": r.started,
                "ended": r.ended, "elapsed": r.elapsed, "parent": r.parent,
                "priority": r.priority, "options": r.options.to_dict(),
                "progress": r.progress, "function": self.function,
                "arguments": self.arguments,
                "needs": [{"id": n.id, "name": n.name, "state": n.state} for n in self.needs],
                "children": self.children,
                "error": r.error.to_dict() if r.error else None,
                "attempts": [{"attempt": a.number, "why": a.why, "log": a.log}
                             for a in self.attempts]}


def job_details(store: Store, job_id: str) -> JobDetails:
    """Read one job's details (``NoSuchJob`` if there is none)."""
    record = store.get(job_id)
    message = store.job_message(job_id)
    needs = list(dict.fromkeys([*message["needs"], *message["refs"]]))
    named = store.names_of([*needs, *needs_in(record.reason)])
    states = {n: store.get(n).state for n in needs if n in named}
    return JobDetails(
        record=record, note=note_with_names(record, named), function=message["function"],
        arguments=arguments_text(message["function"], message["args"], named),
        needs=tuple(Need(n, named.get(n), states.get(n)) for n in needs),
        children=store.child_counts(job_id),
        attempts=tuple(split_attempts(store.log_text(job_id), record.attempt)))


def facts(details: JobDetails) -> list[tuple[str, str]]:
    """A job's facts, one ``(what, text)`` per line: its state and note, attempts, times,
    progress, needs by name, children, resources, options, the call, parent and key."""
    r = details.record
    note = details.note if details.note != r.attempt_note else ""  # "attempts" says it
    rows = [("state", r.state + (f": {note}" if note else ""))]
    if r.kind != J.CALL:
        rows.append(("kind", r.kind))
    else:
        rows.append(("attempts", attempts_text(details)))
    times = "  ".join(f"{what} {clock(ts)}" for what, ts in (
        ("created", r.created), ("started", r.started), ("ended", r.ended)) if ts)
    if r.started:
        times += f"  ({'ran' if r.ended else 'running for'} {_elapsed(r)})"
    rows.append(("times", times))
    if r.progress:
        done, total = r.progress.get("done"), r.progress.get("total")
        rows.append(("progress", (f"{done}/{total}" if total else f"{done}")
                     + (f" {r.progress['message']}" if r.progress.get("message") else "")))
    if details.needs:
        rows.append(("needs", ", ".join(f"{n.name or 'job ' + n.id} ({n.state or 'forgotten'})"
                                        for n in details.needs)))
    if details.children:
        rows.append(("children", ", ".join(f"{n} {s}" for s, n in details.children.items())))
    options = r.options
    if options.resources:
        rows.append(("resources", ", ".join(k if n == 1 else f"{k}={n}"
                                            for k, n in options.resources.items())))
    settings = [f"priority {r.priority}" if r.priority else "",
                f"retries {options.retries}" if options.retries else "",
                f"timeout {options.timeout:g}s" if options.timeout else ""]
    if any(settings):
        rows.append(("options", ", ".join(s for s in settings if s)))
    if details.arguments:
        rows.append(("call", details.arguments))
    if r.parent:
        rows.append(("parent", r.parent))
    if r.key:
        rows.append(("key", r.key))
    return rows


def attempts_text(details: JobDetails) -> str:
    """How many times a job started, and why each attempt after the first ran."""
    r = details.record
    if r.attempt == 0:
        return "none yet"
    text = f"{r.attempt}"
    whys = [f"attempt {a.number}: {a.why}" for a in details.attempts if a.why]
    if not whys and r.attempt_note:
        whys = [r.attempt_note]
    if whys:
        text += " (" + "; ".join(whys) + ")"
    if r.deaths:
        text += f"; its worker process died {r.deaths} time{'s' if r.deaths != 1 else ''}"
    return text


def clock(ts: float | None) -> str:
    """A time of day in local time, with the date if it is not today."""
    if ts is None:
        return "-"
    t = time.localtime(ts)
    fmt = "%H:%M:%S" if t[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S"
    return time.strftime(fmt, t)


def _elapsed(record: J.JobRecord) -> str:
    from .display import elapsed_text

    return elapsed_text(record)


class _Ref:
    """A job handle among stored arguments, shown as the result it stands for."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return f"<result of {self.label}>"


def arguments_text(function: str | None, blob: bytes | None, names: Mapping[str, str],
                   width: int = 200) -> str:
    """A call's arguments in short: ``f(1, 'a', key=...)``; a notebook cell's as its first
    line, inputs and outputs. What cannot be loaded here is said.

    >>> arguments_text("add", pickle.dumps(((1, 2), {"z": "x"})), {})
    "add(1, 2, z='x')"
    """
    if blob is None:
        return ""
    try:
        args, kwargs = _ArgsReader(io.BytesIO(blob), names).load()
    except Exception as exc:
        return f"(cannot be loaded here: {type(exc).__name__}: {exc})"
    if function == "run_cell" and len(args) >= 2 and isinstance(args[0], str):
        lines = args[0].strip().splitlines() or [""]
        text = f"cell: {lines[0]}" + (f" … ({len(lines)} lines)" if len(lines) > 1 else "")
        inputs, outputs = args[1], args[2] if len(args) > 2 else kwargs.get("outputs", ())
        text += f"; inputs: {', '.join(inputs) or 'none'}"
        return cut(text + f"; outputs: {', '.join(outputs) or 'all it assigns'}", lines=1,
                   width=width)
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return cut(f"{function or 'call'}({', '.join(parts)})", lines=1, width=width)


class _ArgsReader(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, names: Mapping[str, str]) -> None:
        super().__init__(file)
        self.names = names

    def persistent_load(self, pid: Any) -> Any:
        _, job_id = pid
        return _Ref(self.names.get(job_id) or f"job {job_id}")


def _short(value: Any, width: int = 40) -> str:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__}: repr failed: {exc}>"
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


# -- results and payloads as text -------------------------------------------------------------


def result_text(job: Job, *, lines: int = 20, width: int = 160) -> str:
    """A finished job's result in short: a cell job's shown value and variables, a gate's
    decision, else the value's ``repr``. What cannot be loaded here is said."""
    return _result_text(job.queue._store, job.id, lines=lines, width=width)


def _result_text(store: Store, job_id: str, *, lines: int, width: int) -> str:
    try:
        blob = store.result_blob(job_id)
        value = None if blob is None else pickle.loads(blob)
    except Exception as exc:
        return f"(cannot be loaded here: {type(exc).__name__}: {exc})"
    return cut(value_text(value), lines=lines, width=width)


def value_text(value: Any) -> str:
    """A result as text: a cell job's outputs one variable per line, a decision in words.

    >>> value_text(J.Decision(True, "ok", "me"))
    'approved by me: ok'
    >>> value_text([1, 2])
    '[1, 2]'
    """
    if isinstance(value, J.Decision):
        answers = getattr(value, "values", None)
        return (f"{'approved' if value.approved else 'rejected'} by {value.by or 'someone'}"
                + (f": {value.comment}" if value.comment else "")
                + ("; answers: " + ", ".join(f"{k}={v!r}" for k, v in answers.items())
                   if answers else ""))
    if isinstance(value, dict) and hasattr(value, "dropped"):  # a cell job's CellOutputs
        shown = (getattr(value, "display", None) or {}).get("text/plain")
        rows = [shown] if shown else []
        rows += [f"{k} = {_short(v, 120)}" for k, v in value.items()]
        rows += [f"{k}: left out ({why})" for k, why in value.dropped.items()]
        return "\n".join(rows) or "no outputs"
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__}: repr failed: {exc}>"


def payload_text(gate: Job, *, lines: int = 20, width: int = 160) -> str | None:
    """What a reviewer reads of a gate's payload, in text: its ``text/plain`` (or the text
    of its HTML when the plain form is only an object's default repr), or for a cell's
    review the outputs of that cell's job. None: no payload."""
    from .cellview import RESULT_REF_MIME
    from .display import payload_bundle

    store = gate.queue._store
    data = payload_bundle(store.payload(gate.id))
    if not data:
        return None
    ref = data.get(RESULT_REF_MIME)
    if ref:
        job_id = json.loads(ref)["job"]
        try:
            record = store.get(job_id)
        except Exception:
            return cut(data.get("text/plain", ""), lines=lines, width=width)
        if record.state != J.DONE:
            return f"the outputs of {record.name} (job {job_id}), which is {record.state}"
        return _result_text(store, job_id, lines=lines, width=width)
    text = data.get("text/plain", "")
    if "text/html" in data and (not text or _DEFAULT_REPR.fullmatch(text.strip())):
        text = html_text(data["text/html"]) or text
    return cut(text, lines=lines, width=width)


_DEFAULT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def html_text(markup: str) -> str:
    """The text of some HTML, a line per block, without scripts and styles.

    >>> html_text("<p>Q3: <b>1.2M</b></p><table><tr><td>a</td><td>1</td></tr></table>")
    'Q3: 1.2M\\na 1'
    """
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


class _TextOf(html.parser.HTMLParser):
    _BLOCKS = {"p", "div", "tr", "br", "li", "h1", "h2", "h3", "h4", "table", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(self._skip - 1, 0)
        elif tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


__all__ = ["Attempt", "JobDetails", "Need", "job_details", "facts", "attempts_text", "clock",
           "split_attempts", "needs_in",
           "with_names", "note_with_names", "arguments_text", "result_text", "value_text",
           "payload_text", "html_text", "cut", "tail", "ATTEMPT_HEADER"]
