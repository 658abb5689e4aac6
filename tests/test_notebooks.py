"""Every example notebook runs top to bottom on a real ipykernel (nbclient), and a notebook
of ``%%enqueue`` cells resumes in a fresh kernel without running finished cells again."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from nbformat.v4 import new_code_cell, new_notebook  # noqa: E402

import nbqueue  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def kernel_env(folder: Path) -> dict[str, str]:
    """A kernel that keeps everything it writes under ``folder``."""
    env = dict(os.environ)
    env.update(NBQUEUE_DIR=str(folder / "q"), TMPDIR=str(folder), IPYTHONDIR=str(folder / "ipython"))
    return env


def run(nb: nbformat.NotebookNode, folder: Path) -> nbformat.NotebookNode:
    """Execute in a fresh kernel whose working directory is ``folder``; a cell error fails."""
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180,
                                     resources={"metadata": {"path": str(folder)}})
    client.execute(env=kernel_env(folder))
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                out.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                out.append(output.data.get("text/plain", ""))
            elif output.output_type == "error":
                out.append(f"{output.ename}: {output.evalue}")
    return "\n".join(out)


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    assert "01-quickstart.ipynb" in names and "03-review-gates.ipynb" in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path):
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells), "commit notebooks without outputs"
    run(nb, tmp_path)
    text = text_of(nb)
    assert "Traceback" not in text
    if path.name == "01-quickstart.ipynb":
        assert "spread" in text and "('summary', 'done')" in text
    if path.name == "03-review-gates.ipynb":
        assert "PUBLISHED - Q3 sales: 446 units" in text
        q = nbqueue.Queue(tmp_path / "q", start=False)
        gate, = q.jobs(name="Review report")
        assert gate.state == "done" and gate.result().comment
        assert q.jobs(name="publish")[0].state == "done"


def resumable(side: Path, n: int) -> nbformat.NotebookNode:
    cells = [
        "%load_ext nbqueue",
        f"n = {n}",
        f"%%enqueue work\nwith open({str(side)!r}, 'a') as f:\n    f.write(f'ran with {{n}}\\n')\n"
        "square = n * n",
        "%nbq wait work\nprint('square is', square)",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def test_a_notebook_resumes_in_a_fresh_kernel(tmp_path: Path):
    side = tmp_path / "side.txt"
    first = run(resumable(side, 4), tmp_path)
    assert "square is 16" in text_of(first)
    assert side.read_text() == "ran with 4\n"

    again = run(resumable(side, 4), tmp_path)  # a new kernel, the same folder
    assert "square is 16" in text_of(again)  # the variable came back...
    assert side.read_text() == "ran with 4\n"  # ...and the cell did not run again

    changed = run(resumable(side, 5), tmp_path)  # another input: it runs
    assert "square is 25" in text_of(changed)
    assert side.read_text() == "ran with 4\nran with 5\n"
    q = nbqueue.Queue(tmp_path / "q", start=False)
    assert sorted(j.state for j in q.jobs(name="work")) == ["done", "done"]


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def notebook(cells: list[str]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def plain_outputs(cell: nbformat.NotebookNode) -> str:
    return "\n".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs)


def test_the_saved_notebook_keeps_each_cells_final_state(tmp_path: Path):
    flag = tmp_path / "go"
    nb = notebook([
        "%load_ext nbqueue",
        "%%enqueue data\nimport pandas as pd\ndf = pd.DataFrame({'x': [1, 2, 3]})\ndf",
        f"%%enqueue total\nimport os, time\nwhile not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.05)\nprint('summing', len(df))\nfor y in range(3):\n    pass\n"
        "total = int(df.x.sum())",
        f"y = 'mine'  # assigned after total was submitted\nopen({str(flag)!r}, 'w').close()",
        "%nbq wait",
        "print(y, total)",
        "%nbq result total y",
    ])
    run(nb, tmp_path)
    saved = tmp_path / "saved.ipynb"
    nbformat.write(nb, saved)  # what a front end saves: the outputs as last updated
    nb = nbformat.read(saved, as_version=4)
    data_cell, total_cell = nb.cells[1], nb.cells[2]
    for cell in (data_cell, total_cell):
        assert cell.outputs and all(o.output_type == "display_data" for o in cell.outputs)
        assert not any(WIDGET_MIME in o.data for o in cell.outputs)
        status = cell.outputs[0].data
        assert "nbq-done" in status["text/html"] and "<nbqueue" not in status["text/plain"]
    assert " done" in plain_outputs(data_cell) and re.search(r"df\s+DataFrame",
                                                             plain_outputs(data_cell))
    assert "<table" in data_cell.outputs[1].data["text/html"]  # the DataFrame, as pandas shows it
    total = plain_outputs(total_cell)
    assert "total (job" in total and " done" in total and re.search(r"total\s+int\s+6", total)
    assert "summing 3" in total  # the tail of its output
    assert "kept the notebook's y" in total and "%nbq result total y" in total
    assert "mine 6" in text_of(nb)  # the notebook's y was kept...
    assert nb.cells[6].outputs[0].data["text/plain"] == "2"  # ...and the job's is at hand


def test_a_name_nothing_defines_fails_at_submit_in_a_kernel(tmp_path: Path):
    nb = notebook([
        "%load_ext nbqueue",
        "%%enqueue first\na = 1",
        "%nbq wait first",
        "%%enqueue second\nb = a + not_defined_anywhere",
    ])
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180, allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=kernel_env(tmp_path))
    error, = [o for o in nb.cells[3].outputs if o.output_type == "error"]
    assert error.ename == "InputNotDefined"
    assert "'not_defined_anywhere' is not defined" in error.evalue
    assert "nothing was submitted" in error.evalue
    q = nbqueue.Queue(tmp_path / "q", start=False)
    try:
        assert [j.name for j in q.jobs()] == ["first"]
    finally:
        q.close()
