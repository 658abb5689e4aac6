"""Which of the queue's rarely used controls are in use: one value of ``nbq_meta``
(``controls``), bits ``PAUSES`` (a pause is recorded) and ``RATES`` (a resource has a rate
limit). A claim reads it once, so a queue that uses neither pays one primary-key read per
claim for both (a mixin of ``Tx``)."""

from __future__ import annotations

from typing import Any

PAUSES = 1
RATES = 2


class ControlFlags:
    """Mixin of ``Tx``: uses its ``sql``."""

    sql: Any
    _controls: int | None = None

    def controls(self) -> int:
        """The bits in use, read once per transaction."""
        if self._controls is None:
            row = self.sql("SELECT value FROM nbq_meta WHERE key = 'controls'").fetchone()
            self._controls = int(row[0]) if row is not None and row[0] else 0
        return self._controls

    def set_control(self, bit: int, on: bool) -> None:
        value = self.controls() | bit if on else self.controls() & ~bit
        if value != self.controls():
            self.sql("INSERT OR REPLACE INTO nbq_meta VALUES ('controls', ?)", (value,))
            self._controls = value
