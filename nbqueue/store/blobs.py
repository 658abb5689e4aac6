"""Bytes a job's row names: inline in the row, or a write-once diskcache value."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import IncompatibleQueue

if TYPE_CHECKING:
    from . import Store


def load_blob(store: Store, inline: bytes | None, ref: str | None) -> bytes | None:
    """A result as stored: inline in its row, or a write-once diskcache value."""
    if ref:
        value = store.value(ref)
        if value is None:
            raise IncompatibleQueue(f"queue {store.path} lost the value {ref}; run "
                                    "diskcache's check() on it")
        return bytes(value)
    return inline
