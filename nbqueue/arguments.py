"""Checks of the public API's arguments, made before anything is changed.

Each check names the parameter, says what to give, and raises ``InvalidArgument`` (a
``ValueError``) or ``InvalidArgumentType`` (also a ``TypeError``). The limits keep
every value storable (SQLite integers, JSON, timestamps that ``datetime`` can show)
and meaningful:

>>> check_count(3, "retries", low=0)
3
>>> check_count(2 ** 60, "capacity")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
nbqueue.errors.InvalidArgument: capacity=1152921504606846976: give a whole number from 1 to 2**53
>>> check_seconds(float("inf"), "timeout")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
nbqueue.errors.InvalidArgument: timeout=inf: give seconds > 0 and at most ten years ...
>>> check_line("a\\x1b[31mb", "name")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
nbqueue.errors.InvalidArgument: name='a\\x1b[31mb': ... control characters ...
"""

from __future__ import annotations

import math
import os
import unicodedata
from typing import Any

from .errors import InvalidArgument, InvalidArgumentType

MAX_COUNT = 2 ** 53  # units, capacities, retries, |priority|: exact in JSON and JavaScript
KEEP: Any = object()  # an option left as it is (``check_rate``: set_resource's rate)
MAX_WORKERS = 10_000
LONGEST = 10 * 365 * 86400.0  # seconds: the longest timeout or retry delay (ten years)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_count(value: Any, param: str, *, low: int = 1, high: int = MAX_COUNT) -> int:
    """A whole number from ``low`` to ``high`` (a count of units, retries, workers)."""
    what = f"give a whole number from {low} to {_power(high)}"
    if not _is_int(value):
        raise InvalidArgumentType(f"{param}={value!r}: {what}")
    if not low <= value <= high:
        raise InvalidArgument(f"{param}={value!r}: {what}")
    return value


def check_priority(value: Any, param: str = "priority") -> int:
    """An int from -2**53 to 2**53 (larger runs first)."""
    what = f"give an int from -{_power(MAX_COUNT)} to {_power(MAX_COUNT)} (larger runs first)"
    if not _is_int(value):
        raise InvalidArgumentType(f"{param}={value!r}: {what}")
    if not -MAX_COUNT <= value <= MAX_COUNT:
        raise InvalidArgument(f"{param}={value!r}: {what}")
    return value


def _power(n: int) -> str:
    return f"2**{n.bit_length() - 1}" if n > 1024 and n & (n - 1) == 0 else str(n)


def check_seconds(value: Any, param: str, *, allow_zero: bool = False,
                  high: float = LONGEST) -> float:
    """A finite duration in seconds, > 0 (or >= 0) and at most ``high``."""
    low = ">= 0" if allow_zero else "> 0"
    what = f"give seconds {low}" + (
        f" and at most ten years ({high:.0f})" if high == LONGEST else
        f" and at most {high:g}" if math.isfinite(high) else " (a number)")
    if not _is_number(value):
        raise InvalidArgumentType(f"{param}={value!r}: {what}")
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0) and value <= high):
        raise InvalidArgument(f"{param}={value!r}: {what}")
    return value


def check_memory(value: Any, param: str = "memory") -> int | None:
    """A memory limit: None (no limit), bytes as an int, or ``"4GB"``, ``"512MiB"``
    (``sizes.parse_size``); returns bytes."""
    from .sizes import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except TypeError as exc:
        raise InvalidArgumentType(f"{param}={value!r}: {exc}, or None for no limit") from None
    except ValueError as exc:
        raise InvalidArgument(f"{param}={value!r}: {exc}") from None


def check_duration(value: Any, param: str, *, allow_zero: bool = False) -> float:
    """A length of time (``times.parse_duration``: seconds, a ``timedelta``, "30d");
    returns seconds."""
    from datetime import timedelta

    from .times import parse_duration

    try:
        return parse_duration(value, allow_zero=allow_zero)
    except ValueError as exc:
        error = InvalidArgument if isinstance(value, (str, timedelta)) or _is_number(value) \
            else InvalidArgumentType
        raise error(f"{param}={value!r}: {exc}") from None


def check_wait(value: Any, param: str = "timeout") -> float | None:
    """How long to wait: None (for ever) or seconds >= 0."""
    if value is None:
        return None
    what = "give seconds >= 0, or None to wait for as long as it takes"
    if not _is_number(value):
        raise InvalidArgumentType(f"{param}={value!r}: {what}")
    if not (math.isfinite(value) and value >= 0):
        raise InvalidArgument(f"{param}={value!r}: {what}")
    return float(value)


def check_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentType(f"{param}={value!r}: give True or False")
    return value


def unprintable(text: str) -> list[str]:
    """The control characters in ``text`` (line breaks and tabs included), and the
    characters that reorder text on a terminal (bidirectional overrides)."""
    return [c for c in text if unicodedata.category(c) == "Cc" or c in _BIDI]


_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_line(value: Any, param: str, *, what: str = "a non-empty single line of text") -> str:
    """A non-empty one-line string with no control characters (a name, a title)."""
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{param}={value!r}: give {what}")
    if not value.strip():
        raise InvalidArgument(f"{param}={value!r}: give {what}")
    if unprintable(value):
        raise InvalidArgument(f"{param}={value!r}: give {what}, without control characters "
                              "(line breaks, tabs, terminal escapes)")
    return value


def check_name(value: Any, param: str) -> str:
    """A resource name: a non-empty string without surrounding spaces or control characters."""
    what = "a resource name: a non-empty string, no spaces around it, no control characters"
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{param}={value!r}: give {what}")
    if not value or value != value.strip() or unprintable(value):
        raise InvalidArgument(f"{param}={value!r}: give {what}")
    return value


def check_job_ref(value: Any, param: str) -> str:
    """A job handle or a job id/key (a non-empty string): the id or key it gives."""
    job_id = getattr(value, "__nbqueue_job_id__", None) if not isinstance(value, type) else None
    if job_id is not None:
        return str(job_id)
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{param}={value!r}: give a Job or a job id (a str)")
    if not value.strip():
        raise InvalidArgument(f"{param}={value!r}: give a Job or a job id (a non-empty str)")
    return value


def check_text(value: Any, param: str) -> str:
    """Any string (a comment)."""
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{param}={value!r}: give a str")
    return value


def check_path(value: Any, param: str = "path") -> Any:
    """A file system path: a str or an ``os.PathLike`` of str, without NUL characters."""
    if isinstance(value, bytes) or not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentType(f"{param}={value!r}: give a directory path (a str or a "
                                  "pathlib.Path)")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise InvalidArgumentType(f"{param}={value!r}: give a directory path (a str or a "
                                  "pathlib.Path)")
    if not text.strip():
        raise InvalidArgument(f"{param}={value!r}: give a directory path (None for the "
                              "default, $NBQUEUE_DIR or ./.nbqueue)")
    if "\x00" in text:
        raise InvalidArgument(f"{param}={value!r}: a path cannot contain a NUL character")
    return value


def check_rate(value: Any, param: str = "rate") -> Any:
    """A rate limit: ``"10/min"`` -> ``(10, 60.0)``; False -> None (remove it); None ->
    ``KEEP`` (leave it as it is)."""
    from .times import RATE_FORMS, parse_rate

    if value is None:
        return KEEP
    if value is False:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{param}={value!r}: give a rate such as {RATE_FORMS}, "
                                  "False to remove the limit, or None to leave it")
    rate = parse_rate(value)
    if rate is None or rate[0] > MAX_COUNT:
        raise InvalidArgument(f"{param}={value!r}: give a rate such as {RATE_FORMS}")
    return rate
