"""The import contract: nbqueue's modules form layers, and none imports a layer above it.

Every module of the package is parsed with ``ast`` (nothing is imported) and every
``import`` of an nbqueue module is checked, at module level and inside functions alike (a
lazy import is still a dependency); imports under ``if TYPE_CHECKING:`` are annotations
only and do not count. The layers, lowest first, as the code stands:

model
    Records, parsing, validation and formatting with no queue, store or process behind
    them: ``job``, ``waits`` (why a job waits, as facts), ``errors``, ``message``,
    ``arguments``, ``times``, ``chunking``, ``sizes``, ``recurrence``, ``display`` (HTML
    and MIME bundles of records), ``blockers`` (why a job waits, in words),
    ``reviewing`` (a gate's spec: the store keeps it, so it sits below the store),
    ``workflow`` (what a generator yields) and ``_version``.
store
    ``nbqueue.store`` and its modules: the directory, its transitions and its reads.
dispatch
    What runs jobs: the dispatcher, its parts (``dispatch``) and what it drives
    (``executors``, ``daskloop``, ``waiters``, ``lease``, ``housekeeping``), the worker
    side (``runtime``, ``jobrun``, ``chunkrun``, ``channel``, ``memory``, ``replay``,
    ``injob``, ``cellrun`` and ``cells``, the name its jobs are stored under: a cell's code
    runs in a worker), ``cellview`` (what a cell shows, also on the review page), and
    ``outputs`` (with ``outputs.report``): outputs are delivered from the dispatcher's
    thread as jobs end.
api
    The public API and its helpers: ``queue`` (``Queue``), ``handle`` (``Job``),
    ``waiting`` and ``collect`` (results), ``mapjobs``, ``schedules``, ``reviews`` (the
    gates as reviewers see them), ``status``, ``details``, ``lookup``, ``jobtree``, the
    directory's ``service`` and ``registry`` that ``Queue`` starts and records, and
    ``daemon``, the service's process (``nbqueue worker``'s loop), which asks the store
    whether work is near before leaving idle.
front
    What people touch: the package itself (``nbqueue`` re-exports the API and the
    magics), ``cli``, ``web``, ``widgets``, ``notebook`` (the magics, ``%%enqueue``, a
    cell's outputs kept current) and ``demo``.

Two rules: no module imports a module of a higher layer, and a front module imports no
``nbqueue.store`` module (the store is private: the front reads through ``Queue`` and
``Job``). A third keeps presentation out of what is stored: the store imports no
presentation module (``blockers``, ``display``) and no formatter of moments
(``format_local``, ``format_local_time``): it records facts (a not-before timestamp, the
job holding a resource), and their sentences are made when read, in the reader's
timezone. The imports that break them today are listed in ``EXCEPTIONS`` with a reason
each; a new one fails here, and an exception that is no longer needed fails too, so the
list only shrinks.

One dependency has a door of its own: ``nbqueue.store.backend`` is the only module that
imports diskcache and the only one that names its private connection (``_con``, ``_sql``,
``_sql_retry``); the rest of the store uses the names it gives them (docs/storage.md).

No import cycles either, lazy imports included: two modules that import each other
(directly or through others) can be neither read, tested nor loaded one without the
other, and a cycle hidden in a function works only until the order of imports changes.
The cycles that stay are listed in ``CYCLES`` with a reason each (none today); that list
only shrinks too.

The store is reached without an import too, as a queue's attribute ``q._store`` (the
api layer's way in): a front module's code must name no attribute ``_store`` or
``store`` (``getattr`` with the name included), and neither may the code cells of the
notebooks nor the code examples in the docs and the README, which people copy.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "nbqueue"

LAYERS = ("model", "store", "dispatch", "api", "front")

MODULES = {
    "model": ("_version", "job", "waits", "errors", "message", "arguments", "times", "chunking", "sizes",
              "recurrence", "display", "blockers", "reviewing", "workflow"),
    "store": ("store",),
    "dispatch": ("dispatcher", "dispatch", "executors", "daskloop", "waiters", "lease",
                 "housekeeping", "runtime", "jobrun", "chunkrun", "channel", "memory", "replay", "injob",
                 "cells", "cellrun", "cellview", "outputs"),
    "api": ("queue", "handle", "waiting", "collect", "mapjobs", "reviews", "schedules", "status", "details", "lookup",
            "jobtree", "service", "registry", "daemon"),
    "front": ("", "__main__", "cli", "web", "widgets", "notebook", "demo"),
}

#: (importer, imported) -> why it is allowed for now
EXCEPTIONS = {
    ("nbqueue.cli.commands", "nbqueue.store"):
        "nbqueue init creates a directory with Store(path), without a Queue",
    ("nbqueue.cli.repair", "nbqueue.store.check"):
        "nbqueue check works on a directory a Queue may refuse to open (damaged)",
    ("nbqueue.cli.repair", "nbqueue.store.salvage"):
        "nbqueue salvage copies what it can out of a damaged directory",
    ("nbqueue.cli.space", "nbqueue.store.usage"):
        "nbqueue du labels the kinds of Usage (KINDS, UNREFERENCED) that Queue.du returns",
    ("nbqueue.queue", "nbqueue.widgets"):
        "Queue.panel() builds the widget panel (lazy: the core never imports ipywidgets)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    rest = module.removeprefix("nbqueue").removeprefix(".")
    for layer, names in MODULES.items():
        for name in names:
            if rest == name or (name and rest.startswith(name + ".")):
                return layer
    raise AssertionError(f"module {module} is in no layer: add it to MODULES in {__file__}")


def _is_module(dotted: str) -> bool:
    relative = PACKAGE.parent / dotted.replace(".", "/")
    return relative.with_suffix(".py").exists() or (relative / "__init__.py").exists()


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` blocks."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                hidden.update(id(n) for n in ast.walk(child))
    return hidden


def imports_of(path: Path) -> set[str]:
    """The nbqueue modules that ``path`` imports (at run time)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "nbqueue")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "nbqueue":
                continue
            for alias in node.names:  # `from . import job` imports the module nbqueue.job
                dotted = f"{target}.{alias.name}"
                found.add(dotted if _is_module(dotted) else target)
    found.discard(module)
    return found


def breaches() -> dict[tuple[str, str], str]:
    """Every import that breaks a rule: (importer, imported) -> which rule."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        mine = LAYERS.index(layer_of(importer))
        for imported in sorted(imports_of(path)):
            theirs = LAYERS.index(layer_of(imported))
            if theirs > mine:
                out[(importer, imported)] = (f"{LAYERS[mine]} imports {LAYERS[theirs]}")
            elif LAYERS[mine] == "front" and LAYERS[theirs] == "store":
                out[(importer, imported)] = "front imports the private store"
    return out


#: what the store never imports: modules that present, names that format a moment
PRESENTATION_MODULES = ("nbqueue.blockers", "nbqueue.display")
MOMENT_FORMATTERS = ("format_local", "format_local_time")


def imported_names(path: Path) -> set[str]:
    """The names ``path`` imports with ``from ... import`` (annotations aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = _type_checking_nodes(tree)
    return {alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and id(node) not in hidden
            for alias in node.names}


def presentation_in_store() -> list[str]:
    """Every import of presentation by a module of the store."""
    found = []
    for path in sorted((PACKAGE / "store").rglob("*.py")):
        module = module_name(path)
        found += [f"{module} imports {m}" for m in sorted(imports_of(path))
                  if m in PRESENTATION_MODULES]
        found += [f"{module} imports {name}" for name in sorted(imported_names(path))
                  if name in MOMENT_FORMATTERS]
    return found


def test_the_store_imports_no_presentation():
    assert presentation_in_store() == []


def test_the_presentation_rule_can_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "nbqueue")
    (tmp_path / "nbqueue" / "store").mkdir(parents=True)
    for name in ("__init__.py", "blockers.py", "times.py"):
        (tmp_path / "nbqueue" / name).write_text("")
    (tmp_path / "nbqueue" / "store" / "__init__.py").write_text(
        "from ..times import format_local\nfrom .. import blockers\n")
    assert presentation_in_store() == ["nbqueue.store imports nbqueue.blockers",
                                       "nbqueue.store imports format_local"]


PRIVATE = {"store", "_store"}  # a queue's store, by its name now and its name before

#: the code in a notebook or a doc that reaches the store: ``q._store``, ``nbqueue.store``
PRIVATE_IN_TEXT = re.compile(r"\._?store\b")


def store_reaches(source: str) -> list[int]:
    """The lines of a module's code that reach a queue's store without an import: an
    attribute ``.store`` / ``._store``, or ``getattr(x, "_store")``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("getattr", "setattr", "hasattr") and len(node.args) > 1 \
                and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE:
            lines.append(node.lineno)
    return sorted(lines)


def front_store_reaches() -> list[str]:
    """``module:line`` of every place a front module reaches a queue's store."""
    return [f"{module_name(path)}:{line}"
            for path in sorted(PACKAGE.rglob("*.py"))
            if layer_of(module_name(path)) == "front"
            for line in store_reaches(path.read_text(encoding="utf-8"))]


def example_code() -> dict[str, str]:
    """What people copy: the notebooks' code cells and the docs' and README's fenced code
    blocks, by ``file#n``."""
    out = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for n, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                out[f"{path.relative_to(ROOT)}#{n}"] = "".join(cell["source"])
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```[^\n]*\n(.*?)^```", path.read_text(encoding="utf-8"),
                            re.S | re.M)
        for n, block in enumerate(blocks):
            out[f"{path.relative_to(ROOT)}#{n}"] = block
    return out


def test_every_module_is_in_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_no_module_imports_a_higher_layer_nor_the_front_the_store():
    found = breaches()
    new = {pair: rule for pair, rule in found.items() if pair not in EXCEPTIONS}
    assert not new, "imports that break the layers (see this test's docstring):\n" + "\n".join(
        f"  {a} -> {b}: {rule}" for (a, b), rule in sorted(new.items()))
    stale = sorted(pair for pair in EXCEPTIONS if pair not in found)
    assert not stale, f"exceptions no longer needed, remove them from EXCEPTIONS: {stale}"


#: import cycles among nbqueue's modules (lazy imports counted) -> why each stays. None:
#: the last ones went by moving code where it belongs (see docs/architecture.md, "Import
#: cycles"); a new one is broken the same way, not listed here.
CYCLES: dict[frozenset[str], str] = {}


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the nbqueue modules it imports (``imports_of``)."""
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others (itself if in a cycle)."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += graph.get(module, ())
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (each
    group sorted; every module of a group reaches every other)."""
    reach = {module: _reachable(graph, module) for module in graph}
    groups = {frozenset(other for other in reach[module] if module in reach[other])
              for module in graph if module in reach[module]}
    return sorted(sorted(group) for group in groups)


def test_no_import_cycles():
    found = {frozenset(group): group for group in cycles(import_graph())}
    new = [group for key, group in found.items() if key not in CYCLES]
    assert not new, ("modules that import each other (lazy imports count; move the code "
                     "that both need to a module below them): " + "; ".join(
                         " <-> ".join(group) for group in new))
    stale = sorted(sorted(key) for key in CYCLES if key not in found)
    assert not stale, f"cycles no longer there, remove them from CYCLES: {stale}"


def test_the_cycle_check_finds_lazy_cycles_and_skips_annotations(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "nbqueue")
    sources = {
        "__init__.py": "from .a import f\n",
        "a.py": "from .c import C\ndef f():\n    from . import b\n",  # lazy: counts
        "b.py": "from .a import f\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n",
        "d.py": "from .e import g\n",
        "e.py": "def g():\n    from .d import h\n",
    }
    for name, source in sources.items():
        (tmp_path / "nbqueue" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "nbqueue" / name).write_text(source)
    assert cycles(import_graph()) == [["nbqueue.a", "nbqueue.b"], ["nbqueue.d", "nbqueue.e"]]


@pytest.mark.parametrize("source, module, expected", [
    ("from . import job as J\nfrom .store import Store\n", "nbqueue/x.py",
     {"nbqueue.job", "nbqueue.store"}),
    ("from ..store.listing import ENDED\n", "nbqueue/widgets/x.py", {"nbqueue.store.listing"}),
    ("def f():\n    from .queue import Queue\n", "nbqueue/x.py", {"nbqueue.queue"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .queue import Queue\n",
     "nbqueue/x.py", set()),
])
def test_the_parser_finds_imports(tmp_path, monkeypatch, source, module, expected):
    # a fake package beside a copy of nothing: only the layout matters to _is_module
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "nbqueue")
    for name in ("job.py", "queue.py", "store/__init__.py", "store/listing.py",
                 "widgets/__init__.py"):
        (tmp_path / "nbqueue" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "nbqueue" / name).write_text("")
    path = tmp_path / module
    path.write_text(source)
    assert imports_of(path) == expected


def test_the_front_never_reaches_a_queues_store():
    found = front_store_reaches()
    assert not found, ("front modules reach the private store (read through Queue and Job; "
                       f"add a public read to Queue if one is missing): {found}")


def test_notebooks_and_doc_examples_use_the_public_api():
    found = {where: line.strip() for where, code in example_code().items()
             for line in code.splitlines() if PRIVATE_IN_TEXT.search(line)}
    assert len(example_code()) > 20  # the notebooks and the docs were found
    assert not found, f"examples that reach the private store: {found}"


@pytest.mark.parametrize("source, lines", [
    ("def f(q):\n    return q._store.counts()\n", [2]),
    ("def f(q):\n    return q.store\n", [2]),
    ("x = getattr(queue, '_store', queue)\n", [1]),
    ("store = q.tree()\nstore.top_jobs()\nq.counts()\n", []),  # a name, not the attribute
])
def test_the_scan_finds_the_store(source, lines):
    assert store_reaches(source) == lines


def test_the_front_scan_fails_on_a_front_module_that_reaches_the_store(tmp_path, monkeypatch):
    module = __import__(__name__)
    monkeypatch.setattr(module, "PACKAGE", tmp_path / "nbqueue")
    (tmp_path / "nbqueue" / "widgets").mkdir(parents=True)
    (tmp_path / "nbqueue" / "widgets" / "x.py").write_text("def f(q):\n    q._store.get('a')\n")
    (tmp_path / "nbqueue" / "collect.py").write_text("def f(q):\n    q._store.get('a')\n")
    assert front_store_reaches() == ["nbqueue.widgets.x:2"]  # the api layer may


@pytest.mark.parametrize("line, found", [
    ("q._store.counts()", True), ("from nbqueue.store import Store", True),
    ("print(q.store)", True), ("q.counts()  # not from the store", False),
    ("store = q.tree()", False),
])
def test_the_example_scan_finds_the_store(line, found):
    assert bool(PRIVATE_IN_TEXT.search(line)) is found


ADAPTER = "nbqueue.store.backend"
DISKCACHE_PRIVATE = {"_con", "_sql", "_sql_retry"}  # its other private parts share names


def diskcache_reaches(source: str) -> list[str]:
    """What a module's code takes from diskcache directly: ``import diskcache...`` and
    the private attributes of its cache (``_con``, ``_sql``, ``_sql_retry``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names
                      if a.name.split(".")[0] == "diskcache"]
        elif isinstance(node, ast.ImportFrom) and not node.level \
                and (node.module or "").split(".")[0] == "diskcache":
            found.append(f"from {node.module} import")
        elif isinstance(node, ast.Attribute) and node.attr in DISKCACHE_PRIVATE:
            found.append(f".{node.attr}")
    return found


def test_only_the_adapter_reaches_diskcache():
    found = {module_name(path): reach for path in sorted(PACKAGE.rglob("*.py"))
             if (reach := diskcache_reaches(path.read_text(encoding="utf-8")))}
    assert set(found) == {ADAPTER}, (
        f"only {ADAPTER} may import diskcache or use its private connection: {found}")


@pytest.mark.parametrize("source, found", [
    ("import diskcache\n", ["import diskcache"]),
    ("def f():\n    from diskcache.core import DBNAME\n", ["from diskcache.core import"]),
    ("con = cache._con\nrows = cache._sql('SELECT 1')\n", ["._con", "._sql"]),
    ("from .backend import QueueCache\ncon = cache.connection\n", []),
])
def test_the_diskcache_scan_finds_its_uses(source, found):
    assert sorted(diskcache_reaches(source)) == sorted(found)
