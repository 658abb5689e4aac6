"""Job messages: everything a job needs to start, as bytes, and its content key.

A message holds the function and the arguments. An importable function is
stored by reference (module and qualname); a function defined in a notebook
(``__main__``), a lambda or a closure is stored by value with cloudpickle,
together with the Python and cloudpickle versions that wrote it. Job handles
among the arguments become references that the worker replaces by the needed
job's result.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import reprlib
import sys
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cloudpickle
import joblib

from . import job as J
from .arguments import (
    check_count,
    check_line,
    check_memory,
    check_name,
    check_priority,
    check_seconds,
)
from .errors import SubmitError

PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"
CLOUDPICKLE_VERSION = cloudpickle.__version__
PROTOCOL = 5


@dataclass(frozen=True)
class Function:
    """A function as stored: its blob is shared by every job that calls it."""

    id: str
    blob: bytes
    by_value: bool
    python: str = PYTHON_VERSION
    cloudpickle: str = CLOUDPICKLE_VERSION
    label: str = ""


def job_id_of(obj: Any) -> str | None:
    """The id of a Job handle (or anything that stands for a job), else None."""
    return getattr(obj, "__nbqueue_job_id__", None) if not isinstance(obj, type) else None


def function_label(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    return str(name)


def default_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", None) or function_label(fn))


def _needs_by_value(fn: Any) -> bool:
    module = getattr(fn, "__module__", None)
    if module in (None, "__main__", "__mp_main__"):
        return True
    qualname = getattr(fn, "__qualname__", "")
    if "<locals>" in qualname or "<lambda>" in qualname:
        return True
    try:
        pickle.dumps(fn, PROTOCOL)
    except Exception:
        return True
    return False


def pack_function(fn: Callable[..., Any]) -> Function:
    """Pickle ``fn`` by reference when it can be imported, else by value."""
    if not callable(fn):
        raise SubmitError(f"{fn!r} is not callable: submit a function and its arguments")
    by_value = _needs_by_value(fn)
    try:
        blob = cloudpickle.dumps(fn, PROTOCOL) if by_value else pickle.dumps(fn, PROTOCOL)
    except Exception as exc:
        raise SubmitError(
            f"function {function_label(fn)} cannot be pickled ({type(exc).__name__}: {exc}); "
            "define it at the top level of a module or a notebook cell"
        ) from None
    digest = hashlib.blake2b(blob, digest_size=12).hexdigest()
    return Function(digest, blob, by_value, label=function_label(fn))


class _ArgPickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle has no types
    """Pickles arguments, turning Job handles into references (persistent ids)."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=PROTOCOL)
        self.refs: list[str] = []

    def persistent_id(self, obj: Any) -> Any:
        job_id = job_id_of(obj)
        if job_id is None:
            return None
        if "#" in job_id:
            raise SubmitError(f"job {job_id} is an item of a chunked map: it cannot be passed "
                              "as an argument. Give it (or its map) as needs= and read its "
                              "result in the function, or pass its result once it is done")
        if job_id not in self.refs:
            self.refs.append(job_id)
        return ("nbqueue-job", job_id)


def pack_args(args: tuple[Any, ...], kwargs: dict[str, Any], *, label: str) -> tuple[bytes, tuple[str, ...]]:
    """Pickle the arguments of one call; a failure is a SubmitError naming the argument."""
    buf = io.BytesIO()
    pickler = _ArgPickler(buf)
    try:
        pickler.dump((args, kwargs))
    except Exception as exc:
        culprit = _find_culprit(args, kwargs, cloudpickle.dumps)
        raise SubmitError(
            f"cannot submit {label}: argument {culprit} cannot be pickled "
            f"({type(exc).__name__}: {exc}). Pass something picklable (a path instead of an "
            "open file, data instead of a connection); nothing was stored."
        ) from None
    return buf.getvalue(), tuple(pickler.refs)


def _find_culprit(args: tuple[Any, ...], kwargs: dict[str, Any],
                  test: Callable[[Any], Any]) -> str:
    """The first argument that ``test`` (a pickling or hashing) fails on, described."""
    for i, value in enumerate(args):
        try:
            test(value)
        except Exception:
            return f"#{i} ({type(value).__name__} {_short_repr(value)})"
    for key, value in kwargs.items():
        try:
            test(value)
        except Exception:
            return f"{key}= ({type(value).__name__} {_short_repr(value)})"
    return "(unknown)"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _short_repr(value: Any) -> str:
    # bounded depth: the repr of a 100 000-deep list would exceed the recursion limit
    try:
        text = _REPR.repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 60 else text[:57] + "..."


class _ArgUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, results: dict[str, Any]) -> None:
        super().__init__(file)
        self.results = results

    def persistent_load(self, pid: Any) -> Any:
        kind, job_id = pid
        if kind != "nbqueue-job" or job_id not in self.results:
            raise pickle.UnpicklingError(f"argument refers to job {job_id}, whose result is missing")
        return self.results[job_id]


def unpack_args(blob: bytes, results: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of a call, with job references replaced by those jobs' results."""
    if not results:  # no job references (the usual case): the plain loader is faster
        try:
            args, kwargs = pickle.loads(blob)
            return args, kwargs
        except pickle.UnpicklingError:  # a reference after all: the message below says which
            pass
    args, kwargs = _ArgUnpickler(io.BytesIO(blob), results).load()
    return args, kwargs


def unpack_function(function: Function) -> Callable[..., Any]:
    """Load a stored function; a by-value function from another Python is a clear error."""
    if function.by_value and (
        function.python != PYTHON_VERSION or function.cloudpickle != CLOUDPICKLE_VERSION
    ):
        raise RuntimeError(
            f"function {function.label} was stored by value by Python {function.python} with "
            f"cloudpickle {function.cloudpickle}; this worker has Python {PYTHON_VERSION} with "
            f"cloudpickle {CLOUDPICKLE_VERSION}. Run it from a kernel with the same versions, "
            "or resubmit it with key=None from this one."
        )
    fn: Callable[..., Any] = pickle.loads(function.blob)
    return fn


# -- content keys ---------------------------------------------------------------------

_fingerprints: dict[int, tuple[Any, str]] = {}


def function_fingerprint(fn: Any) -> str:
    """A hash of the function's identity and code (and, for notebook functions, the
    values of the globals it reads), so that editing a function makes a new key."""
    cached = _fingerprints.get(id(fn))
    if cached is not None and cached[0] is fn and not _needs_by_value(fn):
        return cached[1]
    digest: str = joblib.hash(_fingerprint_parts(fn, set()))
    if len(_fingerprints) > 256:
        _fingerprints.clear()
    _fingerprints[id(fn)] = (fn, digest)
    return digest


def _fingerprint_parts(fn: Any, seen: set[int]) -> Any:
    identity = (getattr(fn, "__module__", None), function_label(fn))
    if id(fn) in seen:
        return identity
    seen.add(id(fn))
    target = getattr(fn, "__func__", fn)  # bound methods
    code = getattr(target, "__code__", None)
    if code is None:
        if isinstance(fn, type) or isinstance(fn, types.BuiltinFunctionType):
            return identity
        try:
            return (identity, joblib.hash(fn))
        except Exception:
            return (identity, id(fn))
    parts: list[Any] = [identity, _code_parts(code), _safe_hash(getattr(target, "__defaults__", None))]
    if _needs_by_value(target):
        globals_ = getattr(target, "__globals__", {})
        for name in sorted(_global_names(code)):
            if name not in globals_:
                continue
            value = globals_[name]
            if isinstance(value, types.ModuleType):
                parts.append((name, "module", value.__name__))
            elif isinstance(value, types.FunctionType):
                parts.append((name, _fingerprint_parts(value, seen)))
            else:
                parts.append((name, _safe_hash(value)))
        closure = getattr(target, "__closure__", None) or ()
        for cell in closure:
            try:
                parts.append(_safe_hash(cell.cell_contents))
            except ValueError:  # empty cell
                parts.append(None)
    return tuple(parts)


def _code_parts(code: types.CodeType) -> Any:
    consts = tuple(_code_parts(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts)
    return (code.co_code, consts, code.co_names)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _safe_hash(value: Any) -> str:
    try:
        digest: str = joblib.hash(value)
        return digest
    except Exception:  # unpicklable global: the key cannot be stable, so it never matches
        return f"unhashable-{id(value)}"


_PLAIN_SCALARS = frozenset({int, float, str, bytes, bool, type(None)})


def _plain(value: Any, depth: int = 0) -> bool:
    """Built-in scalars, and tuples and lists of them (exact types, bounded depth)."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if (kind is tuple or kind is list) and depth < 16:
        return all(_plain(v, depth + 1) for v in value)
    return False


def plain_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a call's arguments are all plain values (no job handle can be inside)."""
    return _plain(args) and all(_plain(v) for v in kwargs.values())


def content_key(fn_fingerprint: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                needs: tuple[str, ...], *, plain: bool | None = None) -> str:
    """The automatic key: function fingerprint, arguments (a Job hashes as its id), needs.
    ``plain``: ``plain_call(args, kwargs)``, if the caller has it already.

    Equal calls get equal keys, whatever the order of the keywords:

    >>> content_key("f", (1, "a"), {"x": 1, "y": [2.0]}, ()) == content_key(
    ...     "f", (1, "a"), {"y": [2.0], "x": 1}, ())
    True
    >>> content_key("f", (1,), {}, ()) == content_key("f", (True,), {}, ())
    False
    """
    needs = tuple(sorted(needs))
    if plain is None:
        plain = plain_call(args, kwargs)
    if plain:
        # Plain values (the common case): a pickle without memo is canonical for them
        # (equal values, equal bytes) and ~10x cheaper than joblib.hash.
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=PROTOCOL)
        pickler.fast = True  # no memo: a repeated object pickles like an equal copy
        pickler.dump((fn_fingerprint, args, sorted(kwargs.items()), needs))
        return "auto:" + hashlib.blake2b(buf.getvalue(), digest_size=16).hexdigest()
    # joblib.hash pickles its input, and a Job handle pickles as its id (Job.__reduce__).
    digest: str = joblib.hash((fn_fingerprint, args, kwargs, needs))
    return "auto:" + digest


def _auto_key(fn_fingerprint: str, args: tuple[Any, ...], kwargs: dict[str, Any],
              needs: tuple[str, ...], *, plain: bool, label: str) -> str:
    """``content_key``, or a ``SubmitError`` naming the argument that cannot be hashed
    (cloudpickle pickles an open file by its contents; the key's hash cannot)."""
    try:
        return content_key(fn_fingerprint, args, kwargs, needs, plain=plain)
    except Exception as exc:
        culprit = _find_culprit(args, kwargs, joblib.hash)
        raise SubmitError(
            f"cannot submit {label}: argument {culprit} cannot be hashed for the job's "
            f"automatic key ({type(exc).__name__}: {exc}). Pass a path instead of an open "
            "file, or give key=None (or a key of your own); nothing was stored.") from None


# -- building a job -----------------------------------------------------------------------

OPTION_NAMES = ("name", "after", "resources", "needs", "priority", "retries", "retry_delay",
                "timeout", "key", "memory")


def split_options(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate nbqueue's option keywords from the keywords meant for the function."""
    options = {k: v for k, v in kwargs.items() if k in OPTION_NAMES}
    rest = {k: v for k, v in kwargs.items() if k not in OPTION_NAMES}
    return options, rest


def map_of_item(job_id: str) -> str:
    """An item of a chunked map (``<map>#<i>``) is needed as its map: it waits for the
    whole map (items are no jobs of their own)."""
    if "#" in job_id:
        from .chunking import item_of

        found = item_of(job_id)
        if found is not None:
            return found[0]
    return job_id


def needs_ids(needs: Any) -> tuple[str, ...]:
    """Job handles or ids -> ids."""
    if needs is None:
        return ()
    whole = getattr(needs, "__nbqueue_needs__", None)  # the items of a chunked map: the map
    if whole is not None and not isinstance(needs, type):
        return tuple(whole)
    if isinstance(needs, str) or job_id_of(needs) is not None:
        needs = [needs]
    if isinstance(needs, (bytes, dict)) or not isinstance(needs, Iterable):
        raise SubmitError(f"needs={_short_repr(needs)}: give a Job, a job id, or a list of "
                          "them; nothing was stored")
    out = []
    for need in needs:
        job_id = job_id_of(need) if not isinstance(need, str) else need
        if not job_id or not isinstance(job_id, str) or not job_id.strip():
            raise SubmitError(f"needs: {_short_repr(need)} is not a job; give Job handles or "
                              "job ids; nothing was stored")
        out.append(map_of_item(job_id))
    return tuple(dict.fromkeys(out))


def build_options(opts: dict[str, Any], default: str, label: str) -> J.Options:
    """The ``Options`` of a submit's option keywords; a ``SubmitError`` naming the option
    for any value out of range or of the wrong type."""
    try:
        name, timeout = opts.get("name"), opts.get("timeout")
        options = J.Options(
            name=default if name is None else check_line(name, "name"),
            priority=check_priority(opts.get("priority", 0)),
            retries=check_count(opts.get("retries", 0), "retries", low=0),
            retry_delay=check_seconds(opts.get("retry_delay", 1.0), "retry_delay",
                                      allow_zero=True),
            timeout=None if timeout is None else check_seconds(timeout, "timeout"),
            resources=J.normalize_resources(opts.get("resources")),
            memory=check_memory(opts.get("memory")),
        )
        for res, units in options.resources.items():
            check_name(res, "resources")
            check_count(units, f"resources[{res!r}]")
    except ValueError as exc:
        raise SubmitError(f"cannot submit {label}: {exc}; nothing was stored") from None
    return options


def _shared_options(fn: Callable[..., Any], opts: dict[str, Any], now: float,
                    label: str) -> tuple[J.Options, float | None, tuple[str, ...]]:
    from .times import parse_after

    options = build_options(opts, default_name(fn), label)
    try:
        not_before = parse_after(opts.get("after"), now=now)
    except ValueError as exc:
        raise SubmitError(f"cannot submit {label}: {exc}") from None
    return options, not_before, needs_ids(opts.get("needs"))


def build_job(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    opts: dict[str, Any],
    *,
    job_id: str,
    now: float,
    function: Function | None = None,
    fingerprint: str | None = None,
    parent: str | None = None,
    step: int | None = None,
    position: int | None = None,
    memo: dict[Any, Any] | None = None,
) -> J.NewJob:
    """Everything ``submit`` stores for one call; raises before anything is written.

    ``memo`` (a dict kept for one batch, as ``map`` does) shares the work that depends
    only on ``fn`` and ``opts`` between the calls of the batch."""
    label = f"{function_label(fn) if callable(fn) else repr(fn)}(...)"
    function = function or pack_function(fn)
    shared = None if memo is None else memo.get((id(fn), id(opts)))
    if shared is None:
        shared = _shared_options(fn, opts, now, label)
        if memo is not None:
            memo[(id(fn), id(opts))] = shared
    options, not_before, given_needs = shared
    plain = plain_call(args, kwargs)
    refs: tuple[str, ...]
    if plain:
        blob, refs = pickle.dumps((args, kwargs), PROTOCOL), ()  # no job handles inside
    else:
        blob, refs = pack_args(args, kwargs, label=label)
    needs = tuple(dict.fromkeys(given_needs + refs)) if refs else given_needs
    key = opts.get("key", "auto")
    if key == "auto":
        key = _auto_key(fingerprint or function_fingerprint(fn), args, kwargs, needs,
                        plain=plain, label=label)
    elif key is not None and (not isinstance(key, str) or not key.strip()):
        raise SubmitError(f"cannot submit {label}: key={key!r}; give 'auto', None or a "
                          "non-empty string; nothing was stored")
    return J.NewJob(id=job_id, name=options.name or default_name(fn), options=options,
                    key=key, function=function, args=blob, refs=refs, needs=needs,
                    not_before=not_before, parent=parent, step=step, position=position)
