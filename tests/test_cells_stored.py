"""A cell job's stored names and key outlive the split of ``nbqueue.cells``.

A ``%%enqueue`` job stores its function pickled by reference (``nbqueue.cells.run_cell``),
its result pickles naming ``nbqueue.cells._rebuild_outputs``, a module among its inputs
as ``nbqueue.cells.ModuleRef``, and a cell run again finds its job by a key that hashes
its inputs. The bytes and keys below were made by the code before the split (the one
module ``nbqueue/cells.py``); queue directories hold them. They must load, run and
match as they did: a job stored before still runs, and the same cell run again attaches
to it instead of running it again.
"""

from __future__ import annotations

import math
import pickle
import sys

import pytest

import nbqueue
from nbqueue.cellrun import CellOutputs, ModuleRef, run_cell
from nbqueue.message import content_key, function_fingerprint, pack_function
from nbqueue.notebook.cellsource import cell_key, travelling_value

# pickle.dumps(nbqueue.cells.run_cell, 5) and its Function id, before the split
OLD_FUNCTION = (b"\x80\x05\x95\x1e\x00\x00\x00\x00\x00\x00\x00\x8c\rnbqueue.cells\x94"
                b"\x8c\x08run_cell\x94\x93\x94.")
OLD_FUNCTION_ID = "160151fe47175698431297d4"

# pickle.dumps(CellOutputs({"x": 1, "y": [2, 3]}, dropped={"z": "TypeError: no"},
#                          display={"text/plain": "5"}), protocol=5), before the split
OLD_OUTPUTS = (b"\x80\x05\x95\x80\x00\x00\x00\x00\x00\x00\x00\x8c\rnbqueue.cells\x94\x8c\x10"
               b"_rebuild_outputs\x94\x93\x94}\x94(\x8c\x01x\x94C\x05\x80\x05K\x01.\x94\x8c"
               b"\x01y\x94C\x14\x80\x05\x95\t\x00\x00\x00\x00\x00\x00\x00]\x94(K\x02K\x03e.\x94u"
               b"}\x94\x8c\x01z\x94\x8c\rTypeError: no\x94s}\x94\x8c\ntext/plain\x94\x8c\x015"
               b"\x94s\x87\x94R\x94.")

# the arguments of run_cell("x = m.pi", {"m": ModuleRef("math")}, ["x"], strict=False,
# label="c") as a job stores them, before the split
OLD_ARGS = (b"\x80\x05\x95k\x00\x00\x00\x00\x00\x00\x00\x8c\x08x = m.pi\x94}\x94\x8c\x01m\x94"
            b"\x8c\rnbqueue.cells\x94\x8c\tModuleRef\x94\x93\x94)\x81\x94}\x94\x8c\x04name\x94"
            b"\x8c\x04math\x94sbs]\x94\x8c\x01x\x94a\x87\x94}\x94(\x8c\x06strict\x94\x89\x8c"
            b"\x05label\x94\x8c\x01c\x94u\x86\x94.")

# function_fingerprint(run_cell) before the split, under Python 3.11: it hashes the
# function's bytecode, which each Python version compiles its own way
OLD_FINGERPRINT_311 = "87deae0e3a4206be499ff78fa13593cf"

# cell_key(...) of the cell below, before the split
OLD_KEY = "cell:d2b2587e733ce701a1bd150a45308173"
OLD_PLAIN_KEY = "cell:df4e49797bfa6323c554f99e0b039df7"  # cell_key("a", "x = 1", {}, ["x"], ...)


class Handle:
    """Stands for a job handle among a cell's inputs: it hashes as its id."""

    __nbqueue_job_id__ = "1f3a02c9de"


def outputs() -> CellOutputs:
    return CellOutputs({"x": 1, "y": [2, 3]}, dropped={"z": "TypeError: no"},
                       display={"text/plain": "5"})


def test_run_cell_is_stored_as_before():
    function = pack_function(run_cell)
    assert function.blob == OLD_FUNCTION and function.id == OLD_FUNCTION_ID
    assert not function.by_value
    assert pickle.loads(OLD_FUNCTION) is run_cell


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="bytecode differs by version")
def test_run_cell_submitted_with_an_automatic_key_keeps_it():
    # q.submit(run_cell, ...) without key=: the key hashes run_cell's code, so its body
    # (comments aside) is as it was
    assert function_fingerprint(run_cell) == OLD_FINGERPRINT_311
    assert content_key(OLD_FINGERPRINT_311, ("x = 1", {}, ["x"]), {"label": "c"}, ()) == (
        "auto:1e86c9274763eb07bdda5b24b4f5f806")


def test_a_cells_outputs_and_inputs_pickle_and_load_as_before():
    loaded = pickle.loads(OLD_OUTPUTS)
    assert type(loaded) is CellOutputs and dict(loaded) == {"x": 1, "y": [2, 3]}
    assert loaded.dropped == {"z": "TypeError: no"} and loaded.display == {"text/plain": "5"}
    assert pickle.dumps(outputs(), protocol=5) == OLD_OUTPUTS
    assert pickle.loads(OLD_ARGS) == (("x = m.pi", {"m": ModuleRef("math")}, ["x"]),
                                      {"strict": False, "label": "c"})
    args = (("x = m.pi", {"m": travelling_value(math)}, ["x"]), {"strict": False, "label": "c"})
    assert pickle.dumps(args, protocol=5) == OLD_ARGS


def test_the_old_module_name_still_imports_what_was_stored():
    from nbqueue import cells

    assert (cells.run_cell, cells.CellOutputs, cells.ModuleRef) == (run_cell, CellOutputs,
                                                                    ModuleRef)


def test_a_cells_key_is_unchanged():
    inputs = {"n": 3, "data": [1.5, "a", (2, None)], "m": travelling_value(math),
              "fit": Handle(),
              "out": CellOutputs({"x": 1, "y": "two"}, dropped={"f": "TypeError: no"},
                                 display={"text/plain": "1"})}
    assert cell_key("train", "y = n * data[0]\nout", inputs, ["y"], True, ["fit"],
                    ["abc"]) == OLD_KEY
    assert cell_key("a", "x = 1", {}, ["x"], False, [], []) == OLD_PLAIN_KEY


def test_a_cell_job_stored_as_before_runs_and_a_rerun_attaches(tmp_path):
    with nbqueue.Queue(tmp_path / "q", workers=1) as q:
        args, kwargs = pickle.loads(OLD_ARGS)
        job = q.submit(pickle.loads(OLD_FUNCTION), *args, **kwargs, key=OLD_PLAIN_KEY)
        result = job.result(timeout=120)
        assert type(result) is CellOutputs and result == {"x": math.pi}
        again = q.submit(run_cell, "x = m.pi", {"m": travelling_value(math)}, ["x"],
                         label="c", key=OLD_PLAIN_KEY)
        assert again.id == job.id and q.counts()["done"] == 1
