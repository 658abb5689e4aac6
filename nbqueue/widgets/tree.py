"""Which job lines the panel shows, and in which order: the job tree, read from the
queue's ``JobTree`` (``Queue.tree()``), without widgets.

Top-level jobs are paged in the pager's order (``Queue.tree()``): active ones first
(running, in review, ready, waiting; oldest first: the order they run in), then the
ended ones, newest end first. A filter keeps one state (or the active or the ended ones)
and names that start with some text. The earlier runs of a notebook cell's job or of a
gate are folded under the newest: one line counting them by state, paged through once
expanded. Under a parent comes one summary line of its children by state (one count),
then either its first few active children (running, in review, ready) or, once
expanded, a page of all its children (active ones first, then ended ones by state,
newest first); and so on down to a few levels. A fan-out of thousands costs a count and
a page, never a list of all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .. import job as J
from ..jobtree import ENDED, ListPage

#: the order of a parent's children: (state, newest first)
ORDER = ((J.RUNNING, False), (J.REVIEW, False), (J.READY, False), (J.WAITING, False),
         (J.FAILED, True), (J.DONE, True), (J.CANCELLED, True), (J.REJECTED, True))
#: what the state filter offers: (label, value)
STATE_CHOICES = (("all states", ""), ("active", "active"), ("ended", ENDED),
                 *((state, state) for state in J.STATES))
#: children shown under a collapsed parent
ACTIVE = (J.RUNNING, J.REVIEW, J.READY)

Fetch = Callable[[str, int, int], "list[J.JobRecord]"]  # (state, limit, offset) -> oldest first


class TreeStore(Protocol):
    def child_counts(self, parent_id: str) -> dict[str, int]: ...

    def tree_jobs(self, state: str, *, parent: str | None = None, limit: int,
                  offset: int = 0) -> list[J.JobRecord]: ...

    def earlier_runs(self, record: J.JobRecord) -> dict[str, int]: ...

    def earlier_run_jobs(self, record: J.JobRecord, *, limit: int,
                         offset: int = 0) -> list[J.JobRecord]: ...


class ListingStore(TreeStore, Protocol):
    def top_jobs(self, state: str = "", name: str = "", *, offset: int,
                 limit: int) -> ListPage: ...


@dataclass(frozen=True)
class JobFilter:
    """Which top-level jobs the panel lists.

    Parameters
    ----------
    state : str
        ``""`` (all), ``"active"``, ``"ended"`` or one state.
    name : str
        Only jobs whose name starts with this (case matters).
    """

    state: str = ""
    name: str = ""


def top_page(store: ListingStore, flt: JobFilter, offset: int, limit: int) -> ListPage:
    """A page of top-level jobs under ``flt``, how many it lists in all (counted up to a
    bound: ``more`` says there are more), read with ``store.top_jobs``."""
    return store.top_jobs(flt.state, flt.name, offset=offset, limit=limit)


@dataclass(frozen=True)
class TreeLimits:
    """How much of the tree the panel shows.

    Parameters
    ----------
    active : int
        Active children shown under a collapsed parent.
    page : int
        Children per page under an expanded parent.
    depth : int
        The deepest level shown (top-level jobs are level 0).
    lines : int
        Lines below the top-level rows and their summaries, in all: past it, deeper
        material is left out (the summary lines still count everything).
    """

    active: int = 3
    page: int = 10
    depth: int = 3
    lines: int = 40


@dataclass(frozen=True)
class JobLine:
    """A job's row, ``depth`` levels under a top-level job."""

    record: J.JobRecord
    depth: int


@dataclass(frozen=True)
class RunsLine:
    """The earlier runs of a job folded under it (``head``): counts by state, and which
    of them follow (``shown`` from the ``first``-th, newest end first) when expanded."""

    head: str
    depth: int
    counts: dict[str, int]
    first: int
    shown: int
    expanded: bool
    page: int = 0
    pages: int = 1

    @property
    def key(self) -> str:
        """Its key among the panel's expanded lines."""
        return runs_key(self.head)


def runs_key(job_id: str) -> str:
    """The key of a job's earlier runs among the expanded lines."""
    return f"runs:{job_id}"


@dataclass(frozen=True)
class ChildrenLine:
    """The summary of a parent's children: counts by state, and which of them follow
    (``shown`` of them from the ``first``-th, 1-based, in the pager's order)."""

    parent: str
    depth: int
    counts: dict[str, int]
    first: int
    shown: int
    expanded: bool
    page: int = 0
    pages: int = 1


Line = JobLine | ChildrenLine | RunsLine


def page_records(fetch: Fetch, counts: Mapping[str, int], offset: int, limit: int,
                 order: tuple[tuple[str, bool], ...] = ORDER) -> list[J.JobRecord]:
    """One page of jobs in ``order``, given how many there are in each list.

    ``fetch(state, limit, offset)`` reads one list: oldest first where ``order`` says
    newest first (then it is read from its end), else in the order shown.

    >>> jobs = {"done": ["d1", "d2", "d3"], "ready": ["r1"]}
    >>> fetch = lambda state, limit, offset: jobs[state][offset:offset + limit]
    >>> page_records(fetch, {"done": 3, "ready": 1}, 0, 3)
    ['r1', 'd3', 'd2']
    >>> page_records(fetch, {"done": 3, "ready": 1}, 3, 3)
    ['d1']
    """
    out: list[J.JobRecord] = []
    if limit <= 0:
        return out
    for state, newest_first in order:
        n = counts.get(state, 0)
        if offset >= n:
            offset -= n
            continue
        take = min(limit - len(out), n - offset)
        if newest_first:
            out += fetch(state, take, n - offset - take)[::-1]
        else:
            out += fetch(state, take, offset)
        offset = 0
        if len(out) >= limit:
            break
    return out[:limit]


def plan_tree(store: TreeStore, records: list[J.JobRecord], expanded: Mapping[str, int],
              limits: TreeLimits = TreeLimits()) -> list[Line]:
    """The lines of a page: each top-level job, then its earlier runs' summary (and rows,
    expanded), then its children's summary and rows.

    Parameters
    ----------
    store : JobTree
        ``Queue.tree()``; read with ``earlier_runs``, ``earlier_run_jobs``, ``child_counts`` and
        ``tree_jobs`` only.
    records : list of JobRecord
        The page's top-level jobs, in order.
    expanded : mapping
        Expanded lines: a parent's id (or ``runs_key(id)`` for its earlier runs) -> the
        page shown.
    limits : TreeLimits
        How much to show.
    """
    lines: list[Line] = []
    budget = [limits.lines]
    for record in records:
        lines.append(JobLine(record, 0))
        _add_runs(store, record, expanded, limits, lines, budget)
        _add_children(store, record.id, 1, expanded, limits, lines, budget)
    return lines


def _add_runs(store: TreeStore, record: J.JobRecord, expanded: Mapping[str, int],
              limits: TreeLimits, lines: list[Line], budget: list[int]) -> None:
    counts = store.earlier_runs(record)
    total = sum(counts.values())
    if not total:
        return
    key = runs_key(record.id)
    records: list[J.JobRecord] = []
    pages, page, offset = max(-(-total // limits.page), 1), 0, 0
    if key in expanded:
        page = min(max(expanded[key], 0), pages - 1)
        offset = page * limits.page
        records = store.earlier_run_jobs(record, limit=min(limits.page, max(budget[0], 0)),
                                         offset=offset)
    lines.append(RunsLine(record.id, 1, counts, first=offset + 1 if records else 0,
                          shown=len(records), expanded=key in expanded, page=page, pages=pages))
    budget[0] -= len(records)
    lines += [JobLine(r, 1) for r in records]


def _add_children(store: TreeStore, parent: str, depth: int, expanded: Mapping[str, int],
                  limits: TreeLimits, lines: list[Line], budget: list[int]) -> None:
    counts = store.child_counts(parent)
    total = sum(counts.values())
    if not total:
        return
    if depth > 1:  # the summaries of top-level parents are always shown
        if budget[0] <= 0:
            return
        budget[0] -= 1

    def fetch(state: str, limit: int, offset: int) -> list[J.JobRecord]:
        return store.tree_jobs(state, parent=parent, limit=limit, offset=offset)

    if parent in expanded:
        pages = max(-(-total // limits.page), 1)
        page = min(max(expanded[parent], 0), pages - 1)
        offset = page * limits.page
        records = page_records(fetch, counts, offset, min(limits.page, budget[0]))
    else:
        pages, page, offset = 1, 0, 0
        active = {s: counts.get(s, 0) for s in ACTIVE}
        records = page_records(fetch, active, 0, min(limits.active, budget[0]))
    lines.append(ChildrenLine(parent, depth, counts, first=offset + 1 if records else 0,
                              shown=len(records), expanded=parent in expanded, page=page,
                              pages=pages))
    budget[0] -= len(records)  # siblings first, then their own children from what is left
    for record in records:
        lines.append(JobLine(record, depth))
        if depth < limits.depth:
            _add_children(store, record.id, depth + 1, expanded, limits, lines, budget)
