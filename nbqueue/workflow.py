"""What a generator handler yields: ``call(...)`` (or a list of them), ``review(...)``
and ``sleep(...)``, as plain records (``Call``, ``Review``, ``Sleep``) checked when made.

Nothing here runs a job: a worker replays the handler (``nbqueue.replay``) and turns
what it yields into child jobs; the store commits them with the journal row and the
parent's move to ``waiting`` in one transaction, and when the last child ends the
parent is ready again. Code between yields is replayed, so it must be deterministic
and free of side effects. ``spawn`` and ``now``, which a running job calls, are in
``nbqueue.injob``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .arguments import check_line, check_priority
from .errors import InvalidArgument, InvalidArgumentType
from .message import OPTION_NAMES


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


__all__ = ["Call", "Review", "Sleep", "GATE_OPTIONS", "call", "review", "sleep"]
