"""Write ``01-quickstart.ipynb`` and ``03-review-gates.ipynb`` (outputs empty).

Run from anywhere: ``python notebooks/make_01_03.py``. Cells tagged ``auto-approve``
in 03 approve the review through the API so that the notebook runs top to bottom
unattended; the browser test drops them and clicks Approve instead.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

SETUP = """\
import os
import tempfile

# A queue in a temporary folder for this example. Set NBQUEUE_DIR yourself (or leave
# it unset: the default is .nbqueue next to the notebook) to keep jobs across sessions.
os.environ.setdefault("NBQUEUE_DIR", tempfile.mkdtemp(prefix="nbqueue-example-"))
%load_ext nbqueue"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def quickstart() -> nbformat.NotebookNode:
    return notebook([
        md("""
# nbqueue quickstart: a resumable analysis

`%%enqueue` runs a cell as a job in a worker process. The notebook variables the cell
reads are captured when you run it; the variables it assigns come back when the job has
finished. The queue lives in a directory, so a kernel restart (or a reboot) loses
nothing: running the notebook again attaches to the jobs that already ran.
"""),
        code(SETUP),
        md("The inputs of the analysis are ordinary notebook variables."),
        code("""
seed = 7
sizes = [10_000, 20_000, 40_000]"""),
        md("""
This cell returns at once: its job runs in a worker while the status line below it shows
its state, progress and elapsed time, then its outputs. `nbqueue.progress` inside the cell
drives the progress bar.
"""),
        code("""
%%enqueue simulate
import random
import nbqueue

rng = random.Random(seed)
means = {}
for i, n in enumerate(sizes):
    means[n] = sum(rng.random() for _ in range(n)) / n
    nbqueue.progress(i + 1, len(sizes), f"{n} samples")
len(means)"""),
        md("""
A cell that reads `means` while `simulate` is still running waits for it automatically
(the job that assigns `means` becomes a need) and gets the value it computed.
"""),
        code("""
%%enqueue summary
spread = max(means.values()) - min(means.values())
report = "\\n".join(f"{n:>6} samples: mean {m:.4f}" for n, m in sorted(means.items()))"""),
        md("""
The variables come back at the next cell you run once the jobs have finished, or at once
with `%nbq wait NAME` (Interrupt stops the wait, never the job).
"""),
        code("""
%nbq wait summary
print(report)
print(f"spread {spread:.4f}")"""),
        md("""
Run the notebook again, or restart the kernel and run all: the same cells with the same
inputs attach to the finished jobs, and their variables come straight back without running
anything. Change `seed` and only the cells that depend on it run again; `--force` re-runs a
cell regardless.
"""),
        code("""
q = %nbq queue
[(job.name, job.state) for job in q.jobs()]"""),
        md("The panel shows the queue live: counts, jobs with cancel and retry, resources, reviews."),
        code("%nbq"),
    ])


def review_gates() -> nbformat.NotebookNode:
    return notebook([
        md("""
# A report that waits for a person

`%%enqueue --review` adds a human review gate after the cell: the job runs, then the gate
waits in the queue, for as long as it takes and across restarts, until someone approves or
rejects it. Only then do the variables come back, and cells that read them run.
"""),
        code(SETUP),
        code("""
sales = {"north": 120, "south": 95, "east": 143, "west": 88}"""),
        md("""
The report is computed in a worker. Its last expression (a small SVG chart) is what the
reviewer sees on the review card, with the variables the cell assigned.
"""),
        code("""
%%enqueue report --review
class Chart:
    def __init__(self, values):
        self.values = values

    def _repr_svg_(self):
        top = max(self.values.values())
        bars = "".join(
            f'<rect x="{i * 60 + 10}" y="{110 - 100 * v / top:.0f}" width="40" '
            f'height="{100 * v / top:.0f}" fill="#1e88e5"/>'
            f'<text x="{i * 60 + 10}" y="128" font-size="11">{k}</text>'
            for i, (k, v) in enumerate(self.values.items()))
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="260" height="135">{bars}</svg>'

total = sum(sales.values())
best = max(sales, key=sales.get)
headline = f"Q3 sales: {total} units, best region {best}"
Chart(sales)"""),
        md("""
`publish` reads `headline`, which the reviewed cell assigns: it needs the review gate and
runs only once the report is approved.
"""),
        code("""
%%enqueue publish
published = f"PUBLISHED - {headline}"
published"""),
        md("""
The pending reviews, each with its payload and `Approve` / `Reject` buttons and a comment
box. A click is handled when no cell is running. Reviews can also be decided from another
process: `nbqueue approve PATH ID -m "comment"`, or `q.approve(id)`.
"""),
        code("%nbq reviews"),
        code("%nbq"),
        md("""
To run unattended, this notebook approves its own review through the API. `%nbq wait`
on a job whose review is pending returns at once and says so.
"""),
        code("""
%nbq wait report
q = %nbq queue
gate = q.jobs(name="Review report")[-1]
print(gate.state)
q.approve(gate.id, comment="checked by the example notebook")""", "auto-approve"),
        code("""
%nbq wait publish
print(published)
print(q.job(gate.id).result())""", "auto-approve"),
    ])


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating changes nothing
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    for name, nb in (("01-quickstart.ipynb", quickstart()),
                     ("03-review-gates.ipynb", review_gates())):
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
