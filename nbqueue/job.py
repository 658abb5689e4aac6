"""The pure model of a job: states, the transition table, and records.

Nothing here touches the disk; the store applies these rules inside its
transactions. The facts of why a job waits (``Blocker``, ``WAIT_*``, ``BLOCK_*``) are
in ``nbqueue.waits`` and re-exported here; a ``JobRecord`` made with a blocker says why
in words (``nbqueue.blockers.describe``), in the reader's local time.

>>> can_move(READY, RUNNING)
True
>>> can_move(DONE, RUNNING)
False
>>> sorted(ENDED)
['cancelled', 'done', 'failed', 'rejected']
>>> State.DONE == "done" and DONE is State.DONE
True
"""

from __future__ import annotations

import dataclasses
import getpass
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from .blockers import describe

# the facts of a wait, re-exported (J.Blocker, J.WAIT_HELD, ...): see nbqueue.waits
from .waits import BLOCK_CHILDREN as BLOCK_CHILDREN
from .waits import BLOCK_NEEDS as BLOCK_NEEDS
from .waits import BLOCK_PAUSED as BLOCK_PAUSED
from .waits import BLOCK_RESOURCE as BLOCK_RESOURCE
from .waits import BLOCK_TIME as BLOCK_TIME
from .waits import WAIT_CAPACITY as WAIT_CAPACITY
from .waits import WAIT_CHILDREN as WAIT_CHILDREN
from .waits import WAIT_HELD as WAIT_HELD
from .waits import WAIT_KEPT as WAIT_KEPT
from .waits import WAIT_KINDS as WAIT_KINDS
from .waits import WAIT_NEEDS as WAIT_NEEDS
from .waits import WAIT_PAUSED as WAIT_PAUSED
from .waits import WAIT_RATE as WAIT_RATE
from .waits import WAIT_RESOURCE as WAIT_RESOURCE
from .waits import WAIT_RETRY as WAIT_RETRY
from .waits import WAIT_TIME as WAIT_TIME
from .waits import WAIT_UNAVAILABLE as WAIT_UNAVAILABLE
from .waits import Blocker as Blocker
from .waits import facts_json as facts_json

if TYPE_CHECKING:
    from .message import Function

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """``enum.StrEnum`` of Python 3.11: members are their strings, ``str()`` too."""

        __str__ = str.__str__
        __format__ = str.__format__


class _Text(StrEnum):
    """Words that are stored as text (SQLite columns, JSON) and compared in SQL: each
    member *is* its string (``State.DONE == "done"``, same hash), so rows written by any
    version read the same, and a value read back from the store is the plain string.
    The store binds them into SQL through an adapter (``store.backend``)."""

    def __repr__(self) -> str:
        # as the plain string shows: records, error messages and doctests read as before
        return repr(self._value_)


class State(_Text):
    """The states of a job (the transition table is ``TRANSITIONS``)."""

    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    REVIEW = "review"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class Kind(_Text):
    """The kinds of job."""

    CALL = "call"  # a function call (possibly a generator handler)
    TIMER = "timer"  # a durable sleep of a generator: ends by itself when its time comes
    GATE = "gate"  # a human review gate: never runs, waits in `review`
    MAP = "map"  # a chunked map: runs no code itself; its items run in chunks (chunking.py)
    CHUNK = "chunk"  # some items of a map, run as one task (internal: never listed)
    ITEM = "item"  # one call of a chunked map (a record built from the map's tables, no row)


class OutcomeKind(_Text):
    """What became of a claimed job (``Outcome.kind``)."""

    DONE = "done"  # it returned: ``result``
    FAILED = "failed"  # it raised (or could not run, or went over a limit): ``error``
    CANCELLED = "cancelled"  # killed on request (a cancel, a timeout of a map's item)
    RELEASED = "released"  # handed ahead, never started: back to ready, no attempt used
    YIELDED = "yielded"  # a generator reached a new yield: it waits for its children
    DIED = "died"  # its own worker process died under it: back to ready, a death counted


# The old names of the states and kinds: the members themselves.
WAITING = State.WAITING
READY = State.READY
RUNNING = State.RUNNING
REVIEW = State.REVIEW
DONE = State.DONE
FAILED = State.FAILED
CANCELLED = State.CANCELLED
REJECTED = State.REJECTED

STATES: tuple[State, ...] = tuple(State)
ENDED: frozenset[str] = frozenset({DONE, FAILED, CANCELLED, REJECTED})
ACTIVE: frozenset[str] = frozenset(STATES) - ENDED

CALL = Kind.CALL
TIMER = Kind.TIMER
GATE = Kind.GATE
MAP = Kind.MAP
CHUNK = Kind.CHUNK
ITEM = Kind.ITEM

# The allowed moves. Everything the store does to a job's state is one of these.
TRANSITIONS: dict[str, frozenset[State]] = {
    # time, needs, a busy or unavailable resource, a generator's children;
    # done: a generator's durable sleep (a timer) ends by itself when its time comes
    WAITING: frozenset({WAITING, READY, REVIEW, DONE, CANCELLED}),
    READY: frozenset({RUNNING, WAITING, CANCELLED}),
    # done/failed; waiting: retry backoff or a generator's yield; ready: put back
    # after its owner died or it was handed ahead but never started
    RUNNING: frozenset({DONE, FAILED, WAITING, READY, CANCELLED}),
    REVIEW: frozenset({DONE, REJECTED, CANCELLED}),
    DONE: frozenset(),
    # retry() or a resubmitted key: a new attempt under the same id
    FAILED: frozenset({READY, WAITING}),
    CANCELLED: frozenset({READY, WAITING}),
    REJECTED: frozenset(),
}


POISON_DEATHS = 3  # a job whose process died under it this many times fails as poisoned
LOG_CAP = 256 * 1024  # characters of stdout/stderr kept per job: the tail


def cap_log(text: str) -> str:
    """The tail of a job's output that is kept.

    >>> cap_log("short")
    'short'
    >>> cap_log("x" * (LOG_CAP + 10)).startswith("[... earlier output dropped ...]")
    True
    """
    if len(text) <= LOG_CAP:
        return text
    return "[... earlier output dropped ...]\n" + text[-LOG_CAP:]


def can_move(src: str, dst: str) -> bool:
    """Whether the transition table allows ``src -> dst``."""
    return dst in TRANSITIONS.get(src, frozenset())


def check_move(job_id: str, src: str, dst: str) -> None:
    """Raise ``ValueError`` naming the job if ``src -> dst`` is not allowed."""
    if not can_move(src, dst):
        raise ValueError(f"job {job_id} is {src}; it cannot become {dst}")


RETRY_DELAY_CAP = 10 * 365 * 86400.0  # the backoff stops doubling at ten years


def retry_delay_for(attempt: int, base: float) -> float:
    """Exponential backoff: the delay before attempt ``attempt + 1``, at most ten years
    (so that any number of retries gives a moment that can be stored and shown).

    >>> [retry_delay_for(n, 1.0) for n in (1, 2, 3)]
    [1.0, 2.0, 4.0]
    >>> retry_delay_for(5000, 1.0) == RETRY_DELAY_CAP
    True
    """
    return min(float(base) * 2.0 ** min(max(attempt - 1, 0), 128), RETRY_DELAY_CAP)


@dataclass(frozen=True)
class Options:
    """The option keywords of ``submit`` that the store keeps with a job."""

    name: str | None = None
    priority: int = 0
    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    resources: dict[str, int] = field(default_factory=dict)
    memory: int | None = None  # bytes a job may use (its worker's RSS), or no limit

    def __post_init__(self) -> None:
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise ValueError(f"priority={self.priority!r}: give an int (larger runs first)")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries={self.retries!r}: give an int >= 0")
        if not _positive_number(self.retry_delay, allow_zero=True):
            raise ValueError(f"retry_delay={self.retry_delay!r}: give seconds >= 0")
        if self.timeout is not None and not _positive_number(self.timeout):
            raise ValueError(f"timeout={self.timeout!r}: give seconds > 0, or None")
        if self.memory is not None and (isinstance(self.memory, bool) or not isinstance(
                self.memory, int) or self.memory < 1):
            raise ValueError(f"memory={self.memory!r}: give bytes >= 1, or None")
        object.__setattr__(self, "resources", normalize_resources(self.resources))

    def to_dict(self) -> dict[str, Any]:
        # what dataclasses.asdict gives, field order included, without its deep-copy
        # machinery (this runs once per stored job); no memory limit is left out, so the
        # rows of jobs without one are as they were before it existed
        out = {name: getattr(self, name) for name in _OPTION_FIELDS}
        out["resources"] = dict(self.resources)
        if self.memory is None:
            del out["memory"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        return cls(**{name: data[name] for name in _OPTION_FIELDS if name in data})


_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(Options))


def _positive_number(value: Any, *, allow_zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return value >= 0 if allow_zero else value > 0


def normalize_resources(resources: Any) -> dict[str, int]:
    """``["db"]`` -> ``{"db": 1}``; ``{"gpu": 2}`` stays; anything else is a ValueError.

    >>> normalize_resources(["db", "gpu"])
    {'db': 1, 'gpu': 1}
    >>> normalize_resources({"gpu": 2})
    {'gpu': 2}
    """
    if resources is None:
        return {}
    if isinstance(resources, str):
        resources = [resources]
    if isinstance(resources, dict):
        items = list(resources.items())
    elif isinstance(resources, (list, tuple, set, frozenset)):
        items = [(r, 1) for r in resources]
    else:
        raise ValueError(
            f"resources={resources!r}: give a list of names (['db']) or a dict of units ({{'gpu': 1}})"
        )
    out: dict[str, int] = {}
    for name, units in items:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"resources: {name!r} is not a resource name; use a non-empty string")
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"resources: {name}={units!r}: units must be an int >= 1")
        out[name] = out.get(name, 0) + units
    return out


@dataclass(frozen=True)
class RemoteError:
    """A failure as data: never the exception object, which may not unpickle."""

    exc_type: str
    exc_value: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException, traceback: str = "") -> RemoteError:
        return cls(type(exc).__qualname__, str(exc), traceback)

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> RemoteError:
        return cls(data["exc_type"], data["exc_value"], data.get("traceback", ""))


@dataclass(frozen=True)
class Decision:
    """A reviewer's decision on a gate: truthy when approved.

    An approved gate's result (``gate.result()``), and what ``yield nbqueue.review(...)``
    gives a generator handler (there, a rejected one too: falsy).

    Attributes
    ----------
    approved : bool
        Whether the gate was approved.
    comment : str
        The reviewer's comment.
    by : str
        The OS user who decided; ``"deadline"`` when the gate's deadline did.
    at : float
        When, as a POSIX timestamp.
    values : dict
        The answers to the gate's ``fields``, by name.

    Examples
    --------
    >>> bool(Decision(True, "ok")), bool(Decision(False, "no"))
    (True, False)
    """

    approved: bool
    comment: str = ""
    by: str = ""  # the reviewer's user name; "deadline" when the gate's deadline decided
    at: float = 0.0
    values: dict[str, Any] = field(default_factory=dict, hash=False)  # the answers to its fields

    def __bool__(self) -> bool:
        return self.approved

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a Decision pickled before ``values`` existed loads with none
        for name, value in {"values": {}, **state}.items():
            object.__setattr__(self, name, value)

    @classmethod
    def now(cls, approved: bool, comment: str = "", values: dict[str, Any] | None = None,
            ) -> Decision:
        return cls(bool(approved), comment or "", _os_user(), time.time(), dict(values or {}))


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a container uid)
        return "unknown"


@dataclass(frozen=True)
class JobRecord:
    """One job as the store last committed it."""

    id: str
    name: str
    state: str  # a State's value (read from the store: the plain string)
    kind: str = CALL
    key: str | None = None
    # what to show beside its state: why it waits (made from ``blocker`` when read, in
    # the reader's local time), why it ended, or what it does ("review", map progress)
    reason: str = ""
    blocker: Blocker | None = None  # what a waiting job waits for, as facts
    priority: int = 0
    created: float = 0.0
    started: float | None = None
    ended: float | None = None
    not_before: float | None = None
    attempt: int = 0
    deaths: int = 0
    parent: str | None = None
    options: Options = field(default_factory=Options)
    progress: dict[str, Any] | None = None
    error: RemoteError | None = None
    owner: str | None = None
    why: str = ""  # what ended the attempt before this one ("the kernel restarted while attempt 1 ran")

    def __post_init__(self) -> None:
        if self.blocker is not None:  # read now: the reader's clock and timezone
            object.__setattr__(self, "reason", describe(self.blocker))

    @property
    def has_ended(self) -> bool:
        """Whether it has ended (done, failed, cancelled or rejected); ``Job.done()``
        asks the store the same of a handle."""
        return self.state in ENDED

    @property
    def attempt_note(self) -> str:
        """Why this attempt is not the first: "attempt 2: the kernel restarted while
        attempt 1 ran"; empty for a first attempt, and while the job waits to run again
        (its reason says why then)."""
        if self.attempt < 2 or not self.why or self.state in (READY, WAITING):
            return ""
        return f"attempt {self.attempt}: {self.why}"

    @property
    def note(self) -> str:
        """What to show beside the state: the reason, else the attempt note."""
        reason = self.reason if self.reason != self.state else ""
        return reason or self.attempt_note

    @property
    def elapsed(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended or time.time()) - self.started


@dataclass(frozen=True)
class ResultRecord:
    """What ``result()`` needs of a job, read in one query (or handed by the dispatcher
    at commit): its state and, once it ended, its pickled result or its error. ``name``
    is None when handed (the dispatcher does not know it)."""

    id: str
    state: str
    name: str | None = None
    reason: str = ""
    error: RemoteError | None = None
    result: bytes | None = None

    @property
    def has_ended(self) -> bool:
        """Whether it has ended (done, failed, cancelled or rejected); ``Job.done()``
        asks the store the same of a handle."""
        return self.state in ENDED


@dataclass(frozen=True)
class NewJob:
    """A job to insert: built by the queue (or a worker's spawn), stored by ``submit_many``."""

    id: str
    name: str
    options: Options
    kind: Kind = CALL
    key: str | None = None
    function: Function | None = None
    args: bytes | None = None
    refs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    not_before: float | None = None
    parent: str | None = None
    step: int | None = None
    position: int | None = None
    payload: bytes | None = None
    gate: str | None = None  # a review gate's GateSpec as JSON (reviewing.py)


class ChildOutcome(NamedTuple):
    """How a child of a generator's yield ended, as its replay gets it: its pickled
    ``result`` (``error`` None: done, or a gate rejected with a decision), or the
    ``error`` the yield raises (``JobFailed``; ``JobCancelled`` when ``state`` is
    cancelled or rejected). A tuple: a journal goes to the worker with each claim."""

    child: str
    state: str
    result: bytes | None = None
    error: RemoteError | None = None


class Step(NamedTuple):
    """One journaled yield of a generator (a row of ``nbq_journal``, its children's
    endings read with it): what it yielded (``fingerprint``), how its children ended, in
    order, and when it first ran (what ``nbqueue.now()`` gives on replay)."""

    step: int
    fingerprint: str
    outcomes: list[ChildOutcome]
    at: float


@dataclass(frozen=True)
class Yielded:
    """A generator reached a new yield (``Outcome.yielded``): its step, what it yielded
    (``fingerprint``), the children to make and when the step ran."""

    step: int
    fingerprint: str
    children: tuple[NewJob, ...]
    at: float


_NO_OPTIONS = Options()  # frozen: one default shared by every worker-side Task


@dataclass  # not frozen: one is made per claim, on the dispatcher's hot path
class Task:
    """A claimed job: what the store hands a dispatcher (``Store.claim``) and the
    dispatcher a worker (``runtime.execute``), with everything the worker needs.

    The first ten fields go to the worker (``runtime.task_fields``: a worker's task has
    the defaults of the others); ``endpoint`` is set by the dispatcher that hands it."""

    id: str
    claim: int  # the fencing token of this attempt: its outcome commits only under it
    name: str
    function: Function
    args: bytes  # CHUNK: the items of a map's chunk (chunking.py)
    ref_results: dict[str, bytes] = field(default_factory=dict)
    journal: list[Step] = field(default_factory=list)  # a generator's yields so far
    endpoint: Any = None  # the dispatcher's live channel (progress, output)
    memory: int | None = None  # bytes the job may use (a local worker enforces it)
    kind: str = CALL  # a Kind: CALL, or CHUNK
    attempt: int = 0
    options: Options = _NO_OPTIONS
    handed: bool = False  # claimed ahead, to start once its slot's running job ends


Claimed = Task  # what the store calls it


@dataclass  # not frozen: one is made per job, in the worker and in the dispatcher
class Outcome:
    """What became of a claimed job (its ``kind``: see ``OutcomeKind``); ``complete``
    commits a batch of them at once. ``died``: ``error`` says how its worker died."""

    id: str
    claim: int
    kind: OutcomeKind
    result: bytes | None = None
    error: RemoteError | None = None
    retryable: bool = True
    spawned: tuple[NewJob, ...] = ()
    yielded: Yielded | None = None
    log: str | None = None
    started: float | None = None
    # the worker ended with this outcome (it stopped its job over its memory limit and
    # killed itself): its slot starts another, and the jobs handed to it behind go back
    worker_ended: bool = False


@dataclass(frozen=True)
class NewMap:
    """A chunked map to insert (``Store.submit_map``): its job (kind ``map``), its items'
    arguments as ``(start, n, pickled list of argument tuples)`` blocks, and its chunk
    size (None: automatic)."""

    job: NewJob
    total: int
    blocks: tuple[tuple[int, int, bytes], ...]
    chunksize: int | None = None
