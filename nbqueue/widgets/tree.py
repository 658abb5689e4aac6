"""Which job lines the panel shows, and in which order: the job tree, read from the
store, without widgets.

Top-level jobs are paged in the pager's order: active ones first (running, in review,
ready, waiting; oldest first), then ended ones (failed, done, cancelled, rejected;
newest first). Under a parent comes one summary line of its children by state (one
count), then either its first few active children (running, in review, ready) or,
once expanded, a page of all its children, in the same order; and so on down to a
few levels. A fan-out of thousands costs a count and a page, never a list of all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .. import job as J

#: the pager's order: (state, newest first)
ORDER = ((J.RUNNING, False), (J.REVIEW, False), (J.READY, False), (J.WAITING, False),
         (J.FAILED, True), (J.DONE, True), (J.CANCELLED, True), (J.REJECTED, True))
#: children shown under a collapsed parent
ACTIVE = (J.RUNNING, J.REVIEW, J.READY)

Fetch = Callable[[str, int, int], "list[J.JobRecord]"]  # (state, limit, offset) -> oldest first


class TreeStore(Protocol):
    def child_counts(self, parent_id: str) -> dict[str, int]: ...

    def tree_jobs(self, state: str, *, parent: str | None = None, limit: int,
                  offset: int = 0) -> list[J.JobRecord]: ...


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


Line = JobLine | ChildrenLine


def page_records(fetch: Fetch, counts: Mapping[str, int], offset: int,
                 limit: int) -> list[J.JobRecord]:
    """One page of jobs in the pager's order, given how many there are per state.

    ``fetch(state, limit, offset)`` lists jobs in one state, oldest first.

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
    for state, newest_first in ORDER:
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
    """The lines of a page: each top-level job, then its children's summary and rows.

    Parameters
    ----------
    store : Store
        Read with ``child_counts`` and ``tree_jobs`` only.
    records : list of JobRecord
        The page's top-level jobs, in order.
    expanded : mapping
        Expanded parents: id -> the page of children shown.
    limits : TreeLimits
        How much to show.
    """
    lines: list[Line] = []
    budget = [limits.lines]
    for record in records:
        lines.append(JobLine(record, 0))
        _add_children(store, record.id, 1, expanded, limits, lines, budget)
    return lines


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
