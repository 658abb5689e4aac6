"""Write ``02-continuations.ipynb`` (outputs empty), with the cell helpers of make_01_03.

Run from anywhere: ``python notebooks/make_02.py``. The cell tagged ``auto-approve``
approves the review through the API, so that the notebook runs top to bottom unattended.
"""

from __future__ import annotations

import nbformat
from make_01_03 import HERE, code, md, notebook


def continuations() -> nbformat.NotebookNode:
    return notebook([
        md("""
# Fan out, wait, reduce — with a person in the loop

A job handler written as a **generator** can hand the queue many jobs at once, wait until
they have all finished without holding a worker, and go on with their results: it is
suspended at each `yield` and resumed with what it waited for. Here a handler counts the
words of some texts in parallel, asks a person to check the counts, and adds them up.
"""),
        code("""
import tempfile
import time

import nbqueue

# A queue in a temporary folder for this example: a queue is just a directory.
q = nbqueue.Queue(tempfile.mkdtemp(prefix="nbqueue-example-") + "/q", workers=2)
q"""),
        md("""
The child job: an ordinary function. Functions defined in a notebook are stored with the
job (pickled by value), so the worker processes need nothing else to run them.
"""),
        code("""
def count_words(text):
    time.sleep(0.2)  # pretend this is slow
    return len(text.split())"""),
        md("""
The handler. `yield [nbqueue.call(...), ...]` creates one child job per text and resumes
with the list of their results, in order. `yield nbqueue.review(...)` creates a review gate
and resumes with the reviewer's `Decision`, which is falsy when rejected. The payload is
anything with a rich display; the reviewer sees its HTML.

The code between the yields is **replayed** each time the handler resumes, so it must be
deterministic and free of side effects: the work and the side effects go in child jobs.
"""),
        code("""
class Counts:
    \"\"\"A small table for the reviewer.\"\"\"

    def __init__(self, names, counts):
        self.rows = list(zip(names, counts, strict=True))

    def __repr__(self):
        return "\\n".join(f"{name}: {count}" for name, count in self.rows)

    def _repr_html_(self):
        rows = "".join(f"<tr><td>{n}</td><td>{c}</td></tr>" for n, c in self.rows)
        return f"<table><tr><th>text</th><th>words</th></tr>{rows}</table>"


def total_words(texts):
    names = sorted(texts)
    counts = yield [nbqueue.call(count_words, texts[name]) for name in names]
    ok = yield nbqueue.review("Check the word counts", payload=Counts(names, counts))
    if not ok:
        return f"rejected: {ok.comment}"
    return sum(counts)"""),
        code("""
texts = {
    "lorem": "lorem ipsum dolor sit amet consectetur adipiscing elit",
    "pangram": "the quick brown fox jumps over the lazy dog",
    "zen": "beautiful is better than ugly explicit is better than implicit",
    "haiku": "an old silent pond a frog jumps into the pond splash silence again",
    "short": "hello world",
}
job = q.submit(total_words, texts)
job"""),
        md("""
While its children run, the handler is `waiting`: it holds no worker and no resource.
Its children are ordinary jobs, listed in order: the counts, then the review gate.
"""),
        code("""
deadline = time.monotonic() + 120
while not q.reviews() and time.monotonic() < deadline:
    time.sleep(0.1)
print(job.state, "-", job.reason)
[(child.name, child.state) for child in job.children]"""),
        md("""
Now the handler waits for a person. The gate sits in state `review` for as long as it
takes — across kernel restarts — until someone approves or rejects it: the panel's
buttons (`q.panel()`), `nbqueue approve PATH ID` in a terminal, or the API.
"""),
        code("""
from IPython.display import display

gate = q.reviews()[0]
print(gate.name, "-", gate.state, "| the handler is", job.state)
display(gate.payload, raw=True)"""),
        md("To run unattended, this notebook approves its own review through the API."),
        code("""
q.approve(gate.id, comment="counts checked by the example notebook")""", "auto-approve"),
        code("""
job.result(timeout=120)"""),
        md("""
The decision is the gate's result: who decided, when, and the comment.
"""),
        code("""
gate.result()"""),
        md("""
Submitting the same call again attaches to the job that already ran (its key is a hash of
the function and its arguments), so re-running this notebook does not redo the work.
"""),
        code("""
again = q.submit(total_words, texts)
again == job, again.result()"""),
        code("""
q.stop()"""),
    ])


def main() -> None:
    nb = continuations()
    nbformat.validate(nb)
    nbformat.write(nb, HERE / "02-continuations.ipynb")


if __name__ == "__main__":
    main()
