"""Jobs that create jobs: spawn(), and generator handlers replayed from a journal.

A generator handler yields ``call(...)`` (or a list of them), ``review(...)`` or
``sleep(...)``. It cannot be pickled, so it is rebuilt by replay: the worker runs
it from the start, sending the journaled results of earlier yields, and returns
at the first new yield with the calls to make. The store commits the children,
the journal row and the parent's move to ``waiting`` in one transaction; when the
last child ends the parent is ready again. Code between yields is replayed, so
it must be deterministic and free of side effects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import job as J
from .arguments import check_line, check_priority
from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    JobCancelled,
    JobFailed,
    NonDeterminism,
    NotInJob,
)
from .job import Outcome
from .message import OPTION_NAMES, build_job, content_key, split_options
from .runtime import JobContext, _final_log, finish, require_context


@dataclass(frozen=True)
class Call:
    """A job message built without running it: ``yield call(f, x)`` runs ``f(x)`` as a child.

    Made by ``nbqueue.call``; ``options()`` returns a copy with option keywords added.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    opts: dict[str, Any] = field(default_factory=dict)

    def options(self, **opts: Any) -> Call:
        """A copy of this call with option keywords of ``submit`` added.

        Parameters
        ----------
        **opts
            ``name``, ``after``, ``resources``, ``needs``, ``priority``, ``retries``,
            ``retry_delay``, ``timeout``, ``key``, ``memory``; checked when the child is
            made, at the yield.

        Returns
        -------
        Call

        Raises
        ------
        InvalidArgumentType
            An option name that is not one of those.

        Examples
        --------
        ::

            results = yield [nbqueue.call(fetch, u).options(retries=3, resources=["api"])
                             for u in urls]
        """
        unknown = sorted(set(opts) - set(OPTION_NAMES))
        if unknown:
            raise InvalidArgumentType(f"call(...).options(): unknown option "
                                      f"{', '.join(unknown)}; accepted: {', '.join(OPTION_NAMES)}")
        return dataclasses.replace(self, opts={**self.opts, **opts})


GATE_OPTIONS = ("name", "priority")  # the options of a yielded review gate


@dataclass(frozen=True)
class Review:
    """A human review gate yielded by a handler; the yield gives a ``Decision``."""

    title: str
    payload: bytes | None = None
    opts: dict[str, Any] = field(default_factory=dict)
    # fields, deadline, on_deadline, remind_every: checked at the yield, built into the
    # gate's spec when the child is created (a moment is read against nbqueue.now())
    review_opts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    """A durable sleep yielded by a handler: resumes at ``until`` (same forms as ``after=``).

    Made by ``nbqueue.sleep``; the step records a timer child that ends at that moment.
    """

    until: Any


def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
    """Build a call message without running it, to ``yield`` inside a generator handler.

    Parameters
    ----------
    fn : callable
        The function of the child job.
    *args, **kwargs
        Its arguments; every keyword goes to ``fn`` (add options with ``.options()``;
        a child's ``key`` is None unless given there: its id already makes it once).

    Returns
    -------
    Call
        ``yield call(...)`` gives that child's result; ``yield [call(...), ...]`` gives
        the list of their results, in order. A child that fails raises ``JobFailed`` at
        the yield, where the handler can catch it.

    Raises
    ------
    InvalidArgumentType
        ``fn`` is not callable.

    Examples
    --------
    ::

        def total_words(paths):
            counts = yield [nbqueue.call(count_words, p) for p in paths]
            return sum(counts)
    """
    if not callable(fn):
        raise InvalidArgumentType(f"call(fn={fn!r}): give a function")
    return Call(fn, args, kwargs)


def review(title: str, payload: Any = None, *, fields: Any = None, deadline: Any = None,
           on_deadline: str | None = None, remind_every: Any = None,
           **options: Any) -> Review:
    """A review gate to ``yield`` inside a generator handler; resumes with a ``Decision``.

    The gate is made as a child of the handler's job when the step is committed; while
    it waits for a person the handler holds no worker.

    Parameters
    ----------
    title : str
        What is to be decided: one line, not empty.
    payload : object, optional
        Anything with a rich display, stored as a display bundle now.
    fields, deadline, on_deadline, remind_every
        As for ``Queue.review``; a moment is read against ``nbqueue.now()``.
    **options
        ``name`` (default: the title) and ``priority`` of the gate; no others (a yielded
        gate needs nothing but its handler's step).

    Returns
    -------
    Review
        ``yield`` it: the handler resumes with the ``Decision``, truthy when approved
        (falsy when rejected, with the comment); the answers are in its ``values``.

    Raises
    ------
    InvalidArgument
        A bad title, field, deadline, reminder, name or priority, or another option
        (named), at the call.

    Examples
    --------
    ::

        ok = yield nbqueue.review("Check the counts", payload=plot, fields={"cut": 0.5})
        if not ok:
            return None
        threshold = ok.values["cut"]
    """
    from .display import payload_bytes
    from .reviewing import make_spec

    check_line(title, "title", what="a non-empty one-line title")
    unknown = sorted(set(options) - set(GATE_OPTIONS))
    if unknown:
        raise InvalidArgument(f"nbqueue.review({title!r}): unknown option "
                              f"{', '.join(unknown)}; a yielded gate takes "
                              f"{' and '.join(GATE_OPTIONS)} (and fields, deadline, "
                              "on_deadline, remind_every)")
    if options.get("name") is not None:
        check_line(options["name"], "name")
    check_priority(options.get("priority", 0))
    review_opts: dict[str, Any] = {k: v for k, v in (("fields", fields), ("deadline", deadline),
                                     ("on_deadline", on_deadline),
                                     ("remind_every", remind_every)) if v is not None}
    make_spec(title, **review_opts)  # bad options fail here, at the yield
    return Review(title, payload_bytes(payload), options, review_opts)


def sleep(until: Any) -> Sleep:
    """A durable sleep to ``yield`` inside a generator handler.

    The handler's job waits (holding no worker) and resumes at that moment, whichever
    process serves the queue then; a restart in between changes nothing.

    Parameters
    ----------
    until : datetime, timedelta, float or str
        The moment, in any form of ``after=`` (``"in 2h"``, ``"tomorrow 9:00"``,
        seconds from now); a relative one counts from ``nbqueue.now()``.

    Returns
    -------
    Sleep
        ``yield nbqueue.sleep("in 2h")``.

    Raises
    ------
    InvalidArgument
        ``until`` is in no form of ``after=``.
    """
    from .times import parse_after

    try:
        parse_after(until)  # bad input fails here, at the yield
    except ValueError as exc:
        raise InvalidArgument(f"sleep(until={until!r}): {exc}") from None
    return Sleep(until)


def spawn(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Enqueue a job from inside a running job.

    The job is created in the same transaction that commits the running job's outcome
    (its end, or a generator handler's step): if that job fails or its process dies, it
    does not exist; if it succeeds, it exists exactly once, even when the job ran twice.

    Parameters
    ----------
    fn : callable
        The function, stored as ``submit`` stores it.
    *args, **kwargs
        Its arguments; the option keywords of ``submit`` among ``kwargs`` (``name``,
        ``after``, ``resources``, ``needs``, ``priority``, ``retries``,
        ``retry_delay``, ``timeout``, ``key``, ``memory``) are options, the others go
        to ``fn``. A resource's capacity is not checked here (the job waits if it
        wants too many units).

    Returns
    -------
    str
        The new job's id: the running job's id, a dot, and a number (in a generator
        handler, ``.<step>.s<number>``). Its parent is the running job.

    Raises
    ------
    NotInJob
        Called outside a running job, or in an item of a chunked map.
    SubmitError
        As ``Queue.submit`` raises it for ``fn``, an argument or an option.

    Examples
    --------
    ::

        def crawl(url, depth):
            links = parse(fetch(url))
            if depth:
                for link in links:
                    nbqueue.spawn(crawl, link, depth - 1, priority=depth)
            return len(links)
    """
    ctx = require_context("spawn")
    if ctx.in_chunk:
        raise NotInJob("nbqueue.spawn() does not work in the items of a chunked map "
                       "(q.map(..., chunksize=...)): they share one commit per chunk. Map "
                       "with chunksize=None (one job per call) to spawn from each call")
    options, fn_kwargs = split_options(kwargs)
    n = len(ctx.spawned) + 1
    job_id = f"{ctx.spawn_prefix}{n}"
    new = build_job(fn, args, fn_kwargs, options, job_id=job_id, now=ctx.now,
                    parent=ctx.task.id)
    if not ctx.replaying:
        ctx.spawned.append(new)
    return job_id


def now() -> float:
    """A replay-stable clock for generator handlers: the time the current step first ran.

    Code between yields is replayed at each step; ``time.time()`` would differ at each
    replay, ``nbqueue.now()`` returns the moment the step first ran (recorded in the
    journal).

    Returns
    -------
    float
        A POSIX timestamp.

    Raises
    ------
    NotInJob
        Called outside a running job.
    """
    ctx = require_context("now")
    return ctx.now


# -- replay ---------------------------------------------------------------------------------


def drive(ctx: JobContext, fn: Callable[..., Any], args: tuple[Any, ...],
          kwargs: dict[str, Any], started: float) -> Outcome:
    """Replay a generator handler against its journal up to its first new yield."""
    journal = ctx.task.journal
    gen = fn(*args, **kwargs)
    step, send, throw = 0, None, None
    _enter_step(ctx, journal, step)
    while True:
        try:
            yielded = gen.throw(throw) if throw is not None else gen.send(send)
        except StopIteration as stop:
            return finish(ctx, stop.value, started)
        items, single = _normalize(ctx, yielded, step)
        fingerprint = _fingerprint(items)
        if step >= len(journal):
            children = _children(ctx, items, step)
            return Outcome(ctx.task.id, ctx.task.claim, J.OutcomeKind.YIELDED,
                           spawned=tuple(ctx.spawned),
                           yielded=J.Yielded(step, fingerprint, tuple(children), ctx.now),
                           log=_final_log(ctx), started=started)
        recorded = journal[step]
        if recorded.fingerprint != fingerprint:
            raise NonDeterminism(
                f"job {ctx.task.id}: at yield #{step} the handler yielded {_describe(items)}, "
                "but the journal recorded something else. Code between yields is replayed and "
                "must be deterministic: move randomness, clocks and I/O into child jobs, and use "
                "nbqueue.now() for the time."
            )
        send, throw = _results(recorded.outcomes, single)
        step += 1
        _enter_step(ctx, journal, step)


def _enter_step(ctx: JobContext, journal: list[J.Step], step: int) -> None:
    ctx.replaying = step < len(journal)
    ctx.now = journal[step].at if ctx.replaying else time.time()
    ctx.spawn_prefix = f"{ctx.task.id}.{step}.s"
    if not ctx.replaying:
        ctx.spawned.clear()


def _normalize(ctx: JobContext, yielded: Any, step: int) -> tuple[list[Any], bool]:
    single = isinstance(yielded, (Call, Review, Sleep))
    items = [yielded] if single else list(yielded) if isinstance(yielded, (list, tuple)) else None
    if items is None or not all(isinstance(i, (Call, Review, Sleep)) for i in items):
        raise TypeError(
            f"job {ctx.task.id}: yield #{step} gave {type(yielded).__name__}; a handler may "
            "yield nbqueue.call(...), a list of them, nbqueue.review(...) or nbqueue.sleep(...)"
        )
    return items, single


def _fingerprint(items: list[Any]) -> str:
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


def _describe(items: list[Any]) -> str:
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


def _children(ctx: JobContext, items: list[Any], step: int) -> list[J.NewJob]:
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


def _results(outcomes: list[J.ChildOutcome], single: bool) -> tuple[Any, BaseException | None]:
    values = []
    for outcome in outcomes:
        err = outcome.error
        if err is None:
            values.append(pickle.loads(outcome.result) if outcome.result is not None else None)
            continue
        cls = JobCancelled if outcome.state in (J.CANCELLED, J.REJECTED) else JobFailed
        return None, cls(outcome.child, err.exc_type, err.exc_value, err.traceback)
    return (values[0] if single else values), None


__all__ = ["Call", "Review", "Sleep", "call", "review", "sleep", "spawn", "now", "drive"]
