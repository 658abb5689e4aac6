"""The pieces of ``%%enqueue`` that hold no magics state: its records, argument
conversion, the inputs a cell takes, and its variables coming back.

``magics`` holds the ``Magics`` subclass and calls these; everything here
works on plain values (a namespace dict, the queue, the argparse result).
"""

from __future__ import annotations

import builtins
import keyword
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from IPython.core.error import UsageError

from .. import job as J
from ..arguments import (
    check_count,
    check_line,
    check_memory,
    check_name,
    check_priority,
    check_seconds,
)
from ..cellrun import CellOutputs
from ..cellview import RESULT_REF_MIME
from ..errors import InputNotDefined, InvalidArgument, NoSuchJob
from ..handle import Job
from ..queue import Queue
from .cellsource import travelling_value, value_digest

MISSING = object()  # a name the notebook did not define


@dataclass
class CellJob:
    """A cell job submitted from this notebook session.

    ``seq`` orders the submits of the session; ``before`` holds what the notebook's
    names of ``outputs`` were at the submit (``MISSING`` if undefined): a name bound to
    something else since then was assigned after the submit and is kept.
    """

    name: str
    job: Job
    gate: Job | None
    outputs: list[str]
    status: Any = None  # its CellStatus
    pending: bool = True  # its outcome is awaited (running, waiting, in review)
    settled: bool = False  # its variables came back, or never will (rejected)
    bound: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    seq: int = 0
    before: dict[str, Any] = field(default_factory=dict)


@dataclass
class Binding:
    """A notebook variable that came back from a cell job, as it came back."""

    job_id: str
    ident: int
    digest: Any = field(default=None)
    seq: int = 0  # the ``CellJob.seq`` of the job it came from


class ResultRef:
    """A review payload standing for the outputs of a job that has not run yet."""

    def __init__(self, job_id: str, name: str) -> None:
        self.job_id, self.name = job_id, name

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        import json

        return {"text/plain": f"the outputs of cell {self.name} (job {self.job_id})",
                RESULT_REF_MIME: json.dumps({"job": self.job_id})}


class Note:
    """A short message shown in the cell (text and HTML)."""

    def __init__(self, text: str, error: bool = False) -> None:
        self.text, self.error = text, error

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        import html

        style = "color:#c62828" if self.error else "color:#555"
        return f'<pre class="nbq-note" style="{style}">{html.escape(self.text)}</pre>'


# -- arguments ----------------------------------------------------------------------------------


def unquote(text: str | None) -> str | None:
    """``text`` without one pair of surrounding quotes.

    >>> unquote('"in 2h"'), unquote("a,b"), unquote(None)
    ('in 2h', 'a,b', None)
    """
    # IPython splits magic arguments keeping the quotes: --after "in 2h" -> '"in 2h"'
    if text and len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def names(text: str, flag: str, identifiers: bool = True) -> list[str]:
    """The comma-separated names of a flag; a ``UsageError`` if there are none or, with
    ``identifiers``, if one is not a variable name."""
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found:
        raise UsageError(f"%%enqueue {flag}: give comma-separated names")
    if identifiers:
        bad = [n for n in found if not n.isidentifier() or keyword.iskeyword(n)]
        if bad:
            raise UsageError(f"%%enqueue {flag} {', '.join(bad)}: not a variable name")
    return found


def job_name(args: Any, cell: str) -> str:
    """The job's name: the NAME argument (a ``UsageError`` if it is empty or holds
    control characters), else ``cell-`` and a hash of the cell."""
    if args.name is None:
        return "cell-" + value_digest(cell)[1][:6]
    try:
        return check_line(args.name, "NAME")
    except InvalidArgument as exc:
        raise UsageError(f"%%enqueue {exc}") from None


def enqueue_options(args: Any, resolve: Callable[[str], Job]) -> dict[str, Any]:
    """The submit options of ``%%enqueue`` arguments; ``resolve`` turns a ``--needs``
    name into its job. A ``UsageError`` for anything that is not valid."""
    from ..times import parse_after

    if args.after is not None:
        try:
            parse_after(args.after)
        except ValueError as exc:
            raise UsageError(f"%%enqueue --after {args.after!r}: {exc}") from None
    try:
        check_count(args.retries, "--retries", low=0)
        check_priority(args.priority, "--priority")
        if args.timeout is not None:
            check_seconds(args.timeout, "--timeout")
        memory = check_memory(args.memory, "--memory")
    except InvalidArgument as exc:
        raise UsageError(f"%%enqueue {exc}") from None
    resources: dict[str, int] = {}
    given = names(args.resources, "--resources", identifiers=False) \
        if args.resources is not None else []
    for item in given:
        res, _, units = (part.strip() for part in item.partition("="))
        if units and not units.isdigit():
            raise UsageError(f"%%enqueue --resources {item!r}: give name or name=units")
        try:
            check_name(res, "--resources")
            resources[res] = check_count(int(units or 1), f"--resources {res}")
        except InvalidArgument as exc:
            raise UsageError(f"%%enqueue {exc}: give name or name=units") from None
    needs = [resolve(n).id for n in names(args.needs, "--needs", identifiers=False)] \
        if args.needs is not None else []
    return {"after": args.after, "resources": resources, "priority": args.priority,
            "retries": args.retries, "timeout": args.timeout, "needs": needs,
            **({"memory": memory} if memory is not None else {})}


# -- the inputs of a cell -----------------------------------------------------------------------


def check_defined(cell: str, reads: list[str], assigns: list[str], ns: Mapping[str, Any],
                  cells: Mapping[str, CellJob]) -> None:
    """Raise ``InputNotDefined`` for the first name the cell reads that nothing defines:
    not the notebook, not a builtin, not the cell itself, not a pending cell job."""
    for var in reads:
        if (var in ns or var in assigns or hasattr(builtins, var)
                or assigner(cells, var) is not None):
            continue
        raise InputNotDefined(
            f"%%enqueue {cell}: name {var!r} is not defined: the cell reads it, but the "
            "notebook does not define it and no pending %%enqueue cell assigns it. Run the "
            "cell that defines it first (after a kernel restart, run the cells above "
            "again); nothing was submitted")


def cell_inputs(queue: Queue, reads: list[str], needs: list[str], ns: Mapping[str, Any],
                hidden: Mapping[str, Any], cells: Mapping[str, CellJob],
                bound: Mapping[str, Binding]) -> tuple[dict[str, Any], list[str], list[str]]:
    """The values the cell reads, the names taken from pending cell jobs, the needs."""
    inputs: dict[str, Any] = {}
    from_jobs: list[str] = []
    needs = list(needs)
    for var in reads:
        pending = assigner(cells, var)
        if pending is not None:
            inputs[var] = pending.job
            from_jobs.append(var)
            if pending.gate is not None:
                needs.append(pending.gate.id)
            continue
        if var not in ns or (var in hidden and ns[var] is hidden[var]):
            continue  # a builtin, or defined by the cell itself later on
        value = ns[var]
        binding = bound.get(var)
        if (binding is not None and binding.ident == id(value)
                and _kept(queue, binding.job_id)
                and value_digest(value) == binding.digest):
            # unchanged since it came back: refer to its job, so that the key is the
            # same whether that job had finished when this cell was submitted or not
            inputs[var] = Job(queue, binding.job_id)
            from_jobs.append(var)
            continue
        inputs[var] = travelling_value(value)
    return inputs, from_jobs, list(dict.fromkeys(needs))


def assigner(cells: Mapping[str, CellJob], var: str) -> CellJob | None:
    """The newest pending cell job that assigns ``var``."""
    for entry in reversed(cells.values()):
        if entry.pending and var in entry.outputs:
            return entry
    return None


def unpicklable(inputs: dict[str, Any]) -> str | None:
    """A message naming the inputs that cannot be pickled, or None."""
    import cloudpickle

    bad = []
    for var, value in inputs.items():
        try:
            cloudpickle.dumps(value)
        except Exception as exc:
            bad.append(f"{var} ({type(value).__name__}: {exc})")
    if not bad:
        return None
    return ("%%enqueue: the cell reads notebook variables that cannot be sent to a worker: "
            + "; ".join(bad) + ". Create them inside the cell instead; nothing was submitted.")


# -- variables coming back ----------------------------------------------------------------------


def collect(entries: list[CellJob], ns: dict[str, Any], bound: dict[str, Binding]) -> None:
    """Bind the variables of the finished cell jobs among ``entries`` into ``ns``.

    A job that failed or was cancelled stops being awaited, but is looked at again: a
    retry made anywhere (the panel, the CLI, another process) makes it awaited again,
    with its review gate re-armed.
    """
    for entry in entries:
        if entry.settled:
            continue
        state = entry.job.state
        if state in (J.FAILED, J.CANCELLED):
            entry.pending = False
            continue
        if rearm_gate(entry) and entry.status is not None:
            entry.status.follow(entry.gate)
        entry.pending = True
        if state == J.DONE:
            gate_state = entry.gate.state if entry.gate is not None else J.DONE
            if gate_state == J.DONE:
                bind(entry, ns, bound)
            elif gate_state in J.ENDED:
                entry.pending, entry.settled = False, True


def rearm_gate(entry: CellJob) -> bool:
    """A cell job that runs again after its failure cancelled its review gate gets the
    gate back (the same gate, a new attempt); a gate cancelled by hand stays cancelled."""
    gate = entry.gate
    if gate is None:
        return False
    record = gate.record()
    if record.state != J.CANCELLED or not record.reason.startswith(f"needs job {entry.job.id},"):
        return False
    if entry.job.state in (J.FAILED, J.CANCELLED):
        return False
    entry.gate = entry.job.queue.review(f"Review {entry.name}",
                                        payload=ResultRef(entry.job.id, entry.name),
                                        needs=[entry.job])
    return True


def rebound(var: str, entry: CellJob, ns: Mapping[str, Any], bound: Mapping[str, Binding]) -> bool:
    """Whether the notebook's ``var`` was assigned after ``entry`` was submitted, by a
    person or by a cell job submitted later: then it keeps its value."""
    current = ns.get(var, MISSING)
    if current is MISSING or entry.before.get(var, MISSING) is current:
        return False
    binding = bound.get(var)
    if (binding is not None and binding.ident == id(current)
            and binding.digest == value_digest(current)):
        return binding.seq > entry.seq  # a cell job's value: the newer submit wins
    return True


def bind(entry: CellJob, ns: dict[str, Any], bound: dict[str, Binding]) -> None:
    """Put the outputs of a finished cell job into ``ns`` and remember them in ``bound``;
    names assigned in the notebook since the submit keep their values (``entry.kept``)."""
    outputs = entry.job.result()
    entry.pending, entry.settled = False, True
    if not isinstance(outputs, CellOutputs):
        return  # an adopted job that was not a cell
    entry.bound, entry.kept = [], []
    for var, value in outputs.items():
        if rebound(var, entry, ns, bound):
            entry.kept.append(var)
            continue
        ns[var] = value
        bound[var] = Binding(entry.job.id, id(value), value_digest(value), entry.seq)
        entry.bound.append(var)
    entry.before = {}  # the values it held for the comparison may go
    dropped = getattr(outputs, "dropped", {})
    if entry.status is not None:
        entry.status.mark_bound(entry.bound, dropped, entry.kept, entry.name)
    if dropped:
        warnings.warn(
            f"cell {entry.name}: {', '.join(dropped)} cannot be pickled, so "
            f"{'it was' if len(dropped) == 1 else 'they were'} left out of the outputs "
            f"({'; '.join(dropped.values())}); the job succeeded", UserWarning, stacklevel=2)


def label(job: Job) -> str:
    """One line on a job: its name, id, state and reason."""
    try:
        record = job.record()
    except NoSuchJob:
        return f"job {job.id} (forgotten)"
    state = "in review" if record.state == J.REVIEW else record.state
    text = f"{record.name} (job {record.id}) is {state}"
    return text + (f": {record.reason}" if record.reason and record.reason != record.state else "")


def _kept(queue: Queue, job_id: str) -> bool:
    """Whether the job is still in the queue (not forgotten)."""
    try:
        queue.job(job_id)
    except NoSuchJob:
        return False
    return True
