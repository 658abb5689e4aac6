"""The job graph of ``nbqueue demo``: importable job functions and ``submit_demo``.

Everything is deterministic: the texts come from seeded generators, and the one job
that fails does so on its first attempt only (counted in a scratch file).

>>> count_words("a b a")
{'a': 2, 'b': 1}
>>> merge_counts({"a": 2, "b": 1}, {"b": 3})
{'words': 6, 'distinct': 2, 'top': [('b', 4), ('a', 2)]}
"""

from __future__ import annotations

import random
import secrets
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .injob import spawn
from .job import DONE, JobRecord
from .workflow import call

if TYPE_CHECKING:
    from .handle import Job
    from .queue import Queue

WORDS = ("queue", "job", "notebook", "worker", "kernel", "result", "review", "retry",
         "disk", "crash", "resume", "graph")
TEXTS = 6
SQUARES = 10


def make_text(seed: int) -> str:
    """A generated text of ``50 + 25 * seed`` words (the same for the same seed)."""
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(50 + 25 * seed))


def count_words(text: str) -> dict[str, int]:
    """How often each word occurs in ``text``."""
    return dict(Counter(text.split()))


def merge_counts(*counts: dict[str, int]) -> dict[str, Any]:
    """Reduce word counts: total words, distinct words, the three most common."""
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return {"words": sum(total.values()), "distinct": len(total),
            "top": total.most_common(3)}


def flaky_download(marker: str) -> str:
    """Fail on the first attempt (a simulated network hiccup), succeed on the next."""
    path = Path(marker)
    attempt = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(attempt))
    if attempt == 1:
        raise ConnectionError("simulated network hiccup (the demo fails this job once)")
    return f"downloaded on attempt {attempt}"


def publish(summary: dict[str, Any]) -> str:
    """Format the summary; spawn one child job that archives it."""
    line = f"{summary['words']} words, most common: " + ", ".join(
        f"{word} ({n})" for word, n in summary["top"])
    # created exactly once with publish's success (its id derives from publish's id), so
    # it needs no content key; with one, a --fresh run would attach to an earlier archive
    spawn(archive, line, name="archive", key=None)
    return line


def archive(line: str) -> str:
    """Pretend to archive a line: returns its checksum."""
    return f"archived {len(line)} chars, crc32 {zlib.crc32(line.encode()):08x}"


def square(x: int) -> int:
    return x * x


def sum_of_squares(n: int) -> Iterator[Any]:
    """A generator handler: fans out ``n`` child jobs, waits for all without holding a
    worker, and reduces their results."""
    squares = yield [call(square, i) for i in range(1, n + 1)]
    return sum(squares)


@dataclass(frozen=True)
class DemoJobs:
    """The handles of one demo run."""

    counts: list[Job]
    merged: Job
    gate: Job
    published: Job
    flaky: Job
    squares: Job

    def roots(self) -> list[Job]:
        return [*self.counts, self.merged, self.gate, self.published, self.flaky, self.squares]


def submit_demo(queue: Queue, *, fresh: bool = False) -> DemoJobs:
    """Submit the demo's job graph to ``queue``.

    With ``fresh=False`` every job has its automatic content key, so submitting again
    attaches to the jobs of an earlier run; ``fresh=True`` (``key=None``) makes new
    jobs every time.
    """
    key = None if fresh else "auto"
    scratch = queue.path / "demo-scratch"
    scratch.mkdir(mode=0o700, exist_ok=True)
    # a fresh run needs its own failure counter; the keyed run always uses the same one
    marker = scratch / (f"flaky-{secrets.token_hex(4)}" if fresh else "flaky")
    counts = queue.map(count_words, [make_text(i) for i in range(TEXTS)], key=key)
    merged = queue.submit(merge_counts, *counts, key=key)
    gate = queue.review("Publish the word counts?", key=key, needs=[merged],
                        payload=f"Word counts of {TEXTS} generated texts, merged by job "
                                f"{merged.id}. Publish them?")
    published = queue.submit(publish, merged, needs=[gate], key=key)
    flaky = queue.submit(flaky_download, str(marker), retries=2, retry_delay=0.2, key=key)
    squares = queue.submit(sum_of_squares, SQUARES, key=key)
    return DemoJobs(counts, merged, gate, published, flaky, squares)


def wait_all(roots: list[Job], timeout: float) -> list[tuple[JobRecord, Job]]:
    """Wait for jobs and all their descendants; (record, handle) in tree order."""
    out: list[tuple[JobRecord, Job]] = []
    stack = list(reversed(roots))
    while stack:
        h = stack.pop()
        out.append((h.wait(timeout=timeout), h))
        stack += reversed(h.children)
    return out


def result(h: Job) -> Any:
    """The job's result if it is done, else None."""
    return h.result(timeout=0) if h.state == DONE else None


def story(jobs: DemoJobs) -> list[str]:
    """What the demo's jobs did, as lines of text (for ``nbqueue demo``)."""
    lines = []
    words = result(jobs.merged)
    if isinstance(words, dict):
        lines.append(f"{TEXTS} x count_words (q.map) -> merge_counts: {words['words']} words "
                     f"(expected {expected_words()}), most common: {words['top']}")
    decision = result(jobs.gate)
    if decision is not None:
        archived = [result(c) for c in jobs.published.children]
        lines.append(f"review gate: approved by {decision.by} ({decision.comment!r}); then "
                     f"publish ran: {result(jobs.published)!r}")
        lines.append(f"publish spawned a child job: {', '.join(map(repr, archived))}")
    lines.append(f"flaky_download: {jobs.flaky.record().attempt} attempts (the first raised "
                 f"ConnectionError; retries=2): {result(jobs.flaky)!r}")
    lines.append(f"sum_of_squares: yielded {SQUARES} nbqueue.call(square, i), waited without "
                 f"holding a worker, then summed: sum = {result(jobs.squares)!r}")
    return lines


def expected_words() -> int:
    """The number of words the demo's texts hold (what ``merge_counts`` must find).

    >>> expected_words()
    675
    """
    return sum(50 + 25 * seed for seed in range(TEXTS))
