"""A ``%%enqueue`` cell's source as the notebook reads it: the names it reads and assigns,
its inputs as they travel, and its key.

``cell_names`` finds the notebook variables a cell reads (they become its inputs) and
the ones it assigns (its outputs); ``cell_key`` makes the idempotency key that lets a
cell run again attach to its job. The job itself runs ``nbqueue.cellrun.run_cell`` in
a worker. Nothing here imports IPython.
"""

from __future__ import annotations

import ast
import symtable
import types
from collections.abc import Iterable, Sequence
from typing import Any

import joblib

from ..cellrun import ModuleRef
from ..message import function_fingerprint, job_id_of

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

    def assign(self, name: str) -> None:
        self.assigned.setdefault(name, None)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.assign(node.id)
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
            self.assign(node.target.id)
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
                self.assign(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.assign(node.name)
        for stmt in node.body:
            self.visit(stmt)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.pattern is not None:
            self.visit(node.pattern)
        if node.name:
            self.assign(node.name)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.assign(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        self.generic_visit(node)
        if node.rest:
            self.assign(node.rest)

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
                self.assign(symbol.get_name())
        for name in stores:
            self.assign(name)


def _global_refs(table: symtable.SymbolTable) -> Iterable[tuple[str, bool]]:
    for symbol in table.get_symbols():
        if symbol.is_global() and (symbol.is_referenced() or symbol.is_assigned()):
            yield symbol.get_name(), symbol.is_assigned() and not symbol.is_referenced()
    for child in table.get_children():
        yield from _global_refs(child)


# -- inputs: what travels, and how it is fingerprinted -------------------------------------


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
    digest: str = joblib.hash(parts)
    return "cell:" + digest
