"""Reviews as a reviewer sees them: the answers a gate asks for, its deadline, its page.

``Field`` is one answer a reviewer gives (a number, an integer, a text, a choice, a
yes/no), ``GateSpec`` what a gate asks for and until when (stored with the gate as
JSON), ``Review`` a gate as the panel, the review page, the CLI and the notifiers show
it. ``parse_values`` checks a reviewer's answers against a gate's fields: the same
check whether they come from Python, the panel's card, the page or
``nbqueue approve DIR GATE --set name=value``.

Pure: nothing here imports IPython, ipywidgets or tornado, nor reads a queue; the
gates of a queue are read by ``nbqueue.reviews`` (``pending_reviews``, ``review_of``).

>>> fields = fields_of({"threshold": 0.5, "region": ["north", "south"], "note": str})
>>> [(f.name, f.kind, f.default) for f in fields]
[('threshold', 'number', 0.5), ('region', 'choice', 'north'), ('note', 'text', None)]
>>> parse_values(fields, {"threshold": "0.7", "note": "ok"})
{'threshold': 0.7, 'region': 'north', 'note': 'ok'}
>>> parse_values(fields, {"threshold": "high", "note": "ok"})
Traceback (most recent call last):
    ...
nbqueue.errors.InvalidAnswer: field 'threshold': 'high' is not a number; give a number such as 0.5
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import job as J
from .errors import InvalidAnswer, InvalidArgument

if TYPE_CHECKING:
    from .store.gates import GateRow

KINDS = ("number", "integer", "text", "choice", "bool")
ON_DEADLINE = ("reject", "approve", "keep")
_TRUE = ("true", "yes", "y", "1", "on")
_FALSE = ("false", "no", "n", "0", "off")


@dataclass(frozen=True)
class Field:
    """One answer a reviewer gives when deciding a gate.

    Parameters
    ----------
    name : str
        What the answer is called in ``Decision.values`` (and in ``--set name=value``).
    kind : str
        ``"number"`` (a float), ``"integer"``, ``"text"``, ``"choice"`` (one of
        ``choices``) or ``"bool"``.
    default : optional
        The value used when the reviewer gives none. ``None`` makes the field
        required: approving without it is an ``InvalidAnswer``. (A rejection asks for
        no answers.)
    choices : tuple of str
        For ``"choice"``: the values to pick from.
    """

    name: str
    kind: str
    default: Any = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip() or "=" in self.name:
            raise InvalidArgument(f"field name {self.name!r}: give a non-empty name "
                                  "without '='")
        if self.kind not in KINDS:
            raise InvalidArgument(f"field {self.name!r}: kind={self.kind!r}; one of "
                                  f"{', '.join(KINDS)}")
        choices = tuple(self.choices)
        object.__setattr__(self, "choices", choices)
        if self.kind == "choice":
            if not choices or not all(isinstance(c, str) and c for c in choices) \
                    or len(set(choices)) != len(choices):
                raise InvalidArgument(f"field {self.name!r}: a choice needs distinct "
                                      f"non-empty strings to pick from, got {list(choices)!r}")
        elif choices:
            raise InvalidArgument(f"field {self.name!r}: choices are for kind='choice'")
        if self.default is not None:
            object.__setattr__(self, "default", self.parse(self.default))

    @property
    def required(self) -> bool:
        """Whether approving needs a value for it (it has no default)."""
        return self.default is None

    def parse(self, raw: Any) -> Any:
        """The value of this field given as ``raw`` (a string as typed, or a value).

        Raises ``InvalidAnswer`` (a ``ValueError``) naming the field when ``raw`` does
        not fit its kind.

        >>> Field("n", "integer").parse(" 3 "), Field("ok", "bool").parse("yes")
        (3, True)
        >>> Field("x", "number").parse(True)
        Traceback (most recent call last):
            ...
        nbqueue.errors.InvalidAnswer: field 'x': True is not a number; give a number such as 0.5
        """
        kind = self.kind
        if kind == "number":
            value: Any = raw
            if isinstance(raw, str):
                try:
                    value = float(raw.strip())
                except ValueError:
                    raise self._bad(raw, "is not a number; give a number such as 0.5") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._bad(raw, "is not a number; give a number such as 0.5")
            if not math.isfinite(value):
                raise self._bad(raw, "is not a finite number")
            return float(value)
        if kind == "integer":
            value = raw
            if isinstance(raw, str):
                try:
                    value = int(raw.strip())
                except ValueError:
                    raise self._bad(raw, "is not a whole number; give one such as 3") from None
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._bad(raw, "is not a whole number; give one such as 3")
            return value
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            if isinstance(raw, str) and raw.strip().lower() in _TRUE + _FALSE:
                return raw.strip().lower() in _TRUE
            raise self._bad(raw, "is not yes or no; give true or false")
        if kind == "choice":
            if isinstance(raw, str) and raw.strip() in self.choices:
                return raw.strip()
            raise self._bad(raw, f"is not one of {', '.join(self.choices)}")
        if not isinstance(raw, str):
            raise self._bad(raw, "is not a text")
        return raw

    def _bad(self, raw: Any, why: str) -> InvalidAnswer:
        return InvalidAnswer(f"field {self.name!r}: {raw!r} {why}")

    def describe(self) -> str:
        """``"threshold (number, default 0.5)"``, ``"region (north|south, default north)"``,
        ``"note (text, required)"``."""
        what = "|".join(self.choices) if self.kind == "choice" else self.kind
        return f"{self.name} ({what}, " + ("required)" if self.required
                                            else f"default {self.default!r})")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "default": self.default,
                "choices": list(self.choices)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Field:
        return cls(data["name"], data["kind"], data.get("default"),
                   tuple(data.get("choices") or ()))


def field_of(name: str, spec: Any) -> Field:
    """A field from the short forms of ``fields=``: a default value (its type gives the
    kind: ``0.5`` a number, ``3`` an integer, ``True`` a yes/no, ``"text"`` a text), a
    list of strings (a choice, the first by default), a type (``str``, ``float``,
    ``int``: required; ``bool``: default False), or a ``Field``.

    >>> field_of("n", int), field_of("ok", bool)
    (Field(name='n', kind='integer', default=None, choices=()), Field(name='ok', kind='bool', default=False, choices=()))
    """
    if isinstance(spec, Field):
        if spec.name != name:
            raise InvalidArgument(f"fields: the Field under {name!r} is named {spec.name!r}")
        return spec
    if spec is bool:
        return Field(name, "bool", False)
    types = {float: "number", int: "integer", str: "text"}
    if isinstance(spec, type) and spec in types:
        return Field(name, types[spec])
    if isinstance(spec, bool):
        return Field(name, "bool", spec)
    if isinstance(spec, int):
        return Field(name, "integer", spec)
    if isinstance(spec, float):
        return Field(name, "number", spec)
    if isinstance(spec, str):
        return Field(name, "text", spec)
    if isinstance(spec, (list, tuple)) and spec:
        return Field(name, "choice", spec[0], tuple(spec))
    raise InvalidArgument(
        f"fields: {name}={spec!r} is not a field; give a default value (0.5, 3, True, "
        "'text'), a list of choices (['north', 'south']), a type (str, float, int, bool) "
        "or nbqueue.reviewing.Field(...)")


def fields_of(spec: Mapping[str, Any] | Sequence[Field] | None) -> tuple[Field, ...]:
    """The fields of ``review(fields=...)``: a dict of name -> short form (see
    ``field_of``), or a sequence of ``Field``."""
    if spec is None:
        return ()
    if isinstance(spec, Mapping):
        return tuple(field_of(str(name), value) for name, value in spec.items())
    if isinstance(spec, (list, tuple)) and all(isinstance(f, Field) for f in spec):
        names = [f.name for f in spec]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"fields: a name appears twice in {names}")
        return tuple(spec)
    raise InvalidArgument(f"fields={spec!r}: give a dict such as "
                          "{'threshold': 0.5, 'region': ['north', 'south'], 'note': str}")


def parse_values(fields: Sequence[Field], raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The answers to ``fields`` from ``raw`` (strings as typed, or values), in field
    order; a field left out (or given ``None``, or an empty string for a kind other
    than text) takes its default.

    Raises ``InvalidAnswer`` (a ``ValueError``) naming the field for a value that does
    not fit, a required field without one, or a name the gate does not ask for.
    """
    raw = dict(raw or {})
    known = {f.name for f in fields}
    unknown = [name for name in raw if name not in known]
    if unknown:
        asks = ", ".join(f.describe() for f in fields) or "no answers"
        raise InvalidAnswer(f"field {unknown[0]!r}: this gate does not ask for it; it asks "
                            f"for {asks}")
    out: dict[str, Any] = {}
    for f in fields:
        value = raw.get(f.name)
        if value is None or (f.kind != "text" and isinstance(value, str) and not value.strip()):
            if f.required:
                what = "|".join(f.choices) if f.kind == "choice" else f.kind
                raise InvalidAnswer(f"field {f.name!r} needs a value ({what}, no default); "
                                    f"give it, e.g. --set {f.name}=...")
            out[f.name] = f.default
        else:
            out[f.name] = f.parse(value)
    return out


# -- what a gate asks for, stored with it ----------------------------------------------------


@dataclass(frozen=True)
class GateSpec:
    """What a gate asks for and until when, as stored with it (JSON).

    ``deadline_at`` is a moment; ``deadline_in`` seconds counted from when the gate
    enters review (after its needs). ``on_deadline``: what happens when the deadline
    passes with no decision: ``"keep"`` (the default: it keeps waiting, marked overdue,
    and a reminder says the deadline passed), ``"reject"``, or ``"approve"`` (with the
    fields' defaults).
    """

    title: str
    fields: tuple[Field, ...] = ()
    deadline_at: float | None = None
    deadline_in: float | None = None
    on_deadline: str = "keep"
    remind_every: float | None = None

    def deadline_from(self, entered: float) -> float | None:
        """The deadline of a gate that entered review at ``entered``."""
        if self.deadline_in is not None:
            return entered + self.deadline_in
        return self.deadline_at

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["fields"] = [f.to_dict() for f in self.fields]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> GateSpec:
        data = json.loads(text)
        data["fields"] = tuple(Field.from_dict(f) for f in data.get("fields") or ())
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def make_spec(title: str, *, fields: Any = None, deadline: Any = None,
              on_deadline: str | None = None, remind_every: Any = None,
              now: float | None = None) -> GateSpec:
    """Check the review options of ``q.review``/``nbqueue.review`` and build the spec.

    ``deadline``: seconds or a ``timedelta`` (counted from when the gate enters
    review), or a moment in any form of ``after=`` (``"tomorrow 09:00"``, ``"in 2h"``,
    a ``datetime``). ``remind_every``: seconds, a ``timedelta`` or ``"2h"``/``"30m"``.
    Raises ``InvalidArgument`` naming the option.
    """
    from .times import parse_after

    now = time.time() if now is None else now
    parsed = fields_of(fields)
    deadline_at = deadline_in = None
    if isinstance(deadline, timedelta):
        deadline = deadline.total_seconds()
    if isinstance(deadline, bool):
        raise InvalidArgument(f"deadline={deadline!r}: give seconds, a timedelta or a moment "
                              "such as 'tomorrow 09:00'")
    if isinstance(deadline, (int, float)):
        if not math.isfinite(deadline) or deadline < 0:
            raise InvalidArgument(f"deadline={deadline!r}: give seconds >= 0")
        deadline_in = float(deadline)
    elif deadline is not None:
        try:
            deadline_at = parse_after(deadline, now=now)
        except ValueError as exc:
            raise InvalidArgument(f"deadline: {exc}".replace("after=", "deadline=")) from None
    if on_deadline is None:
        on_deadline = "keep"
    elif deadline is None:
        raise InvalidArgument(f"on_deadline={on_deadline!r} without a deadline: give "
                              "deadline= too")
    if on_deadline not in ON_DEADLINE:
        raise InvalidArgument(f"on_deadline={on_deadline!r}: one of {', '.join(ON_DEADLINE)}")
    if on_deadline == "approve":
        required = [f.name for f in parsed if f.required]
        if required:
            raise InvalidArgument(
                f"on_deadline='approve' approves with the fields' defaults, but field "
                f"{required[0]!r} has none: give it a default, or use on_deadline='reject'")
    return GateSpec(title=title, fields=parsed, deadline_at=deadline_at,
                    deadline_in=deadline_in, on_deadline=on_deadline,
                    remind_every=_interval(remind_every))


def _interval(value: Any) -> float | None:
    """``remind_every`` in seconds (None: no reminders)."""
    from .times import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"remind_every={value!r}: give seconds > 0, a timedelta, or "
                              "a duration such as '2h' or '30m'") from None


# -- a gate as a reviewer sees it ------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    """A gate as a reviewer sees it (``nbqueue.reviews``: ``pending_reviews``, ``review_of``).

    ``deadline`` is a Unix time: set once the gate is in review (or, for a moment given
    as the deadline, from the start); None without one. ``payload_bundle`` is the
    payload's display bundle, mime type -> data (``text/plain``, ``text/html``,
    ``image/png`` in base64, ``image/svg+xml``, ``text/markdown``); empty without one.
    """

    id: str
    title: str
    state: str
    name: str
    created: float
    fields: tuple[Field, ...]
    deadline: float | None
    on_deadline: str
    remind_every: float | None
    payload_bundle: dict[str, str]
    reason: str = ""
    parent: str | None = None
    overdue: bool = False  # its deadline passed and it was kept waiting (on_deadline="keep")

    def time_left(self, now: float | None = None) -> float | None:
        """Seconds until the deadline (negative once it passed); None without one."""
        if self.deadline is None:
            return None
        return self.deadline - (time.time() if now is None else now)

    def deadline_text(self, now: float | None = None) -> str:
        """``"2h 5m left (then rejected)"``, ``"overdue by 3m"``; empty without a deadline."""
        left = self.time_left(now)
        if left is None:
            return ""
        if left < 0 or self.overdue:
            return f"overdue by {duration_text(max(-left, 0.0))}"
        then = {"reject": "rejected", "approve": "approved", "keep": "kept waiting"}
        return f"{duration_text(left)} left (then {then.get(self.on_deadline, self.on_deadline)})"


def duration_text(seconds: float) -> str:
    """A short duration: ``"45s"``, ``"12m"``, ``"2h 5m"``, ``"3d 4h"``.

    >>> [duration_text(s) for s in (45, 720, 7500, 273600)]
    ['45s', '12m', '2h 5m', '3d 4h']
    """
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def review_link(base: str, queue: str, gate_id: str) -> str:
    """The address of a gate on the review page served at ``base`` (a Jupyter server,
    ``http://127.0.0.1:8888/``, or ``nbqueue serve``'s address).

    >>> review_link("http://127.0.0.1:8888/", "/home/me/runs/q", "1f3a9c2e07")
    'http://127.0.0.1:8888/nbqueue/?queue=/home/me/runs/q#gate-1f3a9c2e07'
    """
    return f"{base.rstrip('/')}/nbqueue/?queue={quote(str(queue), safe='/')}#gate-{gate_id}"


def review_from(record: J.JobRecord, row: GateRow | None,
                payload_bundle: dict[str, str]) -> Review:
    """A gate as a reviewer sees it, from its record, its gate row (None for a gate an
    older nbqueue made) and its payload's display bundle; the reads are the caller's
    (``nbqueue.reviews``; a notifier's delivery)."""
    spec = row.spec if row is not None else GateSpec(title=record.name)
    deadline = row.deadline if row is not None and row.deadline is not None else (
        spec.deadline_at)
    return Review(
        id=record.id, title=spec.title, state=record.state, name=record.name,
        created=record.created, fields=spec.fields,
        deadline=deadline if (spec.deadline_at, spec.deadline_in) != (None, None) else None,
        on_deadline=spec.on_deadline, remind_every=spec.remind_every,
        payload_bundle=payload_bundle, reason=record.reason, parent=record.parent,
        overdue=bool(row is not None and row.overdue))


__all__ = ["Field", "GateSpec", "Review", "KINDS", "ON_DEADLINE", "field_of", "fields_of",
           "parse_values", "make_spec", "review_from", "review_link",
           "duration_text"]
