"""The output queue: every job that ends reaches each output exactly once, whichever
process completes it, across SIGKILLs at any point of a delivery."""

from __future__ import annotations

import base64
import json
import random
import signal
import subprocess
from pathlib import Path

import jobs
import nbformat
import pytest
from conftest import run_python, start_python, wait_for

import nbqueue
from nbqueue import outputs


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), "a torn last line was left in the file"
    return [json.loads(line) for line in text.splitlines()]


def complete_lines(path: Path) -> int:
    """Whole lines in a file another thread may be appending to right now."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def report_sections(path: Path) -> list[dict]:
    """Per section of a report: its metadata (job, outbox) and its cells."""
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    sections: dict[str, dict] = {}
    for cell in nb.cells:
        meta = cell.metadata.get("nbqueue", {})
        if "job" in meta:
            entry = sections.setdefault(f"{meta['outbox']}:{meta['job']}",
                                        {"job": meta["job"], "outbox": meta["outbox"],
                                         "cells": []})
            entry["cells"].append(cell)
    return list(sections.values())


def ended_ids(q: nbqueue.Queue) -> set[str]:
    return {h.id for h in q.jobs() if h.done()}


def assert_exactly_once(q: nbqueue.Queue, jsonl: Path, report: Path) -> list[dict]:
    """Each output holds every ended job once, in outbox order, without gaps."""
    records = read_jsonl(jsonl)
    seqs = [r["outbox"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gaps or duplicates"
    assert len({r["id"] for r in records}) == len(records)
    assert {r["id"] for r in records} == ended_ids(q)
    sections = report_sections(report)
    assert [s["outbox"] for s in sections] == seqs
    assert [s["job"] for s in sections] == [r["id"] for r in records]
    return records


def test_every_ending_reaches_both_outputs_once(tmp_path: Path) -> None:
    jsonl, report = tmp_path / "results.jsonl", tmp_path / "report.ipynb"
    with nbqueue.Queue(tmp_path / "q", workers=2,
                       outputs=[nbqueue.JsonLines(jsonl), nbqueue.NotebookReport(report)]) as q:
        done = q.map(jobs.square, range(5))
        failed = q.submit(jobs.boom, "bad input")
        image = q.submit(jobs.png_result)
        odd = q.submit(jobs.unjsonable, 3)
        gate = q.review("Check the squares", payload="<b>squares</b>")
        after_gate = q.submit(jobs.noop, needs=[gate], key=None)
        cancelled = q.submit(jobs.noop, after="in 1h", key=None)
        assert cancelled.cancel()
        q.join(timeout=60)
        q.approve(gate.id, comment="looks right")
        q.join(timeout=60)
        count = len(ended_ids(q))
        # the dispatcher delivers by itself, about once a second
        wait_for(lambda: complete_lines(jsonl) == count and all(
            o["behind"] == 0 for o in outputs.registered(q)), message="delivery")
    assert outputs.deliver(q._store) == 0  # nothing left, nothing written twice
    records = {r["id"]: r for r in assert_exactly_once(q, jsonl, report)}

    assert [records[h.id]["result"] for h in done] == [0, 1, 4, 9, 16]
    assert records[failed.id]["state"] == "failed"
    assert records[failed.id]["error"]["exc_type"] == "ValueError"
    assert records[failed.id]["error"]["exc_value"] == "bad input"
    assert records[odd.id]["result"] == "{0, 1, 2}" and records[odd.id]["result_repr"]
    assert records[image.id]["result"].startswith("<Png") and records[image.id]["result_repr"]
    decision = records[gate.id]["result"]
    assert decision["approved"] is True and decision["comment"] == "looks right"
    assert decision["by"] and decision["at"] > 0
    assert records[after_gate.id]["state"] == "done"  # ran once the gate was approved
    assert records[cancelled.id]["state"] == "cancelled"
    for record in records.values():
        assert record["ended"] >= record["created"] > 0
        assert record["queue"] == str(q.path)

    sections = {s["job"]: s for s in report_sections(report)}
    pngs = [o.data["image/png"] for c in sections[image.id]["cells"]
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert pngs and base64.b64decode(pngs[0]) == jobs.tiny_png()
    heading = sections[gate.id]["cells"][0].source
    assert "approved" in heading and "looks right" in heading
    errors = [o for c in sections[failed.id]["cells"] for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert errors and errors[0].ename == "ValueError"


def test_a_headless_process_delivers_outputs_recorded_in_the_directory(tmp_path: Path) -> None:
    jsonl, report = tmp_path / "results.jsonl", tmp_path / "report.ipynb"
    q = nbqueue.Queue(tmp_path / "q", start=False,
                      outputs=[nbqueue.JsonLines(jsonl), nbqueue.NotebookReport(report)])
    handles = q.map(jobs.add, range(10), range(10))
    # another process, opened without outputs=, runs the jobs and delivers them
    run_python(f"""
        import nbqueue
        q = nbqueue.Queue({str(tmp_path / 'q')!r}, workers=2)
        q.join(timeout=120)
        q.stop()
    """, cwd=tmp_path)
    assert all(h.state == "done" for h in handles)
    records = assert_exactly_once(q, jsonl, report)
    assert sorted(r["result"] for r in records) == [2 * i for i in range(10)]


def test_two_processes_delivering_at_once_do_not_duplicate(tmp_path: Path) -> None:
    jsonl, report = tmp_path / "results.jsonl", tmp_path / "report.ipynb"
    q = nbqueue.Queue(tmp_path / "q", start=False,
                      outputs=[nbqueue.JsonLines(jsonl), nbqueue.NotebookReport(report)])
    root = q.submit(jobs.noop, key=None)
    q.map(jobs.add, range(150), range(150), needs=[root], key=None)
    root.cancel()  # 151 endings in one transaction
    code = f"""
        import sys
        from nbqueue.outputs import deliver
        from nbqueue.store import Store
        store = Store({str(tmp_path / 'q')!r})
        print("ready", flush=True)
        sys.stdin.readline()
        print(deliver(store, batch=10), flush=True)
    """
    children = [start_python(code, cwd=tmp_path, stdin=-1) for _ in range(2)]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    for child in children:  # start both deliveries together
        child.stdin.write("go\n")
        child.stdin.flush()
    written = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        written.append(int(out.split()[-1]))
    assert sum(written) == 2 * 151  # two outputs; each record written by one process only
    assert_exactly_once(q, jsonl, report)


def test_two_queues_running_and_delivering_together(tmp_path: Path) -> None:
    jsonl, report = tmp_path / "results.jsonl", tmp_path / "report.ipynb"
    other = start_python(f"""
        import sys, nbqueue
        q = nbqueue.Queue({str(tmp_path / 'q')!r}, workers=1)
        print("ready", flush=True)
        sys.stdin.readline()
        q.stop()
    """, cwd=tmp_path, stdin=-1)
    assert other.stdout.readline().strip() == "ready"
    try:
        with nbqueue.Queue(tmp_path / "q", workers=1, outputs=[
                nbqueue.JsonLines(jsonl), nbqueue.NotebookReport(report)]) as q:
            handles = q.map(jobs.square, range(40), key=None)
            assert [h.result(timeout=120) for h in handles] == [i * i for i in range(40)]
            wait_for(lambda: all(o["behind"] == 0 for o in outputs.registered(q)),
                     message="delivery")
    finally:
        other.communicate("stop\n", timeout=60)
    assert other.returncode == 0
    assert_exactly_once(q, jsonl, report)


def crashing_delivery(queue: Path, point: str, target: Path) -> str:
    """The code of a process that dies at ``point`` of a delivery to ``target``."""
    return f"""
        import json
        import os
        from nbqueue import outputs
        from nbqueue.store import Store

        class TornJsonLines(outputs.JsonLines):
            def write(self, endings):  # half of the first record, then the process dies
                line = json.dumps(endings[0].record()) + "\\n"
                with self.path.open("ab") as f:
                    f.write(line[: len(line) // 2].encode())
                os._exit(9)

        class UncountedJsonLines(outputs.JsonLines):
            def write(self, endings):  # written and made durable; the cursor never moves
                super().write(endings)
                os._exit(9)

        class UncountedReport(outputs.NotebookReport):
            def write(self, endings):
                super().write(endings)
                os._exit(9)

        kind = {{"torn": TornJsonLines, "uncounted": UncountedJsonLines,
                 "report": UncountedReport}}[{point!r}]
        outputs.deliver(Store({str(queue)!r}), [kind({str(target)!r})], batch=5)
    """


def backlog(tmp_path: Path, jsonl: Path, report: Path, n: int) -> nbqueue.Queue:
    """A queue with outputs registered and ``n`` + a few ended jobs not yet delivered."""
    q = nbqueue.Queue(tmp_path / "q", start=False,
                      outputs=[nbqueue.JsonLines(jsonl), nbqueue.NotebookReport(report)])
    for i in range(3):
        gate = q.review(f"gate {i}", payload=f"payload {i}")
        q.approve(gate.id, comment=f"ok {i}")
    root = q.submit(jobs.noop, key=None)
    q.map(jobs.add, range(n), range(n), needs=[root], key=None)
    root.cancel()
    return q


@pytest.mark.parametrize("point", ["torn", "uncounted", "report"])
def test_crash_at_each_point_of_a_delivery(tmp_path: Path, point: str) -> None:
    jsonl, report = tmp_path / "results.jsonl", tmp_path / "report.ipynb"
    q = backlog(tmp_path, jsonl, report, 20)
    code = crashing_delivery(tmp_path / "q", point, report if point == "report" else jsonl)
    for _ in range(2):  # die in the middle twice in a row
        proc = run_python(code, cwd=tmp_path, check=False)
        assert proc.returncode == 9, proc.stderr
    outputs.deliver(q._store)
    assert_exactly_once(q, jsonl, report)


def test_sigkill_at_random_points_of_deliveries(tmp_path: Path) -> None:
    jsonl, report = tmp_path / "results.jsonl", tmp_path / "report.ipynb"
    q = backlog(tmp_path, jsonl, report, 300)
    rng = random.Random(1234)
    code = f"""
        from nbqueue.outputs import deliver
        from nbqueue.store import Store
        store = Store({str(tmp_path / 'q')!r})
        print("ready", flush=True)
        deliver(store, batch=3)
        print("finished", flush=True)
    """
    kills = 0
    for _ in range(6):
        child = start_python(code, cwd=tmp_path)
        assert child.stdout.readline().strip() == "ready"
        try:
            child.wait(timeout=rng.uniform(0.0, 0.4))  # a random point of the delivery
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.communicate(timeout=60)
    assert kills  # at least one delivery died in the middle
    outputs.deliver(q._store)
    assert len(assert_exactly_once(q, jsonl, report)) == 300 + 1 + 3
    assert not list(tmp_path.glob(".report.ipynb.*.tmp"))


def test_outputs_never_block_jobs(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    broken = nbqueue.JsonLines(blocker / "results.jsonl")  # cannot be created
    with nbqueue.Queue(tmp_path / "q", workers=2, outputs=[broken]) as q:
        assert [h.result(timeout=60) for h in q.map(jobs.square, range(3))] == [0, 1, 4]
        wait_for(lambda: outputs.registered(q)[0]["error"], message="the error noted")
    entry = outputs.registered(q)[0]
    assert entry["behind"] == 3 and entry["error"]
    blocker.unlink()
    blocker.mkdir()  # fixed: the next delivery catches up
    assert outputs.deliver(q._store) == 3
    assert outputs.registered(q)[0]["error"] is None
    assert len(read_jsonl(blocker / "results.jsonl")) == 3


def test_a_new_output_starts_from_its_registration_and_export_has_all(tmp_path: Path) -> None:
    with nbqueue.Queue(tmp_path / "q", workers=2) as q:
        assert q.submit(jobs.square, 2).result(timeout=60) == 4
    jsonl = tmp_path / "later.jsonl"
    with nbqueue.Queue(tmp_path / "q", workers=2, outputs=[nbqueue.JsonLines(jsonl)]) as q:
        assert q.submit(jobs.square, 3).result(timeout=60) == 9
    outputs.deliver(q._store)
    assert [r["result"] for r in read_jsonl(jsonl)] == [9]

    assert outputs.export_jsonl(q, tmp_path / "all.jsonl") == 2
    assert sorted(r["result"] for r in read_jsonl(tmp_path / "all.jsonl")) == [4, 9]
    assert outputs.export_notebook(q, tmp_path / "all.ipynb") == 2
    assert len(report_sections(tmp_path / "all.ipynb")) == 2

    assert outputs.unregister(q, nbqueue.JsonLines(jsonl))
    assert outputs.registered(q) == []


def test_outputs_must_be_outputs(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JsonLines"):
        nbqueue.Queue(tmp_path / "q", outputs=["results.jsonl"])
    with pytest.raises(TypeError, match="JsonLines"):
        nbqueue.Queue(tmp_path / "q", outputs="results.jsonl")
    assert not (tmp_path / "q").exists()
