"""The schedules' firings a dispatcher makes as they come due (store/schedules.py).

The earliest next firing is read again only when another process committed (or after a
firing here): a queue without schedules pays one read per change, no lock."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store import Store


class Firings:
    """The earliest next firing as last read (``next``), at which ``data_version``, and
    when to look again at one that waits for the job of the firing before. ``made`` is
    called when a firing made jobs (they may be ready)."""

    def __init__(self, store: Store, made: Callable[[], None]) -> None:
        self.store = store
        self.made = made
        self.next: float | None = None
        self.version = -1
        self.again = 0.0

    def fire(self, now: float, version: int) -> None:
        """Make the jobs of the firings due at ``now``; ``version``: the store's
        ``data_version``."""
        if version != self.version:
            self.version = version
            self.next = self.store.next_firing()
            self.again = 0.0
        due = self.next
        if due is None or due > now or now < self.again:
            return
        made = self.store.fire_schedules(now)
        if made:
            self.made()
        self.next = self.store.next_firing()
        if not made and self.next is not None and self.next <= now:
            # a firing waits for the job of the one before (overlap=False, catch_up="all"):
            # look again in a second, or at the next change
            self.again = now + 1.0
