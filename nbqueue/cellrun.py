"""A notebook cell run as a job, in a worker: ``run_cell`` and the ``CellOutputs`` it returns.

``%%enqueue`` (``nbqueue.notebook.magics``) submits ``run_cell(source, inputs, outputs)``:
the cell's source and the values of the notebook variables it reads travel in the
message (a module as a ``ModuleRef``, by name); the worker runs the source in a fresh
namespace seeded with them and returns a ``CellOutputs`` dict of the names the cell
assigned. Nothing here imports IPython, so a worker (or a dask worker on another
machine) can import it. Which names a cell reads and assigns, and its key, are the
notebook's side (``nbqueue.notebook.cellsource``); what it shows, ``nbqueue.cellview``.

The names jobs and results are stored under stay ``nbqueue.cells.*`` (``STORED_IN``).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import linecache
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .cellview import outputs_html
from .display import bundle

#: The module that jobs and results name for what is defined here. A cell job stores its
#: function pickled by reference, ``nbqueue.cells.run_cell``; its result names
#: ``nbqueue.cells._rebuild_outputs``; a module among its inputs ``nbqueue.cells.ModuleRef``:
#: these lived in ``nbqueue.cells`` before it was split by where code runs. Queue
#: directories hold those names, and a cell's key hashes a ``CellOutputs`` input with
#: them, so they are kept (``nbqueue.cells`` re-exports what is here): a job stored
#: before runs, and the same cell run again finds the same job.
STORED_IN = "nbqueue.cells"


@dataclass(frozen=True)
class ModuleRef:
    """A module read by a cell travels by name and is imported in the worker."""

    name: str


def run_cell(source: str, inputs: dict[str, Any], outputs: Sequence[str] = (), *,
             strict: bool = False, from_jobs: Sequence[str] = (), label: str = "cell") -> CellOutputs:
    """Run a cell's source in a fresh namespace seeded with ``inputs``.

    Parameters
    ----------
    source : str
        Python source (IPython syntax already transformed away).
    inputs : dict
        The values of the notebook variables the cell reads. For the names in
        ``from_jobs`` the value is the outputs dict of the cell job that assigns
        them (a job handle replaced by its result), and the name is taken from it.
    outputs : sequence of str
        The names to hand back. With ``strict`` (``--out``) each must exist.
    label : str
        The cell's name, used in tracebacks and messages.

    Returns
    -------
    CellOutputs
        The outputs whose values pickle; the others are listed in ``dropped``.
    """
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    for var, value in inputs.items():
        if var in from_jobs:
            if var not in value:
                raise NameError(f"name {var!r} is not defined: the cell job it was to come "
                                f"from finished without assigning it")
            value = value[var]
        if isinstance(value, ModuleRef):
            value = importlib.import_module(value.name)
        ns[var] = value
    filename = f"<nbqueue cell {label}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    tree = ast.parse(source, filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)  # type: ignore[attr-defined]  # an Expr
    exec(compile(tree, filename, "exec"), ns)
    shown = eval(compile(last, filename, "eval"), ns) if last is not None else None
    missing = [var for var in outputs if var not in ns]
    if strict and missing:
        raise NameError(f"--out {', '.join(missing)}: the cell did not assign "
                        f"{'it' if len(missing) == 1 else 'them'}")
    result = CellOutputs.pack({var: ns[var] for var in outputs if var in ns}, shown)
    if result.dropped:
        print(f"nbqueue: left out of the outputs of cell {label} (cannot be pickled): "
              + "; ".join(f"{k} ({why})" for k, why in result.dropped.items()), file=sys.stderr)
    return result


class CellOutputs(dict):  # type: ignore[type-arg]
    """The result of a cell job: ``{name: value}`` of the variables it assigned.

    ``dropped`` maps the names left out (their values cannot be pickled) to why;
    ``display`` is the display bundle of the cell's last expression, if any.
    """

    dropped: dict[str, str]
    display: dict[str, str] | None

    def __init__(self, values: dict[str, Any] | None = None, *,
                 dropped: dict[str, str] | None = None,
                 display: dict[str, str] | None = None) -> None:
        super().__init__(values or {})
        self.dropped = dict(dropped or {})
        self.display = display
        self._blobs: dict[str, bytes] | None = None

    @classmethod
    def pack(cls, values: dict[str, Any], shown: Any = None) -> CellOutputs:
        """Pickle each value once, keeping those that pickle."""
        blobs, dropped = {}, {}
        for var, value in values.items():
            try:
                blobs[var] = cloudpickle.dumps(value, protocol=5)
            except Exception as exc:
                dropped[var] = f"{type(value).__name__}: {exc}"
        out = cls({k: v for k, v in values.items() if k in blobs}, dropped=dropped,
                  display=None if shown is None else bundle(shown))
        out._blobs = blobs
        return out

    def __reduce__(self) -> Any:
        blobs = self._blobs if self._blobs is not None and set(self._blobs) == set(self) else {
            k: cloudpickle.dumps(v, protocol=5) for k, v in self.items()}
        return (_rebuild_outputs, (blobs, self.dropped, self.display))

    def _repr_html_(self) -> str:
        return outputs_html(self)


def _rebuild_outputs(blobs: dict[str, bytes], dropped: dict[str, str],
                     display: dict[str, str] | None) -> CellOutputs:
    return CellOutputs({k: cloudpickle.loads(v) for k, v in blobs.items()}, dropped=dropped,
                       display=display)


for _stored in (run_cell, CellOutputs, _rebuild_outputs, ModuleRef):
    _stored.__module__ = STORED_IN  # see STORED_IN: pickled under their old module's name
