"""Finding a job by what a person types: its id, its key, its name, or the start of its id."""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from .errors import AmbiguousJob, NoSuchJob

if TYPE_CHECKING:
    from .store import Store

MIN_PREFIX = 4  # hex digits of an id's start that are taken as one
_SHOWN = 8  # candidates an ambiguous start lists


def is_id_start(text: str) -> bool:
    """Whether ``text`` can be the start of a job id (4 or more hex digits, then maybe a
    child's ``.step.position``).

    >>> is_id_start("4a25"), is_id_start("4a253eabe0.0.1"), is_id_start("4a2"), is_id_start("fit")
    (True, True, False, False)
    """
    root = text.split(".", 1)[0]
    return len(root) >= MIN_PREFIX and all(c in string.hexdigits for c in root)


def resolve(store: Store, ref: str) -> str:
    """The id of the job ``ref`` names, tried in this order: an id, a key, a name (the
    newest job of that name), the start of an id (4 or more hex digits, any case, that
    start one top-level id only; a child's ``.step.position`` may follow).

    Raises ``NoSuchJob`` if nothing matches, ``AmbiguousJob`` (listing them) if the start
    of an id matches several jobs."""
    ref = ref.strip()
    if not ref:
        raise NoSuchJob(f"give a job's name, id, key or the start of its id (queue {store.path})")
    found = store.find(ref) or store.newest_named(ref)
    if found is not None:
        return found
    if is_id_start(ref):
        root, dot, rest = ref.lower().partition(".")
        roots = store.root_ids(root, _SHOWN + 1)
        if len(roots) > 1:
            raise AmbiguousJob(_ambiguous(store, ref, roots))
        if roots:
            found = store.find(roots[0] + dot + rest)
            if found is not None:
                return found
    raise NoSuchJob(f"no job named {ref!r}, nor with that id, key or start of an id, in queue "
                    f"{store.path}; list them with: nbqueue jobs {store.path}")


def _ambiguous(store: Store, ref: str, roots: list[str]) -> str:
    names = store.names_of(roots[:_SHOWN])
    listed = "; ".join(f"{r} ({names[r]})" if r in names else r for r in roots[:_SHOWN])
    more = ", and more" if len(roots) > _SHOWN else ""
    return (f"{ref!r} is the start of several job ids in queue {store.path}: {listed}{more}. "
            "Give more digits of the id, or the job's name. Nothing was changed.")
