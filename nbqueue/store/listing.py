"""Reading the queue as the panel and the command line show it: top-level jobs newest
first, earlier runs of a job folded under the newest, names of jobs, ids by their start.

Every query is an index seek or a scan bounded by a page (with a filter by name: by the
jobs of that name). ``Store`` inherits these methods (``JobListing``).

Order. Active top-level jobs come first, per state (running, review, ready, waiting),
oldest first: the order they run in. Ended ones follow, by end time, newest first.

Earlier runs. Re-running a notebook cell with new inputs makes a new job of the same
name, and a review gate made again has the same title: the older ones pile up. So an
*ended* top-level cell job (key ``cell:...``) or gate is *folded* when a newer top-level
job of the same name and kind exists (a cell job or a gate too): it is not listed, and
the newest one counts it among its earlier runs. Active ones are never folded. Jobs of
``submit`` and ``map`` are never folded: many jobs of one name are separate jobs there.
A filter by one state lists every job in that state, earlier runs included.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import job as J
from .blobs import load_blob

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

ACTIVE_ORDER = (J.RUNNING, J.REVIEW, J.READY, J.WAITING)
ENDED_ORDER = (J.DONE, J.FAILED, J.CANCELLED, J.REJECTED)
ENDED = "ended"  # the ended jobs of every state, as one list
COUNT_BOUND = 1000  # listed jobs are counted up to this per state (or the page's end)
NAME_SCAN = 2_000  # the newest jobs of a name filter that are read
NAME_KINDS = 50  # names starting alike read one by one; past it, the index range is sorted


@dataclass(frozen=True)
class ListPage:
    """A page of listed jobs, how many are listed in all, and whether that count stopped
    at its bound (there are more)."""

    records: list[J.JobRecord]
    total: int
    more: bool = False


def _states_of(state: str) -> tuple[str, ...]:
    """The states a filter keeps, in the listed order.

    >>> _states_of("active")
    ('running', 'review', 'ready', 'waiting')
    >>> _states_of("failed"), len(_states_of(""))
    (('failed',), 8)
    """
    if state in J.STATES:
        return (state,)
    return (ACTIVE_ORDER if state in ("", "active") else ()) + (
        ENDED_ORDER if state in ("", ENDED) else ())


def _unfolded(rows: list[Any]) -> list[Any]:
    """Rows ``(id, name, state, kind, key, seq, ended)`` of top-level jobs without those
    folded under a newer run (the newest of each name and kind, if foldable, is there:
    the rows are the newest of their names)."""
    def foldable(r: Any) -> bool:
        return r[3] == J.GATE or (r[4] or "").startswith("cell:")

    newest: dict[tuple[str, str], int] = {}
    for r in rows:
        if foldable(r):
            key = (r[1], r[3])
            newest[key] = max(newest.get(key, r[5]), r[5])
    return [r for r in rows if not (foldable(r) and r[6] is not None
                                    and newest[(r[1], r[3])] > r[5])]

# a job that can be folded: a top-level gate, or a cell job (%%enqueue keys start "cell:")
# (key IS NOT NULL first: a NULL key would leave the whole test NULL, not false, and
# SQLite would then run the EXISTS below for every job without a key)
_FOLDABLE = ("({t}.kind = 'gate' OR ({t}.key IS NOT NULL AND {t}.key >= 'cell:' "
             "AND {t}.key < 'cell;'))")
# ... that has ended, and a newer top-level job of its name and kind, foldable too
_FOLDED = (f"({_FOLDABLE.format(t='j')} AND j.ended IS NOT NULL AND EXISTS ("
           "SELECT 1 FROM nbq_job n INDEXED BY nbq_job_name WHERE n.name = j.name "
           "AND n.seq > j.seq AND n.parent IS NULL AND n.kind = j.kind AND "
           f"{_FOLDABLE.format(t='n')}))")


#: the columns of a job's record (``Store._records`` reads rows of them)
JOB_COLUMNS = (
    "id, name, state, kind, key, reason, blocker, priority, created, started, ended, "
    "not_before, attempt, deaths, parent, options, progress, error, owner, why, wait"
)


def _columns() -> str:
    return ", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(","))


def name_range(prefix: str) -> tuple[str, str]:
    """The bounds of the names that start with ``prefix`` (for an index range).

    >>> name_range("fit")
    ('fit', 'fiu')
    """
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _listed_where(state: str, fold: bool = True) -> tuple[str, list[Any], str, str]:
    """The WHERE clause, its parameters, the index and the ORDER BY of a listed state
    (``fold``: earlier runs left out)."""
    where, params = "j.state = ? AND j.parent IS NULL", [state]
    if state in J.ENDED:
        where += " AND j.ended IS NOT NULL" + (f" AND NOT {_FOLDED}" if fold else "")
        return where, params, "nbq_job_listed", "j.ended DESC, j.seq DESC"
    # an active job has no end time: within its state the index is in submission order
    return where + " AND j.ended IS NULL", params, "nbq_job_listed", "j.seq"


class JobListing:
    """The panel's and the CLI's queries (a mixin of ``Store``)."""

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[Any]:  # Store's
        raise NotImplementedError

    def _one(self, query: str, params: Sequence[Any] = ()) -> Any:  # Store's
        raise NotImplementedError

    def _records(self, rows: Sequence[Sequence[Any]]) -> list[J.JobRecord]:  # Store's
        raise NotImplementedError

    # -- the top-level list ----------------------------------------------------------------

    def top_jobs(self, state: str = "", name: str = "", *, offset: int,
                 limit: int) -> ListPage:
        """A page of the top-level jobs as listed (see the module's docstring).

        ``state``: ``""`` (all), ``"active"``, ``"ended"`` or one state; ``name``: only
        jobs whose name starts with it. Earlier runs are folded, except under a filter by
        one state: it lists every job in that state. Counting is bounded: each state is
        counted up to ``COUNT_BOUND`` jobs (or the end of the page asked for), never a scan
        of them all; ``ListPage.more`` says there are more."""
        if name:
            return self._named_page(state, name, offset, limit)
        bound = max(COUNT_BOUND, offset + limit + 1)
        states, fold = _states_of(state), state not in J.STATES
        counts = {s: self._count_listed(s, bound, fold) for s in states}
        streams: list[tuple[str, int]] = [(s, counts[s]) for s in states if s not in J.ENDED]
        ended = [s for s in states if s in J.ENDED]
        if len(ended) == 1:
            streams.append((ended[0], counts[ended[0]]))
        elif ended:
            streams.append((ENDED, sum(counts[s] for s in ended)))
        out: list[J.JobRecord] = []
        for stream, n in streams:
            if offset >= n:
                offset -= n
                continue
            take = min(limit - len(out), n - offset)
            if stream == ENDED:
                out += self.listed_ended(limit=take, offset=offset)
            else:
                out += self.listed_jobs(stream, limit=take, offset=offset, fold=fold)
            offset = 0
            if len(out) >= limit:
                break
        return ListPage(out[:limit], sum(counts.values()),
                        any(n >= bound for n in counts.values()))

    def _count_listed(self, state: str, bound: int, fold: bool) -> int:
        where, params, index, _ = _listed_where(state, fold)
        return int(self._one(f"SELECT COUNT(*) FROM (SELECT 1 FROM nbq_job j INDEXED BY {index} "
                             f"WHERE {where} LIMIT ?)", (*params, bound)))

    def listed_ended(self, *, limit: int, offset: int = 0) -> list[J.JobRecord]:
        """Ended top-level jobs of every ended state, newest end first: a merge of the four
        states' lists, by their keys only (each reads ``offset + limit`` index entries at
        most), then the page's rows."""
        keys = [self._ended_keys(state, offset + limit) for state in ENDED_ORDER]
        page = list(heapq.merge(*keys, reverse=True))[offset:offset + limit]
        return self._by_ids([job_id for _, _, job_id in page])

    def listed_jobs(self, state: str, *, limit: int, offset: int = 0,
                    fold: bool = True) -> list[J.JobRecord]:
        """Top-level jobs in ``state`` in the listed order (active: oldest first; ended:
        newest end first), earlier runs folded away unless ``fold`` is false."""
        where, params, index, order = _listed_where(state, fold)
        return self._records(self._rows(
            f"SELECT {_columns()} FROM nbq_job j INDEXED BY {index} WHERE {where} "
            f"ORDER BY {order} LIMIT ? OFFSET ?", (*params, limit, offset)))

    def _ended_keys(self, state: str, limit: int) -> list[tuple[float, int, str]]:
        where, params, index, order = _listed_where(state)
        return [tuple(row) for row in self._rows(
            f"SELECT j.ended, j.seq, j.id FROM nbq_job j INDEXED BY {index} WHERE {where} "
            f"ORDER BY {order} LIMIT ?", (*params, limit))]

    def _by_ids(self, ids: Sequence[str]) -> list[J.JobRecord]:
        """These jobs' records, in this order (forgotten ones left out)."""
        if not ids:
            return []
        found = {r.id: r for r in self._records(self._rows(
            f"SELECT {_columns()} FROM nbq_job j WHERE j.id IN ({','.join('?' * len(ids))})",
            ids))}
        return [found[i] for i in ids if i in found]

    def _newest_named(self, prefix: str, limit: int) -> list[int]:
        """The rowids of the newest ``limit`` jobs whose name starts with ``prefix``.

        Per name the index gives them newest first (a seek, then ``limit`` entries): the
        names are found one seek each and their lists merged. Past ``NAME_KINDS`` names
        the whole range of the index is read and sorted instead."""
        low, high = name_range(prefix)
        names: list[str] = []
        while len(names) <= NAME_KINDS:
            found = self._one("SELECT name FROM nbq_job INDEXED BY nbq_job_name WHERE name >= ? "
                              "AND name < ? ORDER BY name LIMIT 1", (low, high))
            if found is None:
                break
            names.append(found)
            low = found + "\0"  # the next name after it
        if len(names) > NAME_KINDS:
            return [r[0] for r in self._rows(
                "SELECT rowid FROM nbq_job INDEXED BY nbq_job_name WHERE name >= ? AND name < ? "
                "ORDER BY seq DESC LIMIT ?", (*name_range(prefix), limit))]
        lists = [self._rows("SELECT seq, rowid FROM nbq_job INDEXED BY nbq_job_name "
                            "WHERE name = ? ORDER BY seq DESC LIMIT ?", (n, limit)) for n in names]
        return [rowid for _, rowid in list(heapq.merge(*lists, reverse=True))[:limit]]

    def _named_page(self, state: str, name: str, offset: int, limit: int) -> ListPage:
        """A page of the jobs whose name starts with ``name``: the newest ``NAME_SCAN`` of
        them (children included) are read from the name index, then ordered, folded and
        filtered here; ``more`` when there were more."""
        rowids = self._newest_named(name, NAME_SCAN + 1)
        more = len(rowids) > NAME_SCAN
        rows: list[Any] = []
        for start in range(0, min(len(rowids), NAME_SCAN), 500):
            chunk = rowids[start:min(start + 500, NAME_SCAN)]
            rows += self._rows("SELECT id, name, state, kind, key, seq, ended FROM nbq_job "
                               f"WHERE parent IS NULL AND rowid IN ({','.join('?' * len(chunk))})",
                               chunk)
        keep = _states_of(state)
        listed = [r for r in (rows if state in J.STATES else _unfolded(rows)) if r[2] in keep]
        rank = {s: i for i, s in enumerate(ACTIVE_ORDER)}
        active = sorted((r for r in listed if r[2] not in J.ENDED),
                        key=lambda r: (rank[r[2]], r[5]))
        ended = sorted((r for r in listed if r[2] in J.ENDED),
                       key=lambda r: (r[6] or 0.0, r[5]), reverse=True)
        page = (active + ended)[offset:offset + limit]
        return ListPage(self._by_ids([r[0] for r in page]), len(listed), more)

    # -- earlier runs of a job ---------------------------------------------------------------

    def earlier_runs(self, record: J.JobRecord) -> dict[str, int]:
        """The ended earlier runs folded under ``record`` (if it is the newest top-level
        job of its name and kind, a cell job or a gate), per state; else empty."""
        if not self._heads_runs(record):
            return {}
        return {state: int(n) for state, n in self._rows(
            f"SELECT j.state, COUNT(*) FROM nbq_job j INDEXED BY nbq_job_name "
            f"WHERE {self._runs_where()} GROUP BY j.state", self._runs_params(record))}

    def earlier_run_jobs(self, record: J.JobRecord, *, limit: int,
                         offset: int = 0) -> list[J.JobRecord]:
        """The ended earlier runs folded under ``record``, newest end first."""
        if not self._heads_runs(record):
            return []
        return self._records(self._rows(
            f"SELECT {_columns()} FROM nbq_job j INDEXED BY nbq_job_name "
            f"WHERE {self._runs_where()} ORDER BY j.ended DESC, j.seq DESC LIMIT ? OFFSET ?",
            (*self._runs_params(record), limit, offset)))

    @staticmethod
    def _runs_where() -> str:
        return ("j.name = ? AND j.seq < (SELECT seq FROM nbq_job WHERE id = ?) "
                "AND j.parent IS NULL AND j.kind = ? AND j.ended IS NOT NULL AND "
                f"{_FOLDABLE.format(t='j')}")

    @staticmethod
    def _runs_params(record: J.JobRecord) -> tuple[Any, ...]:
        return (record.name, record.id, record.kind)

    def _heads_runs(self, record: J.JobRecord) -> bool:
        """Whether ``record`` is foldable and the newest of its name and kind."""
        if record.parent is not None or not (
                record.kind == J.GATE or (record.key or "").startswith("cell:")):
            return False
        return not self._one(
            "SELECT 1 FROM nbq_job j WHERE j.id = ? AND EXISTS (SELECT 1 FROM nbq_job n "
            "INDEXED BY nbq_job_name WHERE n.name = j.name AND n.seq > j.seq AND "
            f"n.parent IS NULL AND n.kind = j.kind AND {_FOLDABLE.format(t='n')})",
            (record.id,))

    # -- names and ids --------------------------------------------------------------------------

    def names_of(self, ids: Iterable[str]) -> dict[str, str]:
        """``{id: name}`` of these jobs (forgotten ones are left out)."""
        return self._column_of(ids, "name")

    def states_of(self, ids: Iterable[str]) -> dict[str, str]:
        """``{id: state}`` of these jobs (forgotten ones are left out)."""
        return self._column_of(ids, "state")

    def _column_of(self, ids: Iterable[str], column: str) -> dict[str, str]:
        wanted = list(dict.fromkeys(ids))
        out: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            out.update(self._rows(f"SELECT id, {column} FROM nbq_job WHERE id IN "
                                  f"({','.join('?' * len(chunk))})", chunk))
        return out

    def root_ids(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` top-level ids (a job id's part before any ``.``) that start with
        ``prefix``: one index seek each, however many children they have."""
        low, high = name_range(prefix)
        out: list[str] = []
        while len(out) < limit:
            found = self._one("SELECT id FROM nbq_job WHERE id >= ? AND id < ? ORDER BY id "
                              "LIMIT 1", (low, high))
            if found is None:
                break
            root = found.split(".", 1)[0]
            out.append(root)
            low = root + "/"  # past the root and its children ("root.…": "." < "/")
        return out

    def job_message(self, job_id: str) -> dict[str, Any]:
        """What a job was submitted with: ``function`` (its label), ``args`` (the pickled
        arguments, job handles as references), ``needs`` and ``refs`` (job ids)."""
        row = self._rows("SELECT f.label, j.args, j.args_ref, j.needs, j.refs FROM nbq_job j "
                         "LEFT JOIN nbq_fn f ON f.id = j.fn WHERE j.id = ?", (job_id,))
        if not row:
            return {"function": None, "args": None, "needs": [], "refs": []}
        label, args, args_ref, needs, refs = row[0]
        return {"function": label, "args": load_blob(self, args, args_ref),  # type: ignore[arg-type]
                "needs": json.loads(needs) if needs else [],
                "refs": json.loads(refs) if refs else []}
