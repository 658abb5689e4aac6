"""Notebook cells as jobs: which names a cell reads and assigns, and running one in a worker.

``%%enqueue`` (``nbqueue.notebook.magics``) submits ``run_cell(source, inputs, outputs)``:
the cell's source and the values of the notebook variables it reads travel in
the message; the worker runs the source in a fresh namespace seeded with them
and returns a ``CellOutputs`` dict of the names the cell assigned. Nothing here
imports IPython, so a worker (or a dask worker on another machine) can import it.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import linecache
import symtable
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cloudpickle
import joblib

# A review payload that stands for "the outputs of job X", rendered by panels once
# that job has finished (a gate is created before the cell it reviews has run).
RESULT_REF_MIME = "application/vnd.nbqueue.job-result+json"

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda, ast.ListComp,
           ast.SetComp, ast.DictComp, ast.GeneratorExp)


# -- which names a cell reads and assigns -----------------------------------------------------


def cell_names(source: str) -> tuple[list[str], list[str]]:
    """The names a cell reads before assigning them, and the names it assigns.

    Both lists are in order of first use. Names read inside functions, classes,
    lambdas and comprehensions count as read where they are defined (over-capture
    is harmless: only names present in the notebook are captured).

    >>> cell_names("y = x + 1\\nz = y * 2")
    (['x'], ['y', 'z'])
    >>> cell_names("n = n + 1")
    (['n'], ['n'])
    >>> cell_names("for i in items:\\n    total += i")
    (['items', 'total'], ['i', 'total'])
    >>> cell_names("import numpy as np\\ndef f(a):\\n    return np.mean(a) + k\\nr = f(data)")
    (['k', 'data'], ['np', 'f', 'r'])
    >>> cell_names("[v * w for v in vs]")
    (['vs', 'w'], [])
    """
    scan = _Scan()
    scan.visit(ast.parse(source))
    return list(scan.reads), list(scan.assigned)


class _Scan(ast.NodeVisitor):
    """Walks module-level code in evaluation order."""

    def __init__(self) -> None:
        self.reads: dict[str, None] = {}
        self.assigned: dict[str, None] = {}

    def load(self, name: str) -> None:
        if name not in self.assigned:
            self.reads.setdefault(name, None)

    def store(self, name: str) -> None:
        self.assigned.setdefault(name, None)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.store(node.id)
        else:  # Load, and Del (deleting needs the name to exist)
            self.load(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.visit(node.annotation)
        self.visit(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.load(node.target.id)
            self.visit(node.value)
            self.store(node.target.id)
        else:
            self.visit(node.value)
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in node.body + node.orelse:
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.store(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.store(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.store(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.store(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.store(node.rest)

    def visit_Global(self, node: ast.Global) -> None:
        pass

    def generic_visit(self, node: ast.AST) -> None:
        if isinstance(node, _SCOPES):
            self._scope(node)
        else:
            super().generic_visit(node)

    def _scope(self, node: ast.AST) -> None:
        # A nested scope reads, where it is defined, the globals it refers to: its
        # decorators, defaults and bases now, its body whenever it is called.
        table = symtable.symtable(ast.unparse(node), "<cell>", "exec")
        for symbol in table.get_symbols():
            if symbol.is_referenced():
                self.load(symbol.get_name())
        stores: list[str] = []
        for child in table.get_children():
            for name, assigned in _global_refs(child):
                if assigned:
                    stores.append(name)  # `global x; x = ...` or a walrus in a comprehension
                else:
                    self.load(name)
        for symbol in table.get_symbols():
            if symbol.is_assigned():
                self.store(symbol.get_name())
        for name in stores:
            self.store(name)


def _global_refs(table: symtable.SymbolTable) -> Iterable[tuple[str, bool]]:
    for symbol in table.get_symbols():
        if symbol.is_global() and (symbol.is_referenced() or symbol.is_assigned()):
            yield symbol.get_name(), symbol.is_assigned() and not symbol.is_referenced()
    for child in table.get_children():
        yield from _global_refs(child)


# -- inputs: what travels, and how it is fingerprinted ----------------------------------------


@dataclass(frozen=True)
class ModuleRef:
    """A module read by a cell travels by name and is imported in the worker."""

    name: str


def travelling_value(value: Any) -> Any:
    """What a notebook value becomes in the message (modules by name)."""
    if isinstance(value, types.ModuleType):
        return ModuleRef(value.__name__)
    return value


def value_digest(value: Any) -> Any:
    """A stable fingerprint of an input for the cell's key.

    Functions hash their code and the globals they read (editing one makes a new
    key); a job handle hashes as its id; other values by content (``joblib.hash``).

    >>> value_digest(ModuleRef("math"))
    ('module', 'math')
    >>> value_digest([1, 2]) == value_digest([1, 2])
    True
    """
    from .message import function_fingerprint, job_id_of

    job_id = job_id_of(value)
    if job_id is not None:
        return ("job", job_id)
    if isinstance(value, ModuleRef):
        return ("module", value.name)
    if isinstance(value, (types.FunctionType, types.MethodType)):
        return ("function", function_fingerprint(value))
    try:
        return ("value", joblib.hash(value))
    except Exception:  # cannot be hashed: the key cannot be stable, so it never matches
        return ("unhashable", id(value))


def cell_key(name: str, source: str, inputs: dict[str, Any], outputs: Sequence[str],
             strict: bool, from_jobs: Sequence[str], needs: Sequence[str]) -> str:
    """The idempotency key of a cell job: same cell, same inputs -> same job.

    >>> cell_key("a", "x = 1", {}, ["x"], False, [], []) == cell_key("a", "x = 1", {}, ["x"], False, [], [])
    True
    """
    digests = sorted((k, value_digest(v)) for k, v in inputs.items())
    parts = (name, source, digests, list(outputs), strict, sorted(from_jobs), sorted(needs))
    return "cell:" + joblib.hash(parts)


# -- in the worker ------------------------------------------------------------------------------


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
        last = ast.Expression(tree.body.pop().value)
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
        from .display import bundle

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


def outputs_html(outputs: dict[str, Any]) -> str:
    """A cell job's outputs as HTML: the last expression's display, then the variables.

    >>> ">x</td>" in outputs_html(CellOutputs({"x": 1}))
    True
    """
    from .cellview import variables_html
    from .display import bundle_html

    display = getattr(outputs, "display", None)
    shown = f'<div class="nbq-cell-display">{bundle_html(display)}</div>' if display else ""
    table = variables_html(outputs) if outputs or getattr(outputs, "dropped", None) else ""
    return shown + table or "<i>no outputs</i>"
