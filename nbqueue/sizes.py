"""Sizes in bytes: parsing ``memory="4GB"`` and printing what ``nbqueue du`` reports.

Units follow dask's ``parse_bytes`` (what a dask user already types): ``kB``, ``MB``,
``GB``, ``TB`` are powers of 1000, ``KiB``, ``MiB``, ``GiB``, ``TiB`` powers of 1024;
case does not matter, and ``K``/``M``/``G``/``T`` alone mean the decimal units.

>>> parse_size("4GB"), parse_size("1.5 GiB"), parse_size("512mb"), parse_size(2048)
(4000000000, 1610612736, 512000000, 2048)
>>> size_text(0), size_text(999), size_text(1234567), size_text(4 * 10 ** 9)
('0 B', '999 B', '1.2 MB', '4 GB')
>>> exact_text(4 * 10 ** 9), exact_text(512 * 2 ** 20), exact_text(1234567)
('4 GB', '512 MiB', '1.2 MB')
"""

from __future__ import annotations

import math
import re
from typing import Any

_UNITS = {"": 1, "b": 1, "k": 10 ** 3, "kb": 10 ** 3, "m": 10 ** 6, "mb": 10 ** 6,
          "g": 10 ** 9, "gb": 10 ** 9, "t": 10 ** 12, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.ASCII)
FORMS = "bytes as an int, or a string such as '4GB', '512MB', '1.5GiB'"


def parse_size(value: Any) -> int:
    """A size in bytes from an int or a string with a unit; ``ValueError`` for anything
    else, a size below one byte, or one past 2**53 (8 PB)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: give {FORMS}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value.lower())
        if match is None or match.group(2) not in _UNITS:
            raise ValueError(f"not a size: give {FORMS}")
        n = math.floor(float(match.group(1)) * _UNITS[match.group(2)])
    else:
        raise TypeError(f"not a size: give {FORMS}")
    if not 1 <= n <= 2 ** 53:
        raise ValueError("out of range: give at least 1 byte and at most 2**53 (8 PB)")
    return n


def size_text(n: float) -> str:
    """A size for people: two significant digits at most past the first, decimal units."""
    for unit, scale in (("TB", 10 ** 12), ("GB", 10 ** 9), ("MB", 10 ** 6), ("kB", 10 ** 3)):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value >= 100 or value == int(value) \
                else f"{value:.1f} {unit}"
    return f"{int(n)} B"


def exact_text(n: int) -> str:
    """A limit as it was likely given: in the largest unit, decimal or binary, that
    divides it; else as ``size_text``."""
    for unit, scale in (("TB", 10 ** 12), ("TiB", 2 ** 40), ("GB", 10 ** 9), ("GiB", 2 ** 30),
                        ("MB", 10 ** 6), ("MiB", 2 ** 20), ("kB", 10 ** 3), ("KiB", 2 ** 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return size_text(n)
