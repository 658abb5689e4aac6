"""A failed job's remote traceback starts at the user's code: nbqueue's own wrappers
(runtime.execute, a generator's replay, a cell's run_cell) are left out of what is stored,
and so of ``JobFailed``, the panel and the CLI."""

from __future__ import annotations

import jobs
import pytest

import nbqueue
from nbqueue.cellrun import run_cell

NBQUEUE_FILES = ("nbqueue/runtime.py", "nbqueue/jobrun.py", "nbqueue/replay.py",
                 "nbqueue/cellrun.py")


def frames(traceback: str) -> list[str]:
    """The ``File "...", line N, in f`` lines of a traceback."""
    return [line.strip() for line in traceback.splitlines() if line.strip().startswith("File ")]


def test_a_plain_job_starts_at_its_function(queue):
    with pytest.raises(nbqueue.JobFailed) as info:
        queue.submit(jobs.boom, "kaput").result(timeout=60)
    text = info.value.traceback
    first, *_ = frames(text)
    assert "tests/jobs.py" in first and "in boom" in first
    assert not any(f in text for f in NBQUEUE_FILES)
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: kaput")
    assert "in boom" in str(info.value)  # JobFailed shows the same text


def test_a_cell_job_starts_at_the_cell(queue):
    h = queue.submit(run_cell, "x = 1\ny = x / 0", {}, ["y"], label="divide")
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=60)
    text = info.value.traceback
    assert frames(text) == ['File "<nbqueue cell divide>", line 2, in <module>']
    assert "ZeroDivisionError" in text


def test_a_generator_job_starts_at_the_handler(queue):
    h = queue.submit(jobs.uncaught, "broken row")
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=120)
    text = info.value.traceback
    first = frames(text)[0]
    assert "tests/jobs.py" in first and "in uncaught" in first
    assert not any(f in text for f in NBQUEUE_FILES)
    child_text = h.children[0].exception().traceback
    assert "in boom" in frames(child_text)[0]


def test_an_error_raised_by_nbqueue_itself_keeps_the_frame_that_raised_it(queue):
    # --out names a variable the cell never assigns: run_cell raises, no user frame
    h = queue.submit(run_cell, "x = 1", {}, ["y"], strict=True, label="missing")
    with pytest.raises(nbqueue.JobFailed) as info:
        h.result(timeout=60)
    found = frames(info.value.traceback)
    assert len(found) == 1 and "nbqueue/cellrun.py" in found[0] and "in run_cell" in found[0]
    assert "NameError: --out y" in info.value.traceback
