"""``JobTree``: the read-only view of a queue's job tree that ``Queue.tree()`` returns,
paged as the panel pages it (top-level jobs, a parent's children, a job's earlier runs).

It reads the directory and nothing else: every method is one bounded query, so a panel
listing a queue of millions costs a page, never a list of all (``widgets/tree.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import job as J
from .store.listing import ENDED, ListPage

if TYPE_CHECKING:
    from .store import Store

__all__ = ["ENDED", "JobTree", "ListPage"]


class JobTree:
    """The job tree of one queue directory, read on demand.

    Every method is one bounded query of the directory (reads only), so a view of a
    queue of millions of jobs costs a page.

    Parameters
    ----------
    store : Store
        The queue's store (internal); users get one from ``Queue.tree()``.

    Examples
    --------
    ::

        tree = q.tree()
        page = tree.top_jobs("active", offset=0, limit=50)
        for record in page.records:
            print(record.name, record.state, tree.child_counts(record.id))
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def top_jobs(self, state: str = "", name: str = "", *, offset: int,
                 limit: int) -> ListPage:
        """A page of the top-level jobs: active ones first (oldest first), then the ended
        ones, newest end first; earlier runs of a cell's job or a gate folded.

        Parameters
        ----------
        state : str
            ``""`` (all), ``"active"``, ``"ended"`` or one state (which lists every job
            in it, earlier runs included).
        name : str
            Only jobs whose name starts with this.
        offset, limit : int
            The page.

        Returns
        -------
        ListPage
            Its ``records``, how many are listed in all (``total``, counted up to a bound)
            and whether there are ``more``.
        """
        return self._store.top_jobs(state, name, offset=offset, limit=limit)

    def child_counts(self, parent_id: str) -> dict[str, int]:
        """A job's direct children per state; states it has none in are left out."""
        return self._store.child_counts(parent_id)

    def tree_jobs(self, state: str, *, parent: str | None = None, limit: int,
                  offset: int = 0) -> list[J.JobRecord]:
        """Jobs in one state, a page at a time.

        Parameters
        ----------
        state : str
            One state.
        parent : str, optional
            The id of a job, for its direct children; None (default): the top-level
            jobs (ended ones in the order they ended).
        limit, offset : int
            The page: at most ``limit`` records from ``offset``.

        Returns
        -------
        list of JobRecord
            Oldest first.
        """
        return self._store.tree_jobs(state, parent=parent, limit=limit, offset=offset)

    def earlier_runs(self, record: J.JobRecord) -> dict[str, int]:
        """The ended earlier runs folded under ``record`` (the newest top-level job of its
        name and kind, a cell's job or a gate), per state; else empty."""
        return self._store.earlier_runs(record)

    def earlier_run_jobs(self, record: J.JobRecord, *, limit: int,
                         offset: int = 0) -> list[J.JobRecord]:
        """The ended earlier runs folded under ``record``, newest end first."""
        return self._store.earlier_run_jobs(record, limit=limit, offset=offset)

    def names_of(self, ids: Iterable[str]) -> dict[str, str]:
        """``{id: name}`` of these jobs (forgotten ones are left out)."""
        return self._store.names_of(ids)

    def states_of(self, ids: Iterable[str]) -> dict[str, str]:
        """``{id: state}`` of these jobs (forgotten ones are left out)."""
        return self._store.states_of(ids)
