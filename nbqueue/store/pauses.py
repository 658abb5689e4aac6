"""Pauses: the whole queue, or the jobs of a name, claim nothing new (a mixin of ``Tx``).

A pause is a row of ``nbq_pause`` (name ``""``: the whole queue); a claim looks at them
only while the ``PAUSES`` bit of the queue's controls flag is set (``controls``), so a
queue that is never paused pays one primary-key read per claim, shared with rates. Pausing
parks the ready jobs it holds as ``waiting`` (blocker ``paused``, or ``paused:NAME``,
which says all there is: no reason or facts are written); jobs that become ready later
are parked when a claim meets them, or at submit. Running jobs run to their end.
Resuming makes the jobs it held ready again. Both work in batches of ``BATCH`` jobs per
transaction, so a pause of a large queue does not hold the write lock for long; the pause
itself holds from its first transaction.
"""

from __future__ import annotations

from typing import Any

from .. import job as J
from .controls import PAUSES

QUEUE = ""  # the name of the whole queue's pause in nbq_pause
BLOCK_PAUSED = J.BLOCK_PAUSED  # a waiting job held by the whole queue's pause; "paused:NAME" by a name's
BATCH = 5000  # jobs parked or released per transaction


def blocker_of(name: str) -> str:
    """The blocker of the jobs a pause holds (``name``: ``QUEUE`` or a job name)."""
    return BLOCK_PAUSED if name == QUEUE else f"{BLOCK_PAUSED}:{name}"


class PauseRules:
    """Mixin of ``Tx``: uses its ``sql``, ``now``, ``move``, ``count`` and controls."""

    sql: Any
    now: float
    move: Any
    count: Any
    controls: Any
    set_control: Any
    _pause_names: frozenset[str] | None = None

    def pauses(self) -> frozenset[str]:
        """The names paused (``QUEUE`` for the whole queue), read once per transaction;
        none read while the controls flag says nothing is paused."""
        names = self._pause_names
        if names is None:
            names = frozenset(r[0] for r in self.sql("SELECT name FROM nbq_pause")) \
                if self.controls() & PAUSES else frozenset()
            self._pause_names = names
        return names

    def held(self, name: str) -> str | None:
        """The pause that holds a job of this name (``QUEUE`` first), or None."""
        pauses = self.pauses()
        if not pauses:
            return None
        if QUEUE in pauses:
            return QUEUE
        return name if name in pauses else None

    def park_paused(self, job_id: str, pause: str, kind: str = J.CALL) -> None:
        """A ready job a pause holds waits (met by a claim). A chunk of a map waits too,
        but is not counted among the jobs (store/maps.py)."""
        if kind == J.CHUNK:
            self.sql("UPDATE nbq_job SET state = 'waiting', blocker = ?, reason = '', "
                     "wait = NULL WHERE id = ? AND state = 'ready'", (blocker_of(pause), job_id))
            return
        self.move(job_id, J.READY, J.WAITING, blocker=blocker_of(pause), reason="", wait=None)

    def park_ready(self, pause: str, limit: int | None = None) -> int:
        """Park the ready jobs a pause holds (up to ``limit``); returns how many."""
        where = ("SELECT id FROM nbq_job INDEXED BY nbq_job_ready WHERE state = 'ready'"
                 if pause == QUEUE else
                 "SELECT id FROM nbq_job INDEXED BY nbq_job_name WHERE name = ? AND "
                 "state = 'ready'")
        params: list[Any] = [blocker_of(pause)]
        params += [] if pause == QUEUE else [pause]
        if limit is not None:
            where += " LIMIT ?"
            params.append(limit)
        # READY -> WAITING (see job.TRANSITIONS), for the batch in one statement
        kinds = self.sql(f"UPDATE nbq_job SET state = 'waiting', blocker = ?, reason = '', "
                         f"wait = NULL WHERE id IN ({where}) RETURNING kind", params).fetchall()
        self.count(J.READY, J.WAITING, _counted(kinds))
        return len(kinds)

    def pause(self, name: str) -> bool:
        """Record a pause (``QUEUE``, or a job name); returns False if it was recorded
        already. Its ready jobs are parked by ``park_ready``, in batches."""
        if self.sql("INSERT OR IGNORE INTO nbq_pause VALUES (?, ?)", (name, self.now)).rowcount == 0:
            return False
        self._paused_changed()
        return True

    def resume(self, name: str) -> bool:
        """Lift a pause; returns False if there was none. Its jobs are made ready by
        ``release_paused``, in batches."""
        if self.sql("DELETE FROM nbq_pause WHERE name = ?", (name,)).rowcount == 0:
            return False
        self._paused_changed()
        return True

    def release_paused(self, name: str, limit: int) -> int:
        """Make ready the jobs a lifted pause held (up to ``limit``); returns how many. A
        job another pause still holds is parked again by the claim that meets it."""
        # WAITING -> READY (see job.TRANSITIONS), for the batch in one statement
        kinds = self.sql("UPDATE nbq_job SET state = 'ready', blocker = NULL, reason = '' "
                         "WHERE id IN (SELECT id FROM nbq_job INDEXED BY nbq_job_blocked "
                         "WHERE state = 'waiting' AND blocker = ? LIMIT ?) RETURNING kind",
                         (blocker_of(name), limit)).fetchall()
        self.count(J.WAITING, J.READY, _counted(kinds))
        return len(kinds)

    def _paused_changed(self) -> None:
        self.set_control(PAUSES, bool(self.sql("SELECT EXISTS (SELECT 1 FROM nbq_pause)")
                                      .fetchone()[0]))
        self._pause_names = None


class PauseStore:
    """The pause verbs and reads of ``Store`` (a mixin)."""

    def _tx(self, now: float) -> Any:  # Store's
        raise NotImplementedError

    def _rows(self, query: str, params: Any = ()) -> list[Any]:  # Store's
        raise NotImplementedError

    def pause(self, name: str, now: float) -> tuple[bool, int]:
        """Pause the whole queue (``QUEUE``) or the jobs of a name: from the first
        transaction on nothing it holds is claimed; then its ready jobs are parked, a
        batch per transaction. Returns whether it was not paused yet, and how many jobs
        were parked."""
        return self._in_batches(
            now, lambda tx: (tx.pause(name), tx.park_ready(name, BATCH)),
            lambda tx: tx.park_ready(name, BATCH) if name in tx.pauses() else 0)

    def resume(self, name: str, now: float) -> tuple[bool, int]:
        """Lift a pause; its jobs become ready, a batch per transaction. Returns whether it
        was paused, and how many jobs became ready."""
        return self._in_batches(
            now, lambda tx: (tx.resume(name), tx.release_paused(name, BATCH)),
            lambda tx: 0 if name in tx.pauses() else tx.release_paused(name, BATCH))

    def _in_batches(self, now: float, first: Any, more: Any) -> tuple[bool, int]:
        """``first(tx)`` -> (changed, jobs moved), then ``more(tx)`` -> jobs moved, one
        transaction each, while a whole batch moved."""
        with self._tx(now) as tx:
            changed, moved = first(tx)
        batch = moved
        while batch == BATCH:
            with self._tx(now) as tx:
                batch = more(tx)
            moved += batch
        return changed, moved

    def pauses(self) -> dict[str, float]:
        """``{name: since}`` of the pauses (``""``: the whole queue)."""
        return dict(self._rows("SELECT name, since FROM nbq_pause ORDER BY name"))


def _counted(kinds: list[tuple[str]]) -> int:
    """How many of the rows a statement changed count among the jobs per state (a map's
    chunks do not: store/maps.py)."""
    return sum(1 for (kind,) in kinds if kind != J.CHUNK)
