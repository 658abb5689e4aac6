"""The bad-input catalogue: wrong calls of the API, the command line and the magics.

``test_bad_input`` runs one table of cases. Each asserts the error's type (an nbqueue
error for the API, ``UsageError`` for the magics, exit code 2 or 1 with one line on
stderr and no traceback for the command line), that the message names the parameter,
and that nothing changed: the queue directory's change counter, its jobs, the files
beside it. The API and command-line cases share one queue directory that no dispatcher
serves; the magics run in a real IPython shell on a queue of their own.

The other tests here cover what a table cannot: a spawn inside a running job, and the
command line printing untrusted text from a real queue (escape sequences stripped).
"""

from __future__ import annotations

import json
import math
import os
import pty
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jobs
import pytest
from conftest import python_env

import nbqueue
import nbqueue.cli
from nbqueue import (
    IncompatibleQueue,
    InvalidArgument,
    InvalidArgumentType,
    NoSuchJob,
    SubmitError,
    UnreadableResult,
)
from nbqueue.errors import JobStateError, NoSuchSchedule, NotInJob

UsageError: Any
try:
    from IPython.core.error import UsageError
except ImportError:  # pragma: no cover - the magics cases are skipped without IPython
    UsageError = None


@dataclass
class World:
    """The shared queue directory (no dispatcher) and the jobs the cases refer to."""

    root: Path
    path: Path
    q: nbqueue.Queue
    ready: nbqueue.Job
    done: nbqueue.Job
    failed: nbqueue.Job
    gate: nbqueue.Job
    unloadable: nbqueue.Job
    afile: Path
    items: Any  # a chunked map of three items, not run
    stranger: nbqueue.Job  # a job of another queue directory

    def snapshot(self) -> tuple[Any, ...]:
        store = self.q._store
        return store.changes(), sum(store.counts().values()), sorted(os.listdir(self.root))

    def fill(self, text: str) -> str:
        return text.format(q=self.path, root=self.root, file=self.afile,
                           missing=self.root / "missing", ready=self.ready.id, done=self.done.id,
                           failed=self.failed.id, gate=self.gate.id)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "api", "cli" or "magic"
    error: Any  # the exception class; for "cli" the exit code
    says: str  # what the message must name: the parameter (or the input)
    call: Callable[[World], Any] | None = None
    argv: tuple[str, ...] = ()
    line: str = ""
    cell: str | None = None  # a %%enqueue cell; None: the line is a %nbq line


def api(id: str, error: type[BaseException], says: str, call: Callable[[World], Any]) -> Case:
    return Case(f"api: {id}", "api", error, says, call=call)


def cli(code: int, says: str, *argv: str) -> Case:
    return Case("cli: " + " ".join(argv), "cli", code, says, argv=argv)


def enqueue(line: str, says: str, cell: str = "y = x + 1") -> Case:
    return Case(f"%%enqueue {line}", "magic", UsageError, says, line=line, cell=cell)


def nbq(line: str, says: str) -> Case:
    return Case(f"%nbq {line}", "magic", UsageError, says, line=line)


def submit(**options: Any) -> Callable[[World], Any]:
    return lambda w: w.q.submit(jobs.noop, key=None, **options)


def schedule(**options: Any) -> Callable[[World], Any]:
    return lambda w: w.q.schedule(jobs.noop, **options)


def new_queue(**kwargs: Any) -> Callable[[World], Any]:
    return lambda w: nbqueue.Queue(w.root / "new", start=False, **kwargs)


def deep_list(depth: int) -> list[Any]:
    top: list[Any] = []
    level = top
    for _ in range(depth):
        level.append([])
        level = level[0]
    return top


class Unpicklable:
    """Fails to pickle, and even to show itself."""

    def __reduce__(self) -> Any:
        raise RuntimeError("no pickling")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def with_open_file(mode: str, as_keyword: bool = False) -> Callable[[World], Any]:
    def call(w: World) -> Any:
        with open(w.afile, mode) as handle:
            if as_keyword:
                return w.q.submit(jobs.noop, fh=handle)
            return w.q.submit(jobs.noop, handle)
    return call


INF, NAN = math.inf, math.nan
BIG = 10 ** 30

API = [
    # -- opening a queue
    api("Queue(path=5)", InvalidArgumentType, "path", lambda w: nbqueue.Queue(5, start=False)),
    api("Queue(path=bytes)", InvalidArgumentType, "path",
        lambda w: nbqueue.Queue(os.fsencode(w.root / "new"), start=False)),
    api("Queue(path='')", InvalidArgument, "path", lambda w: nbqueue.Queue("", start=False)),
    api("Queue(path with NUL)", InvalidArgument, "path",
        lambda w: nbqueue.Queue(f"{w.root}/a\x00b", start=False)),
    api("Queue(path is a file)", IncompatibleQueue, "is a file",
        lambda w: nbqueue.Queue(w.afile, start=False)),
    api("Queue(path under a file)", IncompatibleQueue, "is a file",
        lambda w: nbqueue.Queue(w.afile / "q", start=False)),
    api("Queue(path in /proc)", IncompatibleQueue, "cannot create the queue directory",
        lambda w: nbqueue.Queue("/proc/nbqueue-test/q", start=False)),
    api("Queue(workers=0)", InvalidArgument, "workers", new_queue(workers=0)),
    api("Queue(workers=-1)", InvalidArgument, "workers", new_queue(workers=-1)),
    api("Queue(workers=1.5)", InvalidArgumentType, "workers", new_queue(workers=1.5)),
    api("Queue(workers=True)", InvalidArgumentType, "workers", new_queue(workers=True)),
    api("Queue(workers='2')", InvalidArgumentType, "workers", new_queue(workers="2")),
    api("Queue(workers=10**30)", InvalidArgument, "workers", new_queue(workers=BIG)),
    api("Queue(executor=object())", InvalidArgumentType, "executor",
        new_queue(executor=object())),
    api("Queue(outputs=5)", InvalidArgumentType, "outputs", new_queue(outputs=5)),
    api("Queue(outputs=['x.jsonl'])", InvalidArgumentType, "outputs",
        new_queue(outputs=["x.jsonl"])),
    api("Queue(start='no')", InvalidArgumentType, "start", lambda w: nbqueue.Queue(
        w.root / "new", start="no")),
    api("Queue(detach=1)", InvalidArgumentType, "detach", new_queue(detach=1)),
    api("Queue(detach=True, executor=...)", InvalidArgument, "detach",
        new_queue(detach=True, executor=object())),
    api("Queue(keep=5)", InvalidArgumentType, "keep", new_queue(keep=5)),
    api("Queue(keep=['done'])", InvalidArgumentType, "keep", new_queue(keep=["done"])),
    api("Queue(keep={'ready': '1d'})", InvalidArgument, "'ready' is not an ended state",
        new_queue(keep={"ready": "1d"})),
    api("Queue(keep={5: '1d'})", InvalidArgumentType, "keep", new_queue(keep={5: "1d"})),
    api("Queue(keep={'done': 'soon'})", InvalidArgument, "keep['done']",
        new_queue(keep={"done": "soon"})),
    api("Queue(keep={'done': 0})", InvalidArgument, "keep['done']",
        new_queue(keep={"done": 0})),
    api("Queue(keep={'done': -5})", InvalidArgument, "keep['done']",
        new_queue(keep={"done": -5})),
    api("Queue(keep={'done': inf})", InvalidArgument, "keep['done']",
        new_queue(keep={"done": INF})),
    api("Queue(keep={'failed': None})", InvalidArgumentType, "keep['failed']",
        new_queue(keep={"failed": None})),
    api("Queue(keep={'done': '-1d'})", InvalidArgument, "keep['done']",
        new_queue(keep={"done": "-1d"})),
    api("Queue(memory='lots')", InvalidArgument, "memory", new_queue(memory="lots")),
    api("Queue(memory=0)", InvalidArgument, "memory", new_queue(memory=0)),
    api("Queue(memory=[1])", InvalidArgumentType, "memory", new_queue(memory=[1])),
    api("Queue(memory=2.5)", InvalidArgumentType, "memory", new_queue(memory=2.5)),
    # -- submit: the function and its arguments
    api("submit(not callable)", SubmitError, "callable", lambda w: w.q.submit("noop")),
    api("submit(lock argument)", SubmitError, "argument #0",
        lambda w: w.q.submit(jobs.noop, threading.Lock())),
    api("submit(open file to write)", SubmitError, "argument #0", with_open_file("w")),
    api("submit(open file to read)", SubmitError, "argument #0", with_open_file("r")),
    api("submit(fh=open file)", SubmitError, "argument fh=", with_open_file("r", True)),
    api("submit(binary file)", SubmitError, "argument #0", with_open_file("rb")),
    api("submit(100k-deep list)", SubmitError, "argument #0",
        lambda w: w.q.submit(jobs.noop, deep_list(100_000))),
    api("submit(100k-deep list, key=None)", SubmitError, "argument #0",
        lambda w: w.q.submit(jobs.noop, deep_list(100_000), key=None)),
    api("submit(unpicklable, unrepresentable)", SubmitError, "argument #0",
        lambda w: w.q.submit(jobs.noop, Unpicklable())),
    api("submit(x=unpicklable)", SubmitError, "argument x=",
        lambda w: w.q.submit(jobs.noop, x=Unpicklable())),
    # -- submit: priority, retries, retry_delay, timeout
    api("priority='x'", SubmitError, "priority", submit(priority="x")),
    api("priority=1.5", SubmitError, "priority", submit(priority=1.5)),
    api("priority=True", SubmitError, "priority", submit(priority=True)),
    api("priority=2**63", SubmitError, "priority", submit(priority=2 ** 63)),
    api("priority=-2**63-1", SubmitError, "priority", submit(priority=-2 ** 63 - 1)),
    api("priority=10**30", SubmitError, "priority", submit(priority=BIG)),
    api("priority=None", SubmitError, "priority", submit(priority=None)),
    api("retries=-1", SubmitError, "retries", submit(retries=-1)),
    api("retries=1.5", SubmitError, "retries", submit(retries=1.5)),
    api("retries='3'", SubmitError, "retries", submit(retries="3")),
    api("retries=10**30", SubmitError, "retries", submit(retries=BIG)),
    api("retries=None", SubmitError, "retries", submit(retries=None)),
    api("retry_delay=-1", SubmitError, "retry_delay", submit(retry_delay=-1)),
    api("retry_delay=inf", SubmitError, "retry_delay", submit(retry_delay=INF)),
    api("retry_delay=nan", SubmitError, "retry_delay", submit(retry_delay=NAN)),
    api("retry_delay='1s'", SubmitError, "retry_delay", submit(retry_delay="1s")),
    api("retry_delay=1e12", SubmitError, "retry_delay", submit(retry_delay=1e12)),
    api("timeout=0", SubmitError, "timeout", submit(timeout=0)),
    api("timeout=-5", SubmitError, "timeout", submit(timeout=-5)),
    api("timeout=inf", SubmitError, "timeout", submit(timeout=INF)),
    api("timeout=nan", SubmitError, "timeout", submit(timeout=NAN)),
    api("timeout='5'", SubmitError, "timeout", submit(timeout="5")),
    api("timeout=1e300", SubmitError, "timeout", submit(timeout=1e300)),
    api("timeout=True", SubmitError, "timeout", submit(timeout=True)),
    # -- submit: memory
    api("memory='lots'", SubmitError, "memory", submit(memory="lots")),
    api("memory='4XB'", SubmitError, "memory", submit(memory="4XB")),
    api("memory=''", SubmitError, "memory", submit(memory="")),
    api("memory=0", SubmitError, "memory", submit(memory=0)),
    api("memory=-1", SubmitError, "memory", submit(memory=-1)),
    api("memory='0.1B'", SubmitError, "memory", submit(memory="0.1B")),
    api("memory=1.5e9", SubmitError, "memory", submit(memory=1.5e9)),
    api("memory=True", SubmitError, "memory", submit(memory=True)),
    api("memory=10**30", SubmitError, "memory", submit(memory=BIG)),
    api("memory='-4GB'", SubmitError, "memory", submit(memory="-4GB")),
    api("map(memory='x')", SubmitError, "memory",
        lambda w: w.q.map(jobs.noop, [1, 2], memory="x")),
    # -- submit: name, key
    api("name=123", SubmitError, "name", submit(name=123)),
    api("name=''", SubmitError, "name", submit(name="")),
    api("name='   '", SubmitError, "name", submit(name="   ")),
    api("name with a line break", SubmitError, "name", submit(name="a\nb")),
    api("name with an escape", SubmitError, "name", submit(name="\x1b[31mred")),
    api("name with a bidi override", SubmitError, "name", submit(name="a\u202eb")),
    api("key=42", SubmitError, "key", lambda w: w.q.submit(jobs.noop, key=42)),
    api("key=''", SubmitError, "key", lambda w: w.q.submit(jobs.noop, key="")),
    api("key=b'k'", SubmitError, "key", lambda w: w.q.submit(jobs.noop, key=b"k")),
    # -- submit: resources
    api("resources=5", SubmitError, "resources", submit(resources=5)),
    api("resources=[1]", SubmitError, "resources", submit(resources=[1])),
    api("resources=''", SubmitError, "resources", submit(resources="")),
    api("resources={'gpu': 0}", SubmitError, "resources", submit(resources={"gpu": 0})),
    api("resources={'gpu': -1}", SubmitError, "resources", submit(resources={"gpu": -1})),
    api("resources={'gpu': 1.5}", SubmitError, "resources", submit(resources={"gpu": 1.5})),
    api("resources={'gpu': 10**30}", SubmitError, "resources", submit(resources={"gpu": BIG})),
    api("resources={'': 1}", SubmitError, "resources", submit(resources={"": 1})),
    api("resources=[' db']", SubmitError, "resources", submit(resources=[" db"])),
    api("resources with an escape", SubmitError, "resources",
        submit(resources={"a\x1b[2J": 1})),
    api("resources over the capacity", SubmitError, "set_resource('db', capacity=3)",
        submit(resources={"db": 3})),
    api("map over the capacity", SubmitError, "capacity", lambda w: w.q.map(
        jobs.noop, [1, 2], resources={"db": 5}, key=None)),
    # -- submit: needs
    api("needs=123", SubmitError, "needs", submit(needs=123)),
    api("needs=[3.5]", SubmitError, "needs", submit(needs=[3.5])),
    api("needs=['']", SubmitError, "needs", submit(needs=[""])),
    api("needs={'a': 1}", SubmitError, "needs", submit(needs={"a": 1})),
    api("needs=['no-such-job']", NoSuchJob, "no-such-job", submit(needs=["no-such-job"])),
    # -- submit: after
    api("after='when pigs fly'", SubmitError, "after", submit(after="when pigs fly")),
    api("after=1e300", SubmitError, "after", submit(after=1e300)),
    api("after=-1e300", SubmitError, "after", submit(after=-1e300)),
    api("after=inf", SubmitError, "after", submit(after=INF)),
    api("after=10**400", SubmitError, "after", submit(after=10 ** 400)),
    api("after=True", SubmitError, "after", submit(after=True)),
    api("after=[1]", SubmitError, "after", submit(after=[1])),
    api("after='in -5m'", SubmitError, "after", submit(after="in -5m")),
    api("after='25:00'", SubmitError, "after", submit(after="25:00")),
    api("after='2026-13-01'", SubmitError, "after", submit(after="2026-13-01")),
    api("after='10000-01-01'", SubmitError, "after", submit(after="10000-01-01")),
    # -- map
    api("map() without iterables", SubmitError, "iterable", lambda w: w.q.map(jobs.noop)),
    api("map(fn, 5)", SubmitError, "iterable", lambda w: w.q.map(jobs.noop, 5)),
    api("map(fn, [1], 7)", SubmitError, "iterable #2", lambda w: w.q.map(jobs.noop, [1], 7)),
    api("map(bogus=1)", SubmitError, "bogus", lambda w: w.q.map(jobs.noop, [1], bogus=1)),
    api("map(priority=2**63)", SubmitError, "priority",
        lambda w: w.q.map(jobs.noop, [1, 2], priority=2 ** 63)),
    api("map(timeout='5')", SubmitError, "timeout",
        lambda w: w.q.map(jobs.noop, [1, 2], timeout="5")),
    api("map with one unpicklable call", SubmitError, "argument #0",
        lambda w: w.q.map(jobs.noop, [1, threading.Lock(), 3])),
    # -- chunked maps
    api("map(chunksize=0)", SubmitError, "chunksize",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize=0)),
    api("map(chunksize=-3)", SubmitError, "chunksize",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize=-3)),
    api("map(chunksize=1.5)", SubmitError, "chunksize",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize=1.5)),
    api("map(chunksize=True)", SubmitError, "chunksize",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize=True)),
    api("map(chunksize='big')", SubmitError, "chunksize",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize="big")),
    api("map(chunksize=2**60)", SubmitError, "chunksize",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize=2 ** 60)),
    api("map(chunksize=10, timeout=5)", SubmitError, "chunksize=10",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize=10, timeout=5)),
    api("chunked map of a generator handler", SubmitError, "chunksize=None",
        lambda w: w.q.map(jobs.fan_out, [1, 2], chunksize="auto")),
    api("chunked map with a job among its items", SubmitError, "needs=",
        lambda w: w.q.map(jobs.noop, [1, w.done], chunksize="auto")),
    api("chunked map with an unpicklable item", SubmitError, "item #1",
        lambda w: w.q.map(jobs.noop, [1, threading.Lock(), 3], chunksize="auto")),
    api("chunked map under the key of a job", SubmitError, "key=",
        lambda w: w.q.map(jobs.noop, [1, 2], chunksize="auto", key=w.gate.key)),
    api("chunked map over the capacity", SubmitError, "capacity", lambda w: w.q.map(
        jobs.noop, [1, 2], resources={"db": 5}, chunksize="auto")),
    api("submit(an item of a chunked map as an argument)", SubmitError, "chunked map",
        lambda w: w.q.submit(jobs.noop, w.items[1])),
    api("retry(a chunked map's item not run)", JobStateError, "only a failed or cancelled",
        lambda w: w.items[0].retry()),
    api("retry(a chunked map not ended)", JobStateError, "only a failed or cancelled",
        lambda w: w.items.map.retry()),
    api("job('<map>#7')", NoSuchJob, "#7", lambda w: w.q.job(f"{w.items.id}#7")),
    # -- review gates
    api("review(title=5)", SubmitError, "title", lambda w: w.q.review(5)),
    api("review(title='')", SubmitError, "title", lambda w: w.q.review("")),
    api("review(title with a line break)", SubmitError, "title", lambda w: w.q.review("a\nb")),
    api("review(priority='x')", SubmitError, "priority",
        lambda w: w.q.review("t", priority="x")),
    api("review(priority=2**63)", SubmitError, "priority",
        lambda w: w.q.review("t", priority=2 ** 63)),
    api("review(needs=5)", SubmitError, "needs", lambda w: w.q.review("t", needs=5)),
    api("review(after='nope')", SubmitError, "after", lambda w: w.q.review("t", after="nope")),
    api("review(name='')", SubmitError, "name", lambda w: w.q.review("t", name="")),
    api("review(key=5)", SubmitError, "key", lambda w: w.q.review("t", key=5)),
    # -- inside a job only
    api("spawn() outside a job", NotInJob, "spawn", lambda w: nbqueue.spawn(jobs.noop)),
    api("call(5)", InvalidArgumentType, "fn", lambda w: nbqueue.call(5)),
    api("call().options(bogus=1)", InvalidArgumentType, "bogus",
        lambda w: nbqueue.call(jobs.noop).options(bogus=1)),
    api("workflow review('')", InvalidArgument, "title", lambda w: nbqueue.review("")),
    api("workflow review(needs=...)", InvalidArgument, "needs",
        lambda w: nbqueue.review("t", needs=["x"])),
    api("workflow review(priority='x')", InvalidArgumentType, "priority",
        lambda w: nbqueue.review("t", priority="x")),
    api("workflow review(name='')", InvalidArgument, "name",
        lambda w: nbqueue.review("t", name="")),
    api("sleep('when pigs fly')", InvalidArgument, "until",
        lambda w: nbqueue.sleep("when pigs fly")),
    # -- finding jobs
    api("job(None)", InvalidArgumentType, "id_or_key", lambda w: w.q.job(None)),
    api("job(5)", InvalidArgumentType, "id_or_key", lambda w: w.q.job(5)),
    api("job('')", InvalidArgument, "id_or_key", lambda w: w.q.job("")),
    api("job('nope')", NoSuchJob, "nope", lambda w: w.q.job("nope")),
    api("jobs(state='finished')", InvalidArgument, "state",
        lambda w: w.q.jobs(state="finished")),
    api("jobs(state=5)", InvalidArgumentType, "state", lambda w: w.q.jobs(state=5)),
    api("jobs(name=5)", InvalidArgumentType, "name", lambda w: w.q.jobs(name=5)),
    # -- forget
    api("forget(state='ready')", InvalidArgument, "state", lambda w: w.q.forget(state="ready")),
    api("forget(state=3)", InvalidArgumentType, "state", lambda w: w.q.forget(state=3)),
    api("forget(state=['done', 'bogus'])", InvalidArgument, "bogus",
        lambda w: w.q.forget(state=["done", "bogus"])),
    api("forget(older_than='1d')", InvalidArgumentType, "older_than",
        lambda w: w.q.forget(older_than="1d")),
    api("forget(older_than=-1)", InvalidArgument, "older_than",
        lambda w: w.q.forget(older_than=-1)),
    api("forget(older_than=nan)", InvalidArgument, "older_than",
        lambda w: w.q.forget(older_than=NAN)),
    # -- gc
    api("gc(older_than='soon')", InvalidArgument, "older_than",
        lambda w: w.q.gc(older_than="soon")),
    api("gc(older_than=-1)", InvalidArgument, "older_than", lambda w: w.q.gc(older_than=-1)),
    api("gc(older_than=nan)", InvalidArgument, "older_than", lambda w: w.q.gc(older_than=NAN)),
    api("gc(older_than=[1])", InvalidArgumentType, "older_than",
        lambda w: w.q.gc(older_than=[1])),
    api("gc(dry_run='yes')", InvalidArgumentType, "dry_run", lambda w: w.q.gc(dry_run="yes")),
    # -- waiting
    api("result(timeout='5')", InvalidArgumentType, "timeout",
        lambda w: w.ready.result(timeout="5")),
    api("result(timeout=-1)", InvalidArgument, "timeout", lambda w: w.ready.result(timeout=-1)),
    api("result(timeout=nan)", InvalidArgument, "timeout",
        lambda w: w.ready.result(timeout=NAN)),
    api("wait(timeout='5')", InvalidArgumentType, "timeout", lambda w: w.ready.wait(timeout="5")),
    api("wait(timeout=inf)", InvalidArgument, "timeout", lambda w: w.ready.wait(timeout=INF)),
    api("exception(timeout=[1])", InvalidArgumentType, "timeout",
        lambda w: w.ready.exception(timeout=[1])),
    api("join(timeout='x')", InvalidArgumentType, "timeout", lambda w: w.q.join(timeout="x")),
    api("join(timeout=-1)", InvalidArgument, "timeout", lambda w: w.q.join(timeout=-1)),
    api("result that cannot be unpickled", UnreadableResult, "cannot be loaded",
        lambda w: w.unloadable.result()),
    # -- collecting results
    api("gather(5)", InvalidArgumentType, "handles", lambda w: w.q.gather(5)),
    api("gather('abc')", InvalidArgumentType, "handles", lambda w: w.q.gather("abc")),
    api("gather(a Job, not a list)", InvalidArgumentType, "handles",
        lambda w: w.q.gather(w.done)),
    api("gather([job id])", InvalidArgumentType, "handles",
        lambda w: w.q.gather([w.done, w.done.id])),
    api("gather([None])", InvalidArgumentType, "handles", lambda w: w.q.gather([None])),
    api("gather(handle of another queue)", InvalidArgument, "handles",
        lambda w: w.q.gather([w.done, w.stranger])),
    api("gather(return_exceptions='yes')", InvalidArgumentType, "return_exceptions",
        lambda w: w.q.gather([w.done], return_exceptions="yes")),
    api("gather(return_exceptions=1)", InvalidArgumentType, "return_exceptions",
        lambda w: w.q.gather([w.done], return_exceptions=1)),
    api("gather(timeout='5')", InvalidArgumentType, "timeout",
        lambda w: w.q.gather([w.ready], timeout="5")),
    api("gather(timeout=-1)", InvalidArgument, "timeout",
        lambda w: w.q.gather([w.ready], timeout=-1)),
    api("gather(timeout=nan)", InvalidArgument, "timeout",
        lambda w: w.q.gather([w.ready], timeout=NAN)),
    api("as_completed(5)", InvalidArgumentType, "handles", lambda w: nbqueue.as_completed(5)),
    api("as_completed(a Job)", InvalidArgumentType, "handles",
        lambda w: nbqueue.as_completed(w.ready)),
    api("as_completed([job id])", InvalidArgumentType, "handles",
        lambda w: nbqueue.as_completed([w.ready.id])),
    api("as_completed(timeout='x')", InvalidArgumentType, "timeout",
        lambda w: nbqueue.as_completed([w.ready], timeout="x")),
    api("as_completed(timeout=inf)", InvalidArgument, "timeout",
        lambda w: nbqueue.as_completed([w.ready], timeout=INF)),
    # -- approve, reject, cancel, retry
    api("approve(None)", InvalidArgumentType, "job_id", lambda w: w.q.approve(None)),
    api("approve(123)", InvalidArgumentType, "job_id", lambda w: w.q.approve(123)),
    api("approve('')", InvalidArgument, "job_id", lambda w: w.q.approve("")),
    api("approve(['a'])", InvalidArgumentType, "job_id", lambda w: w.q.approve(["a"])),
    api("approve('nope')", NoSuchJob, "nope", lambda w: w.q.approve("nope")),
    api("approve(a job, not a gate)", JobStateError, "not a review gate",
        lambda w: w.q.approve(w.ready.id)),
    api("approve(comment=5)", InvalidArgumentType, "comment",
        lambda w: w.q.approve(w.gate, comment=5)),
    api("reject(None)", InvalidArgumentType, "job_id", lambda w: w.q.reject(None)),
    api("reject(comment=b'x')", InvalidArgumentType, "comment",
        lambda w: w.q.reject(w.gate, comment=b"x")),
    api("reject(a done job)", JobStateError, "only a gate in review",
        lambda w: w.q.reject(w.done)),
    api("retry(a ready job)", JobStateError, "only a failed or cancelled",
        lambda w: w.ready.retry()),
    api("retry(a done job)", JobStateError, "only a failed or cancelled",
        lambda w: w.done.retry()),
    api("retry(a gate in review)", JobStateError, "only a failed or cancelled",
        lambda w: w.gate.retry()),
    # -- set_resource
    api("set_resource(5)", InvalidArgumentType, "name", lambda w: w.q.set_resource(5)),
    api("set_resource('')", InvalidArgument, "name", lambda w: w.q.set_resource("")),
    api("set_resource(' db')", InvalidArgument, "name", lambda w: w.q.set_resource(" db")),
    api("set_resource(escape)", InvalidArgument, "name",
        lambda w: w.q.set_resource("a\x1bb", capacity=1)),
    api("capacity=0", InvalidArgument, "capacity", lambda w: w.q.set_resource("db", capacity=0)),
    api("capacity=-1", InvalidArgument, "capacity",
        lambda w: w.q.set_resource("db", capacity=-1)),
    api("capacity=1.5", InvalidArgumentType, "capacity",
        lambda w: w.q.set_resource("db", capacity=1.5)),
    api("capacity=True", InvalidArgumentType, "capacity",
        lambda w: w.q.set_resource("db", capacity=True)),
    api("capacity='3'", InvalidArgumentType, "capacity",
        lambda w: w.q.set_resource("db", capacity="3")),
    api("capacity=10**30", InvalidArgument, "capacity",
        lambda w: w.q.set_resource("db", capacity=BIG)),
    api("available='yes'", InvalidArgumentType, "available",
        lambda w: w.q.set_resource("db", available="yes")),
    api("available=1", InvalidArgumentType, "available",
        lambda w: w.q.set_resource("db", available=1)),
    api("rate='10'", InvalidArgument, "rate", lambda w: w.q.set_resource("api", rate="10")),
    api("rate='0/min'", InvalidArgument, "rate", lambda w: w.q.set_resource("api", rate="0/min")),
    api("rate='-1/min'", InvalidArgument, "rate",
        lambda w: w.q.set_resource("api", rate="-1/min")),
    api("rate='ten/min'", InvalidArgument, "rate",
        lambda w: w.q.set_resource("api", rate="ten/min")),
    api("rate='10/fortnight'", InvalidArgument, "rate",
        lambda w: w.q.set_resource("api", rate="10/fortnight")),
    api("rate='10/0s'", InvalidArgument, "rate", lambda w: w.q.set_resource("api", rate="10/0s")),
    api("rate='1/600w'", InvalidArgument, "rate",
        lambda w: w.q.set_resource("api", rate="1/600w")),
    api("rate='1.5/min'", InvalidArgument, "rate",
        lambda w: w.q.set_resource("api", rate="1.5/min")),
    api("rate='10**30/min'", InvalidArgument, "rate",
        lambda w: w.q.set_resource("api", rate=f"{BIG}/min")),
    api("rate=''", InvalidArgument, "rate", lambda w: w.q.set_resource("api", rate="")),
    api("rate=10", InvalidArgumentType, "rate", lambda w: w.q.set_resource("api", rate=10)),
    api("rate=True", InvalidArgumentType, "rate", lambda w: w.q.set_resource("api", rate=True)),
    api("rate=(10, 60)", InvalidArgumentType, "rate",
        lambda w: w.q.set_resource("api", rate=(10, 60))),
    # -- pause and resume
    api("pause(name='')", InvalidArgument, "name", lambda w: w.q.pause("")),
    api("pause(name=5)", InvalidArgumentType, "name", lambda w: w.q.pause(5)),
    api("pause(name with a line break)", InvalidArgument, "name", lambda w: w.q.pause("a\nb")),
    api("resume(name='  ')", InvalidArgument, "name", lambda w: w.q.resume("  ")),
    api("resume(name=['a'])", InvalidArgumentType, "name", lambda w: w.q.resume(["a"])),
    # -- schedules
    api("schedule(every='0s')", InvalidArgument, "every", schedule(every="0s")),
    api("schedule(every=0)", InvalidArgument, "every", schedule(every=0)),
    api("schedule(every=0.5)", InvalidArgument, "every", schedule(every=0.5)),
    api("schedule(every=-60)", InvalidArgument, "every", schedule(every=-60)),
    api("schedule(every=inf)", InvalidArgument, "every", schedule(every=INF)),
    api("schedule(every=nan)", InvalidArgument, "every", schedule(every=NAN)),
    api("schedule(every='soon')", InvalidArgument, "every", schedule(every="soon")),
    api("schedule(every=True)", InvalidArgumentType, "every", schedule(every=True)),
    api("schedule(every=[1])", InvalidArgumentType, "every", schedule(every=[1])),
    api("schedule(every='600w')", InvalidArgument, "every", schedule(every="600w")),
    api("schedule() without every or cron", InvalidArgument, "every", schedule()),
    api("schedule(every and cron)", InvalidArgument, "cron",
        schedule(every="1h", cron="0 9 * * *")),
    api("schedule(cron='61 * * * *')", InvalidArgument, "Bad minute",
        schedule(cron="61 * * * *")),
    api("schedule(cron='bogus')", InvalidArgument, "cron", schedule(cron="bogus")),
    api("schedule(cron='* * *')", InvalidArgument, "five fields", schedule(cron="* * *")),
    api("schedule(cron='@daily')", InvalidArgument, "cron", schedule(cron="@daily")),
    api("schedule(cron='0 9 30 2 *')", InvalidArgument, "cron", schedule(cron="0 9 30 2 *")),
    api("schedule(cron='0 9 * * mon-fry')", InvalidArgument, "day-of-week",
        schedule(cron="0 9 * * mon-fry")),
    api("schedule(cron with a line break)", InvalidArgument, "cron",
        schedule(cron="0 9 * * *\n0 10 * * *")),
    api("schedule(cron=5)", InvalidArgumentType, "cron", schedule(cron=5)),
    api("schedule(tz='Mars/Olympus')", InvalidArgument, "tz",
        schedule(cron="0 9 * * *", tz="Mars/Olympus")),
    api("schedule(tz='utc')", InvalidArgument, "tz", schedule(cron="0 9 * * *", tz="utc")),
    api("schedule(tz='')", InvalidArgument, "tz", schedule(cron="0 9 * * *", tz="")),
    api("schedule(tz='/etc/localtime')", InvalidArgument, "tz",
        schedule(cron="0 9 * * *", tz="/etc/localtime")),
    api("schedule(tz=5)", InvalidArgumentType, "tz", schedule(cron="0 9 * * *", tz=5)),
    api("schedule(tz with every)", InvalidArgument, "tz", schedule(every="1h", tz="UTC")),
    api("schedule(catch_up='sometimes')", InvalidArgument, "catch_up",
        schedule(every="1h", catch_up="sometimes")),
    api("schedule(catch_up=None)", InvalidArgumentType, "catch_up",
        schedule(every="1h", catch_up=None)),
    api("schedule(overlap='no')", InvalidArgumentType, "overlap",
        schedule(every="1h", overlap="no")),
    api("schedule(name='')", InvalidArgument, "name", schedule(every="1h", name="")),
    api("schedule(name with a line break)", InvalidArgument, "name",
        schedule(every="1h", name="a\nb")),
    api("schedule(key='k')", InvalidArgument, "key", schedule(every="1h", key="k")),
    api("schedule(after='when pigs fly')", InvalidArgument, "after",
        schedule(every="1h", after="when pigs fly")),
    api("schedule(priority='x')", SubmitError, "priority", schedule(every="1h", priority="x")),
    api("schedule(resources over the capacity)", SubmitError, "capacity",
        schedule(every="1h", resources={"db": 3})),
    api("schedule(not callable)", SubmitError, "callable",
        lambda w: w.q.schedule("noop", every="1h")),
    api("schedule_of('nosuch')", NoSuchSchedule, "nosuch", lambda w: w.q.schedule_of("nosuch")),
    api("schedule_of(5)", InvalidArgumentType, "name", lambda w: w.q.schedule_of(5)),
]

CLI = [
    cli(2, "bogus", "bogus"),
    cli(2, "--workers", "worker", "{q}", "-w", "0"),
    cli(2, "--workers", "worker", "{q}", "-w", "x"),
    cli(2, "--idle-exit", "worker", "{q}", "--idle-exit", "-1"),
    cli(1, "is a file", "worker", "{file}"),
    cli(1, "is a file", "worker", "{file}/q"),
    cli(2, "--timeout", "stop", "{q}", "--timeout", "0"),
    cli(1, "no queue", "stop", "{missing}"),
    cli(1, "no queue", "status", "{missing}"),
    cli(1, "is a file", "status", "{file}"),
    cli(2, "--bogus", "status", "{q}", "--bogus"),
    cli(2, "--state", "jobs", "{q}", "--state", "finished"),
    cli(2, "--state", "jobs", "{q}", "--state"),
    cli(1, "no queue", "jobs", "{missing}"),
    cli(1, "no queue", "reviews", "{missing}"),
    cli(2, "unrecognized", "reviews", "{q}", "extra"),
    cli(2, "JOB", "show", "{q}"),
    cli(1, "nosuchjob", "show", "{q}", "nosuchjob"),
    cli(1, "nosuchjob", "logs", "{q}", "nosuchjob"),
    cli(2, "--attempt", "logs", "{q}", "{done}", "--attempt", "0"),
    cli(2, "JOB", "approve", "{q}"),
    cli(1, "nosuchjob", "approve", "{q}", "nosuchjob"),
    cli(1, "not a review gate", "approve", "{q}", "{ready}"),
    cli(2, "--set", "approve", "{q}", "{gate}", "--set", "novalue"),
    cli(1, "nosuchjob", "reject", "{q}", "nosuchjob"),
    cli(1, "only a gate in review", "reject", "{q}", "{done}"),
    cli(1, "nosuchjob", "cancel", "{q}", "nosuchjob"),
    cli(1, "already ended", "cancel", "{q}", "{done}"),
    cli(1, "nosuchjob", "retry", "{q}", "nosuchjob"),
    cli(1, "only a failed or cancelled", "retry", "{q}", "{ready}"),
    cli(1, "capacity", "resources", "{q}", "--set", "db", "--capacity", "99999999999999999999"),
    cli(2, "--capacity", "resources", "{q}", "--set", "db", "--capacity", "0"),
    cli(2, "--set", "resources", "{q}", "--capacity", "3"),
    cli(1, "name", "resources", "{q}", "--set", " db", "--capacity", "3"),
    cli(2, "--available", "resources", "{q}", "--set", "db", "--available", "maybe"),
    cli(1, "rate=", "resources", "{q}", "--set", "api", "--rate", "often"),
    cli(1, "rate=", "resources", "{q}", "--set", "api", "--rate", "0/s"),
    cli(2, "--rate", "resources", "{q}", "--rate", "10/min"),
    cli(2, "--rate", "resources", "{q}", "--set", "api", "--rate"),
    cli(2, "PATH", "pause"),
    cli(1, "no queue", "pause", "{missing}"),
    cli(2, "unrecognized", "pause", "{q}", "a", "b"),
    cli(1, "name", "pause", "{q}", ""),
    cli(1, "name", "resume", "{q}", "a\tb"),
    cli(1, "no queue", "resume", "{missing}", "fetch"),
    cli(2, "PATH", "schedules"),
    cli(1, "no queue", "schedules", "{missing}"),
    cli(1, "nosuch", "schedules", "{q}", "--pause", "nosuch"),
    cli(1, "nosuch", "schedules", "{q}", "--delete", "nosuch"),
    cli(2, "not allowed", "schedules", "{q}", "--pause", "a", "--resume", "b"),
    cli(2, "--pause", "schedules", "{q}", "--pause"),
    cli(2, "--jsonl", "export", "{q}"),
    cli(2, "not allowed", "export", "{q}", "--jsonl", "a.jsonl", "--notebook", "b.ipynb"),
    cli(1, "--jsonl", "export", "{q}", "--jsonl", "{file}/out.jsonl"),
    cli(1, "--notebook", "export", "{q}", "--notebook", "{file}/out.ipynb"),
    cli(2, "PATH", "check"),
    cli(2, "PATH", "du"),
    cli(1, "no queue", "du", "{missing}"),
    cli(2, "unrecognized", "du", "{q}", "extra"),
    cli(2, "PATH", "gc"),
    cli(1, "no queue", "gc", "{missing}"),
    cli(2, "--older-than", "gc", "{q}", "--older-than", "soon"),
    cli(2, "--older-than", "gc", "{q}", "--older-than", "-1d"),
    cli(2, "--older-than", "gc", "{q}", "--older-than"),
    cli(2, "--bogus", "gc", "{q}", "--bogus"),
    cli(2, "NEW_DIR", "salvage", "{q}"),
    cli(2, "--port", "serve", "--port", "99999"),
    cli(2, "--workers", "demo", "-w", "0"),
    cli(1, "is a file", "demo", "{file}"),
]

MAGICS = [
    enqueue("--bogus", "bogus"),
    enqueue("--priority high", "priority"),
    enqueue("--priority 99999999999999999999", "priority"),
    enqueue("--retries -2", "retries"),
    enqueue("--retries 99999999999999999999", "retries"),
    enqueue("--timeout -1", "timeout"),
    enqueue("--timeout 0", "timeout"),
    enqueue("--timeout inf", "timeout"),
    enqueue("--timeout nan", "timeout"),
    enqueue("--timeout 1e300", "timeout"),
    enqueue("--memory lots", "--memory"),
    enqueue("--memory 0", "--memory"),
    enqueue("--memory -1GB", "--memory"),
    enqueue("--after 'next blue moon'", "after"),
    enqueue("--after ''", "after"),
    enqueue("--resources ''", "resources"),
    enqueue("--resources ,", "resources"),
    enqueue("--resources gpu=two", "resources"),
    enqueue("--resources gpu=0", "resources"),
    enqueue("--resources =2", "resources"),
    enqueue("--resources gpu=99999999999999999999", "resources"),
    enqueue("--resources db=3", "capacity"),
    enqueue("--needs nosuchjob", "nosuchjob"),
    enqueue("--needs ''", "needs"),
    enqueue("--out 1x", "out"),
    enqueue("--out a,class", "out"),
    enqueue("--out ''", "out"),
    enqueue("a b", "unrecognized"),
    enqueue("''", "NAME"),
    nbq("use", "PATH"),
    nbq("use /proc/nbqueue-test/q", "cannot create the queue directory"),
    nbq("use {file}/q", "is a file"),
    nbq("use {root}/new -w 0", "-w"),
    nbq("use {root}/new -w x", "workers"),
    nbq("bogus", "bogus"),
    nbq("cancel", "NAME"),
    nbq("cancel nosuchjob", "nosuchjob"),
    nbq("retry nosuchjob", "nosuchjob"),
    nbq("result nosuchjob", "nosuchjob"),
    nbq("wait nosuchjob", "nosuchjob"),
    nbq("reviews --detach", "--detach"),
    nbq("retry first", "only a failed or cancelled"),
    nbq("cancel first extra", "unexpected"),
]

CASES = API + CLI + MAGICS


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("bad-input")
    path = root / "q"
    with nbqueue.Queue(path, workers=1) as served:
        done = served.submit(jobs.noop, "done", key=None)
        failed = served.submit(jobs.boom, key=None)
        unloadable = served.submit(jobs.unloadable_result, key=None)
        for h in (done, failed, unloadable):
            h.wait(timeout=120)
    q = nbqueue.Queue(path, workers=1, start=False)
    ready = q.submit(jobs.noop, "ready", key=None)
    gate = q.review("Check it")
    q.set_resource("db", capacity=2)
    afile = root / "afile"
    afile.write_text("not a queue")
    other = nbqueue.Queue(root / "other", start=False)
    stranger = other.submit(jobs.noop, "elsewhere", key=None)
    try:
        items = q.map(jobs.square, range(3), chunksize=2)
        yield World(root, path, q, ready, done, failed, gate, unloadable, afile, items, stranger)
    finally:
        q.close()
        other.close()


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real IPython shell with the extension loaded on a queue of its own, holding one
    finished cell job named ``first`` and a resource ``db`` of capacity 2."""
    if UsageError is None:
        pytest.skip("IPython is not installed")
    from IPython.core.interactiveshell import InteractiveShell

    root = tmp_path_factory.mktemp("bad-magics")
    ip = InteractiveShell.instance()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NBQUEUE_DIR", str(root / "q"))
        # a long lease: no renewal (a write, which bumps q.changes()) while a case runs
        mp.setenv("NBQUEUE_LEASE", "600")
        ip.reset(new_session=False)
        ip.extension_manager.load_extension("nbqueue")
        try:
            ip.user_ns["x"] = 1
            ip.run_cell_magic("enqueue", "first", "a = x")
            ip.run_line_magic("nbq", "wait first")
            ip.run_line_magic("nbq", "queue").set_resource("db", capacity=2)
            ip.user_ns["_bad_input_root"] = root
            yield ip
        finally:
            ip.extension_manager.unload_extension("nbqueue")
            ip.reset(new_session=False)


def magic_snapshot(ip: Any) -> tuple[Any, ...]:
    q = ip.run_line_magic("nbq", "queue")
    root = ip.user_ns["_bad_input_root"]
    return (q.changes(), sum(q.counts().values()), sorted(os.listdir(root)),
            q.path)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``nbqueue ARGV`` in this process: its exit code and what it printed on stderr."""
    try:
        code = nbqueue.cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, world: World, request: pytest.FixtureRequest,
                   capsys: pytest.CaptureFixture[str]) -> None:
    before = world.snapshot()
    if case.kind == "api":
        assert case.call is not None
        with pytest.raises(case.error) as info:
            case.call(world)
        assert isinstance(info.value, nbqueue.NbqueueError), type(info.value).__mro__
        text = str(info.value)
    elif case.kind == "cli":
        code, text = run_cli([world.fill(a) for a in case.argv], capsys)
        assert code == case.error, text
        assert "Traceback" not in text
        assert len(text.strip().splitlines()) == 1, text
    else:
        ip = request.getfixturevalue("shell")
        magic_before = magic_snapshot(ip)
        line = case.line.format(file=world.afile, root=ip.user_ns["_bad_input_root"])
        with pytest.raises(case.error) as info:
            if case.cell is None:
                ip.run_line_magic("nbq", line)
            else:
                ip.run_cell_magic("enqueue", line, case.cell)
        text = str(info.value)
        assert magic_snapshot(ip) == magic_before
    assert case.says in text, text
    assert world.snapshot() == before


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


# -- what a table cannot hold --------------------------------------------------------------------


def test_spawn_with_bad_options_fails_its_job_and_spawns_nothing(queue) -> None:
    bad = [{"priority": 2 ** 63}, {"timeout": math.inf}, {"needs": 123}, {"name": "a\nb"},
           {"resources": {"gpu": 0}}]
    handles = [queue.submit(jobs.spawn_with, options, key=None) for options in bad]
    for h, options in zip(handles, bad, strict=True):
        with pytest.raises(nbqueue.JobFailed) as info:
            h.result(timeout=120)
        assert info.value.exc_type == "SubmitError"
        assert next(iter(options)) in info.value.exc_value
        assert h.children == []


ESCAPE_FREE = "\x1b", "\x07", "\x9b", "\x08"


def test_the_command_line_prints_no_terminal_escapes(queue_dir, tmp_path) -> None:
    with nbqueue.Queue(queue_dir, workers=1) as q:
        h = q.submit(jobs.escapes, key=None)
        with pytest.raises(nbqueue.JobFailed):
            h.result(timeout=120)
        q.review("Look", payload="\x1b]0;pwned\x07payload \x1b[8mhidden\x1b[0m")
    assert "\x1b[31m" in h.name and "\x1b[31m" in h.logs  # stored as they came

    def run(*args: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
        if not tty:
            return subprocess.run([sys.executable, "-m", "nbqueue", *args], cwd=tmp_path,
                                  env=python_env(), text=True, capture_output=True, timeout=120)
        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([sys.executable, "-m", "nbqueue", *args], cwd=tmp_path,
                                  env=python_env(), stdout=follower, stderr=subprocess.PIPE,
                                  text=True, timeout=120)
            os.close(follower)
            follower = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other end is closed and read out
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            proc.stdout = b"".join(chunks).decode()
            return proc
        finally:
            os.close(leader)
            if follower != -1:
                os.close(follower)

    shown = {
        "jobs": run("jobs", str(queue_dir)),
        "status": run("status", str(queue_dir)),
        "reviews": run("reviews", str(queue_dir)),
        "show": run("show", str(queue_dir), h.id),
        "logs on a terminal": run("logs", str(queue_dir), h.id, tty=True),
        "cancel (an error naming the job)": run("cancel", str(queue_dir), h.id),
    }
    for what, proc in shown.items():
        for text in (proc.stdout, proc.stderr):
            assert not any(c in text for c in ESCAPE_FREE), (what, text)
    assert "escaped" in shown["jobs"].stdout and "cleared" in shown["jobs"].stdout
    assert "payload hidden" in shown["reviews"].stdout
    assert "red" in shown["logs on a terminal"].stdout
    assert "escaped" in shown["cancel (an error naming the job)"].stderr
    piped = run("logs", str(queue_dir), h.id)  # into a pipe: as the job wrote it
    assert "\x1b[31mred" in piped.stdout
    as_json = run("jobs", str(queue_dir), "--json")
    assert json.loads(as_json.stdout)[0]["name"] == "esc\x1b[31maped"  # JSON escapes it
    assert "\x1b" not in as_json.stdout
