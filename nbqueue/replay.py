"""A generator handler's replay, in the worker that runs it.

A generator cannot be pickled, so it is rebuilt by replay: the worker runs it from the
start, sending the journaled results of earlier yields (``ctx.task.journal``), and
returns at the first new yield with the children to make (``Outcome`` of kind
``yielded``). Each yield's ``fingerprint`` is stored in its journal row and compared
at every replay: a handler that yields something else is stopped (``NonDeterminism``).
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import job as J
from .errors import JobCancelled, JobFailed, NonDeterminism
from .job import Outcome
from .message import build_job, content_key
from .workflow import Call, Review, Sleep

if TYPE_CHECKING:
    from .jobrun import JobContext


def drive(ctx: JobContext, fn: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any], started: float) -> Outcome:
    """Replay a generator handler against its journal up to its first new yield."""
    journal = ctx.task.journal
    gen = fn(*args, **kwargs)
    step, send, throw = 0, None, None
    enter_step(ctx, journal, step)
    while True:
        try:
            yielded = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return ctx.finish(stop.value, started)
        items, single = normalize(ctx, yielded, step)
        fingerprint = fingerprint_of(items)
        if step >= len(journal):
            children = children_of(ctx, items, step)
            return Outcome(ctx.task.id, ctx.task.claim, J.OutcomeKind.YIELDED,
                           spawned=tuple(ctx.spawned),
                           yielded=J.Yielded(step, fingerprint, tuple(children), ctx.now),
                           log=ctx.final_log(), started=started)
        recorded = journal[step]
        if recorded.fingerprint != fingerprint:
            raise NonDeterminism(
                f"job {ctx.task.id}: at yield #{step} the handler yielded {describe(items)}, "
                "but the journal recorded something else. Code between yields is replayed and "
                "must be deterministic: move randomness, clocks and I/O into child jobs, and use "
                "nbqueue.now() for the time."
            )
        send, throw = results(recorded.outcomes, single)
        step += 1
        enter_step(ctx, journal, step)


def enter_step(ctx: JobContext, journal: list[J.Step], step: int) -> None:
    ctx.replaying = step < len(journal)
    ctx.now = journal[step].at if ctx.replaying else time.time()
    ctx.spawn_prefix = f"{ctx.task.id}.{step}.s"
    if not ctx.replaying:
        ctx.spawned.clear()


def normalize(ctx: JobContext, yielded: Any, step: int) -> tuple[list[Any], bool]:
    single = isinstance(yielded, (Call, Review, Sleep))
    items = [yielded] if single else list(yielded) if isinstance(yielded, (list, tuple)) else None
    if items is None or not all(isinstance(i, (Call, Review, Sleep)) for i in items):
        raise TypeError(
            f"job {ctx.task.id}: yield #{step} gave {type(yielded).__name__}; a handler may "
            "yield nbqueue.call(...), a list of them, nbqueue.review(...) or nbqueue.sleep(...)"
        )
    return items, single


def fingerprint_of(items: list[Any]) -> str:
    # stored in each journal row and compared at every replay: what is hashed never
    # changes (plain strings as tags, never enum members, which pickle differently), or
    # the generators of a queue written before would fail their replay as NonDeterminism
    parts: list[tuple[str, ...]] = []
    for item in items:
        if isinstance(item, Call):
            # content_key hashes equal values equally in every process (sets included,
            # whose pickles follow the per-process string hash order)
            label = getattr(item.fn, "__qualname__", repr(item.fn))
            parts.append(("call", label, content_key("", item.args, item.kwargs, ())))
        elif isinstance(item, Review):
            parts.append(("review", item.title))
        else:
            parts.append(("sleep", repr(item.until)))
    return hashlib.blake2b(pickle.dumps(parts), digest_size=12).hexdigest()


def describe(items: list[Any]) -> str:
    names = []
    for item in items[:3]:
        if isinstance(item, Call):
            names.append(f"call({getattr(item.fn, '__name__', item.fn)!s}, ...)")
        elif isinstance(item, Review):
            names.append(f"review({item.title!r})")
        else:
            names.append(f"sleep({item.until!r})")
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return "[" + ", ".join(names) + more + "]"


def children_of(ctx: JobContext, items: list[Any], step: int) -> list[J.NewJob]:
    from .reviewing import make_spec
    from .times import parse_after

    out = []
    for position, item in enumerate(items):
        job_id = f"{ctx.task.id}.{step}.{position}"
        common: dict[str, Any] = {"job_id": job_id, "now": ctx.now, "parent": ctx.task.id, "step": step,
                  "position": position}
        if isinstance(item, Call):
            opts = {"key": None, **item.opts}
            out.append(build_job(item.fn, item.args, item.kwargs, opts, **common))
        elif isinstance(item, Review):
            spec = make_spec(item.title, now=ctx.now, **item.review_opts)
            name = item.opts.get("name") or item.title
            gate_options = J.Options(name=name, priority=item.opts.get("priority", 0))
            out.append(J.NewJob(id=job_id, name=name, options=gate_options,
                                kind=J.GATE, payload=item.payload, parent=ctx.task.id, step=step,
                                position=position, gate=spec.to_json()))
        else:
            out.append(J.NewJob(id=job_id, name="sleep", options=J.Options(name="sleep"),
                                kind=J.TIMER, not_before=parse_after(item.until, now=ctx.now),
                                parent=ctx.task.id, step=step, position=position))
    return out


def results(outcomes: list[J.ChildOutcome], single: bool) -> tuple[Any, BaseException | None]:
    values = []
    for outcome in outcomes:
        err = outcome.error
        if err is None:
            values.append(pickle.loads(outcome.result) if outcome.result is not None else None)
            continue
        cls = JobCancelled if outcome.state in (J.CANCELLED, J.REJECTED) else JobFailed
        return None, cls(outcome.child, err.exc_type, err.exc_value, err.traceback)
    return (values[0] if single else values), None
