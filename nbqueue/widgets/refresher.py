"""The thread that keeps widgets current: it polls the store's change counter."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Refresher:
    """A daemon thread that polls a change counter and refreshes its views.

    A view has ``_refresh(changed: bool) -> bool`` and returns False once it needs no
    more updates. ``stop()`` ends the thread.

    Parameters
    ----------
    changes : callable
        A cheap counter that moves whenever the store changes (``store.changes``).
    interval : float
        Seconds between polls.
    """

    def __init__(self, changes: Callable[[], int], interval: float = 0.5) -> None:
        self._changes = changes
        self.interval = interval
        self._views: list[Any] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: int | None = None

    def add(self, view: Any) -> None:
        """Refresh ``view`` from now on (starts the thread on first use)."""
        with self._lock:
            if view not in self._views:
                self._views.append(view)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="nbqueue-refresher",
                                                daemon=True)
                self._thread.start()

    def remove(self, view: Any) -> None:
        """Stop refreshing ``view``."""
        with self._lock:
            if view in self._views:
                self._views.remove(view)

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (and wait up to ``timeout`` seconds for it)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                current = self._changes()
            except Exception:
                log.debug("nbqueue refresher: cannot read the store", exc_info=True)
                continue
            changed, self._last = current != self._last, current
            with self._lock:
                views = list(self._views)
            for view in views:
                try:
                    keep = view._refresh(changed)
                except Exception:
                    log.warning("nbqueue refresher: a view failed to update", exc_info=True)
                    keep = True
                if not keep:
                    self.remove(view)
