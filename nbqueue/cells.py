"""The name cell jobs and their results are stored under (see ``cellrun.STORED_IN``).

A ``%%enqueue`` job's function is stored pickled by reference as
``nbqueue.cells.run_cell``, its result names ``nbqueue.cells._rebuild_outputs`` and a
module among its inputs ``nbqueue.cells.ModuleRef``: the names these had before the
module was split by where code runs. Queue directories keep them, so this module keeps
them importable; the code is in ``nbqueue.cellrun`` (the worker's side),
``nbqueue.notebook.cellsource`` (the notebook's) and ``nbqueue.cellview`` (what a cell
shows). Import from those.
"""

from __future__ import annotations

from .cellrun import CellOutputs, ModuleRef, _rebuild_outputs, run_cell

__all__ = ["CellOutputs", "ModuleRef", "run_cell", "_rebuild_outputs"]
