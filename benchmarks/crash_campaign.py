"""Crash campaign: random SIGKILLs of a serving process under a mixed load.

A queue gets a mixed load (a stream of short jobs, slow jobs, jobs holding an exclusive
resource, jobs that spawn children, generators that fan out and pass a review gate) and
a ``JsonLines`` output. Then, round after round, a fresh process serves it and is
SIGKILLed at a random moment; between rounds the campaign approves the gates in review.
At the end one process serves the queue until it is idle. Every execution of a job
writes a start and an end line (one ``O_APPEND`` write each), so the log tells what ran
when, and where.

Printed against targets: jobs lost (0), jobs run twice at the same time (0), healthy jobs
poisoned (0), executions redone per kill (at most 2 per worker), resource holders at
once above capacity (0), outputs duplicated or missing (0).

Run: ``python benchmarks/crash_campaign.py [--small] [--kills N] [--workers W]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from _common import figure, header, parse_args, scratch, use_bench_jobs

SERVE = """
import sys, time, nbqueue
nbqueue.Queue(sys.argv[1], workers=int(sys.argv[2]))
time.sleep(3600)
"""


@dataclass
class Round:
    started: float
    killed: float
    gone: float  # when every worker of this round was gone
    pids: set[int]


@dataclass
class Execution:
    tag: str
    pid: int
    start: float
    end: float | None = None


def submit_load(q, log: str, small: bool) -> None:
    import bench_jobs as B

    sizes = dict(stream=150, slow=6, held=6, spawners=3, fans=2) if small else dict(
        stream=1500, slow=30, held=30, spawners=10, fans=6)
    q.set_resource("db", capacity=1)
    q.map(B.marked, [log] * sizes["stream"], [f"s{i}" for i in range(sizes["stream"])],
          key=None)
    for i in range(sizes["slow"]):
        q.submit(B.marked, log, f"l{i}", 0.4, key=None)
    for i in range(sizes["held"]):
        q.submit(B.marked, log, f"r{i}", 0.15, resources=["db"], key=None)
    for i in range(sizes["spawners"]):
        q.submit(B.marked_spawner, log, f"p{i}", 3, key=None)
    for i in range(sizes["fans"]):
        q.submit(B.marked_fan_out, log, f"g{i}", 4, key=None)


def approve_gates(q) -> None:
    for gate in q.reviews():
        try:
            q.approve(gate.id, comment="crash campaign")
        except ValueError:  # decided meanwhile
            pass


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_log(log: Path) -> list[tuple[str, str, int, float]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        what, tag, pid, at = line.split()
        out.append((what, tag, int(pid), float(at)))
    return out


def run_round(path: Path, log: Path, workers: int, rng: random.Random, errors: Path) -> Round:
    seen = len(read_log(log))
    # stderr to a file: loky's resource tracker of a killed process warns about leaks
    with errors.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-c", SERVE, str(path), str(workers)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    started = time.time()
    time.sleep(rng.uniform(0.4, 1.6))
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.time()
    proc.wait()
    pids = {pid for _, _, pid, _ in read_log(log)[seen:]}
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    # a worker that was starting a job when the poll above read the log
    time.sleep(0.3)
    pids |= {pid for _, _, pid, _ in read_log(log)[seen:]}
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return Round(started, killed, time.time(), pids)


def executions(log: Path, rounds: list[Round]) -> list[Execution]:
    """Each start line with its end line; an execution with no end (killed) counts as
    running until its round's workers were all gone."""
    open_by_pid: dict[int, Execution] = {}
    out: list[Execution] = []
    for what, tag, pid, at in read_log(log):
        if what == "start":
            ex = Execution(tag, pid, at)
            open_by_pid[pid] = ex
            out.append(ex)
        else:
            ex = open_by_pid.pop(pid, None)
            if ex is not None and ex.tag == tag:
                ex.end = at
    for ex in out:
        if ex.end is None:
            ends = [r.gone for r in rounds if r.started <= ex.start <= r.gone]
            ex.end = ends[0] if ends else float("inf")
    return out


def overlaps(intervals: list[tuple[float, float]]) -> int:
    """How many intervals start before an earlier one ended."""
    count, reach = 0, float("-inf")
    for start, end in sorted(intervals):
        if start < reach:
            count += 1
        reach = max(reach, end)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=None, help="rounds (default 30; 4 small)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per round")
    parser.add_argument("--seed", type=int, default=None)
    args = parse_args(__doc__.splitlines()[0], argv, parser)
    use_bench_jobs()
    import nbqueue

    header("crash campaign: random SIGKILLs of a serving process", args.small)
    kills = args.kills if args.kills is not None else (4 if args.small else 30)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    with scratch("nbqueue-crash-") as tmp:
        path, log, out = tmp / "q", tmp / "marks.log", tmp / "out.jsonl"
        q = nbqueue.Queue(path, start=False, outputs=[nbqueue.JsonLines(out)])
        submit_load(q, str(log), args.small)
        rounds = []
        for _ in range(kills):
            rounds.append(run_round(path, log, args.workers, rng, tmp / "serve.err"))
            approve_gates(q)
        q.close()
        # one last process serves the queue until it is idle
        final = nbqueue.Queue(path, workers=args.workers)
        deadline = time.monotonic() + (120 if args.small else 600)
        while time.monotonic() < deadline:
            approve_gates(final)
            counts = final.counts()
            if not any(counts[s] for s in ("waiting", "ready", "running", "review")):
                break
            time.sleep(0.1)
        final.join(timeout=60)
        jobs = final.jobs()
        records = {h.id: h.record() for h in jobs}
        final.close()
        time.sleep(1.5)  # the outputs' delivery thread has written its last lines
        rounds.append(Round(time.time(), time.time(), time.time(), set()))

        runs = executions(log, rounds)
        by_tag: dict[str, list[Execution]] = defaultdict(list)
        for ex in runs:
            by_tag[ex.tag].append(ex)
        calls = [r for r in records.values() if r.kind == "call"]
        lost = [r.id for r in records.values() if r.state != "done"]
        poisoned = [r.id for r in records.values()
                    if r.error is not None and r.error.exc_type == "PoisonedJob"]
        twice = sum(overlaps([(e.start, e.end) for e in group]) for group in by_tag.values())
        held = [(e.start, e.end) for e in runs if e.tag.startswith("r")]
        extra_by_round: Counter[int] = Counter()
        for group in by_tag.values():
            for earlier in sorted(group, key=lambda e: e.start)[:-1]:
                index = next((i for i, r in enumerate(rounds)
                              if r.started <= earlier.start <= r.gone), -1)
                extra_by_round[index] += 1
        extra = sum(extra_by_round.values())
        worst = max(extra_by_round.values(), default=0)
        lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        delivered = Counter(line["id"] for line in lines)
        duplicated = sum(1 for n in delivered.values() if n > 1)
        missing = sum(1 for job_id, r in records.items() if r.has_ended and job_id not in delivered)

        print(f"seed {seed}; {kills} SIGKILLs of a process serving {len(records)} jobs "
              f"({len(calls)} calls, {len(records) - len(calls)} review gates) with "
              f"{args.workers} workers; {len(runs)} executions of {len(by_tag)} marked jobs")
        crashes = (tmp / "serve.err").read_text(errors="replace") if (
            tmp / "serve.err").exists() else ""
        if "Traceback" in crashes:
            print("  a serving process printed a traceback:\n" + crashes[-3000:])
        figure("jobs lost (not done at the end)", str(len(lost)), "0", not lost)
        figure("jobs run twice at the same time", str(twice), "0", twice == 0)
        figure("healthy jobs poisoned", str(len(poisoned)), "0", not poisoned)
        figure("executions redone per kill (mean / worst)",
               f"{extra / max(kills, 1):.2f} / {worst}", f"<= {2 * args.workers} per kill "
               f"(2 per worker)", worst <= 2 * args.workers)
        held_twice = overlaps(held)
        figure("executions holding the exclusive resource at once (beyond 1)", str(held_twice),
               "0", held_twice == 0)
        figure("outputs duplicated / missing", f"{duplicated} / {missing}", "0 / 0",
               duplicated == 0 and missing == 0)
        if lost:
            print("  lost:", ", ".join(f"{i} ({records[i].name}: {records[i].state} "
                                       f"{records[i].note})" for i in lost[:10]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
