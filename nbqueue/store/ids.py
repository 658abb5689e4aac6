"""Job ids: 64 random bits as 16 hex digits, and consecutive ones for a batch."""

from __future__ import annotations

import secrets


def new_id() -> str:
    # 64 random bits: with 40 (token_hex(5)) two of a million jobs share an id with
    # probability ~0.4 (birthday bound), and that submit fails on nbq_job's primary key
    return secrets.token_hex(8)


def new_ids(n: int) -> list[str]:
    """``n`` ids for one batch: consecutive numbers from a random 64-bit start.

    Exactly as safe as ``n`` random ids: a batch collides with the N jobs already stored
    with probability about N*n/2**64 either way, and never with itself. But its rows sit
    side by side in the primary key's index, so a big ``map`` into a big queue writes a
    few index pages instead of one page per job (and its jobs' lookups then hit them)."""
    start = secrets.randbelow(2**64 - n)
    return [f"{i:016x}" for i in range(start, start + n)]


__all__ = ["new_id", "new_ids"]
