"""``import nbqueue`` stays light: no IPython, ipywidgets, ipykernel or dask."""

from __future__ import annotations

import json

from conftest import run_python

HEAVY = ("IPython", "ipywidgets", "ipykernel", "distributed", "dask")


def test_import_loads_no_notebook_or_dask_modules(tmp_path):
    out = run_python(
        """
        import json, sys
        import nbqueue
        print(json.dumps(sorted(sys.modules)))
        """,
        cwd=tmp_path,
    ).stdout
    modules = json.loads(out)
    assert "nbqueue.queue" in modules  # the check would be empty if nothing was imported
    loaded = [m for m in modules if m.split(".")[0] in HEAVY]
    assert loaded == []


def test_opening_a_queue_loads_none_either(tmp_path):
    out = run_python(
        f"""
        import json, sys
        import nbqueue
        q = nbqueue.Queue({str(tmp_path / "q")!r}, workers=1)
        assert q.submit(abs, -2).result(timeout=60) == 2
        q.stop()
        print(json.dumps(sorted(sys.modules)))
        """,
        cwd=tmp_path,
    ).stdout
    loaded = [m for m in json.loads(out) if m.split(".")[0] in HEAVY]
    assert loaded == []
