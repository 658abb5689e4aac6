"""Job functions that cross process boundaries in tests (importable by workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbqueue


def add(a, b):
    return a + b


def square(x):
    return x * x


def noop(*args, **kwargs):
    return None


def sized(n, fill=b"x"):
    return fill * n


def boom(message="boom"):
    raise ValueError(message)


def sleepy(seconds, value=None):
    time.sleep(seconds)
    return value


def record(path, value, seconds=0.0):
    """Append a start line, sleep, append an end line (one file per job run)."""
    log = Path(path)
    with log.open("a") as f:
        f.write(f"start {value} {os.getpid()} {time.time()}\n")
    time.sleep(seconds)
    with log.open("a") as f:
        f.write(f"end {value} {os.getpid()} {time.time()}\n")
    return value


def chatty(n):
    for i in range(n):
        print(f"line {i}")
        nbqueue.progress(i + 1, n, "printing")
    return n


def suicide():
    os._exit(3)


def die_logged(path):
    """Log a line with this pid, print something, then end the worker process."""
    _append(path, f"start {os.getpid()}")
    print("about to die", flush=True)
    os._exit(3)


def flaky(path, failures):
    """Fail the first `failures` times (counted in a file), then succeed."""
    counter = Path(path)
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    if count < failures:
        raise RuntimeError(f"failure {count + 1}")
    return count + 1


def spawner(n):
    ids = [nbqueue.spawn(square, i, key=None) for i in range(n)]
    return ids


def fan_out(n):
    results = yield [nbqueue.call(square, i) for i in range(n)]
    return sum(results)


# -- used by test_queue.py and test_crash.py ------------------------------------------------


def wait_for_file(path, value=None, timeout=120.0):
    """Block until the file `path` exists (the test creates it), then return `value`."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return value


def _append(path, line):
    with Path(path).open("a") as f:
        f.write(line + "\n")


def pid_then_wait(pid_path, gate, value=None):
    """Publish this worker's pid in `pid_path` (atomically), then wait for `gate`."""
    tmp = Path(str(pid_path) + ".tmp")
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, pid_path)
    return wait_for_file(gate, value)


def print_then_wait(gate):
    import sys

    print("first line", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    wait_for_file(gate)
    print("last line")
    return "printed"


def progress_then_wait(gate):
    nbqueue.progress(1, 4, "a quarter")
    wait_for_file(gate)
    nbqueue.progress(4, 4, "all")
    return "progressed"


def spawn_then_wait(log, gate, n):
    """Spawn `n` record() children, log, then block until `gate` exists."""
    ids = [nbqueue.spawn(record, log, f"child{i}", key=None) for i in range(n)]
    _append(log, f"spawned parent {os.getpid()} {time.time()}")
    wait_for_file(gate)
    _append(log, f"end parent {os.getpid()} {time.time()}")
    return ids


def record_ppid(path, value, gate=None):
    """Wait for `gate` (if given), then log value, pid and parent pid (the dispatcher)."""
    if gate is not None:
        wait_for_file(gate)
    _append(path, f"run {value} {os.getpid()} {os.getppid()} {time.time()}")
    return value


def hang(path, value, gate):
    """Log a start line with this pid, then block until `gate` exists."""
    _append(path, f"start {value} {os.getpid()} {time.time()}")
    wait_for_file(gate)
    return value


# -- used by test_resources.py, test_gates.py, test_after.py, test_continuations.py ---------


def span(log, value, seconds=0.0, group=None, size=2, timeout=120.0):
    """Log "start/end value pid ppid time" around a sleep; time is the last field.

    With `group` (a directory), wait after the start line until `size` jobs of the group
    have started: proof that they ran at the same time, with no timing involved.
    """
    _append(log, f"start {value} {os.getpid()} {os.getppid()} {time.time()}")
    if group is not None:
        Path(group).mkdir(exist_ok=True)
        (Path(group) / str(value)).touch()
        deadline = time.monotonic() + timeout
        while len(os.listdir(group)) < size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(os.listdir(group))} of {size} jobs met in {group}")
            time.sleep(0.01)
    time.sleep(seconds)
    _append(log, f"end {value} {os.getpid()} {os.getppid()} {time.time()}")
    return value


def slow_first(path, seconds):
    """Count runs in `path`; only the first run is slow. Returns the run number."""
    counter = Path(path)
    runs = len(counter.read_text().splitlines()) if counter.exists() else 0
    _append(path, f"run {os.getpid()}")
    if runs == 0:
        time.sleep(seconds)
    return runs + 1


def two_steps(n):
    squares = yield [nbqueue.call(square, i) for i in range(n)]
    total = yield nbqueue.call(add, sum(squares), 1000)
    return total


def nested(depth):
    """A tree of generator handlers: returns how many nodes it has."""
    if depth == 0:
        return 1
    sizes = yield [nbqueue.call(nested, depth - 1), nbqueue.call(nested, depth - 1)]
    return 1 + sum(sizes)


def catches(message):
    try:
        value = yield nbqueue.call(boom, message)
    except nbqueue.JobFailed as exc:
        return ("caught", exc.exc_type, exc.exc_value)
    return ("not caught", value)


def uncaught(message):
    value = yield nbqueue.call(boom, message)
    return value


def reviewed(title):
    decision = yield nbqueue.review(title, payload="please check")
    return (bool(decision), decision.comment, decision.by)


def reviewed_as(title, name, priority):
    """A handler whose gate has a name and a priority of its own."""
    decision = yield nbqueue.review(title, name=name, priority=priority)
    return bool(decision)


def sleeps(until):
    yield nbqueue.sleep(until)
    return "woke"


def clock(log):
    """Log the replay-stable clock of step 0 on every replay; return both steps' clocks."""
    first = nbqueue.now()
    _append(log, repr(first))
    yield nbqueue.call(noop)
    second = nbqueue.now()
    yield nbqueue.call(noop)
    return (first, second)


def squares_on(n, resource):
    results = yield [nbqueue.call(square, i).options(resources=[resource]) for i in range(n)]
    return sum(results)


def slow_fan(log, n, seconds):
    results = yield [nbqueue.call(span, log, i, seconds) for i in range(n)]
    return sum(results)


def pause_between(log, marker, n, seconds, pause):
    """Two fan-outs; between them log to `marker` on every replay, and the first time
    only, sleep `pause` (a window in which the test kills the process)."""
    first = yield [nbqueue.call(span, log, i, seconds) for i in range(n)]
    first_time = not Path(marker).exists()
    _append(marker, f"between {os.getpid()}")
    if first_time:
        time.sleep(pause)
    second = yield [nbqueue.call(span, log, 100 + i, seconds) for i in range(n)]
    return sum(first) + sum(second)


def drifting(path):
    """Yields a call whose argument is read from a file: non-deterministic on purpose."""
    n = int(Path(path).read_text())
    first = yield nbqueue.call(square, n)
    yield nbqueue.review("continue?")
    return first


def waits_on(flag, n):
    results = yield [nbqueue.call(wait_for_file, flag, i) for i in range(n)]
    return results


def waits_below(flag):
    """A generator whose child is itself a generator waiting on `flag`."""
    results = yield nbqueue.call(waits_on, flag, 2)
    return results


def yields_junk():
    yield 42


# -- used by test_conformance.py and test_outputs.py ----------------------------------------


def tiny_png():
    """The bytes of a valid 1x1 PNG (a red pixel)."""
    import struct
    import zlib

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


class Png:
    """A result with a rich display: an image (``_repr_png_``)."""

    def __init__(self, data):
        self.data = data

    def _repr_png_(self):
        return self.data

    def __repr__(self):
        return f"<Png {len(self.data)} bytes>"


def png_result():
    return Png(tiny_png())


def unjsonable(n):
    """A result JSON cannot hold: a set (delivered as its repr)."""
    return set(range(n))


def flaky_child(path):
    """A generator whose only child fails the first time (counted in `path`)."""
    value = yield nbqueue.call(flaky, path, 1)
    return value


# -- used by test_orphans.py ----------------------------------------------------------------


def child_then_wait(pid_path, gate, value=None):
    """Start ``sleep 300`` as a child process, publish "<this pid> <child pid>" in
    `pid_path` (atomically), then wait for `gate`. Run again (its worker died under it),
    return at once."""
    import subprocess

    if Path(pid_path).exists():
        return value
    child = subprocess.Popen(["sleep", "300"])
    tmp = Path(str(pid_path) + ".tmp")
    tmp.write_text(f"{os.getpid()} {child.pid}")
    os.replace(tmp, pid_path)
    return wait_for_file(gate, value)


def leave_child():
    """Start ``sleep 300`` as a child process and return at once: (this pid, child pid)."""
    import subprocess

    return os.getpid(), subprocess.Popen(["sleep", "300"]).pid


def getpid():
    return os.getpid()


def flaky_loud(path, failures):
    """Print "run N", then fail the first `failures` times (counted in a file)."""
    counter = Path(path)
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    print(f"run {count + 1}")
    if count < failures:
        raise RuntimeError(f"failure {count + 1}")
    return count + 1


def leave_orphan():
    """Have a shell start ``sleep 300`` in the background and exit: the sleep is no longer
    a descendant of this process (but is still in its process group). Returns its pid."""
    import subprocess

    out = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout
    return int(out)


def exclusive_ticks(log, lock, value, seconds):
    """Hold ``lock`` (an exclusive ``flock``) for ``seconds`` with a child process running,
    appending lines to ``log``: "start VALUE PID TIME CHILD_PID", then "tick VALUE PID TIME"
    every 20 ms, then "end VALUE PID TIME". A run that finds the lock held by another
    (two executions at once) appends "clash VALUE PID TIME" and goes on."""
    import fcntl
    import subprocess

    def line(text):
        with open(log, "a") as f:
            f.write(f"{text} {value} {os.getpid()} {time.time()}\n")

    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        line("clash")
    child = subprocess.Popen(["sleep", "600"])
    with open(log, "a") as f:
        f.write(f"start {value} {os.getpid()} {time.time()} {child.pid}\n")
    deadline = time.time() + seconds
    while time.time() < deadline:
        line("tick")
        time.sleep(0.02)
    child.kill()
    child.wait()
    line("end")
    os.close(fd)
    return value


# -- used by test_faults.py -----------------------------------------------------------------


def sized_after_file(path, tag, n, timeout=120.0):
    """Block until the file `path` exists, then return `tag` repeated `n` times (bytes):
    a result stored as a value file of its own when large."""
    wait_for_file(path, timeout=timeout)
    return tag.encode() * n


def takes(value):
    """A job that takes another's result as its argument."""
    return value


def squares_then_wait(n, flag):
    """A generator: squares in step 0, then a child that waits for `flag` in step 1."""
    squares = yield [nbqueue.call(square, i) for i in range(n)]
    extra = yield nbqueue.call(wait_for_file, flag, 1000)
    return sum(squares) + extra


def busy_with(blob, seconds, every=0.1):
    """Report progress every `every` seconds for `seconds`; returns len(blob)."""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        nbqueue.progress(i, message=f"step {i}")
        print(f"step {i}", flush=True)
        time.sleep(every)
    return len(blob)


def _refuse_to_load(message):
    raise RuntimeError(message)


class LoadsNowhere:
    """A result that pickles, but raises when it is unpickled."""

    def __reduce__(self):
        return (_refuse_to_load, ("this result refuses to be loaded",))


def unloadable_result():
    return LoadsNowhere()


def spawn_with(options):
    """Spawn noop() with the submit options in the dict `options` (bad ones fail this job)."""
    return nbqueue.spawn(noop, **options)


def escapes():
    """Print and fail with terminal escape sequences (a colour, a window title, a reset)."""
    print("\x1b[31mred\x1b[0m \x1b]0;pwned\x07title \x1bc reset")
    raise ValueError("\x1b[2J\x1b]0;evil\x07cleared")


escapes.__name__ = "esc\x1b[31maped"  # the default job name, not checked as name= is


def ask_threshold(x):
    """A handler that asks a reviewer for answers and uses them after its yield."""
    decision = yield nbqueue.review("Pick a threshold", fields={"threshold": 0.5, "note": str},
                                    deadline=3600)
    return bool(decision), decision.by, decision.values["threshold"] * x, decision.values["note"]


def ask_with_deadline(seconds, action):
    """A handler whose review is decided by its deadline (``action``: on_deadline)."""
    decision = yield nbqueue.review("Decide in time", fields={"level": 3},
                                    deadline=seconds, on_deadline=action)
    return bool(decision), decision.by, decision.values


def publish_decision(decision):
    """A job after a review gate: what the reviewer decided and answered (plain data)."""
    return {"approved": bool(decision), "comment": decision.comment,
            "values": dict(decision.values)}


def hog(total, chunk=10_000_000, pause=0.01):
    """Allocate ``total`` bytes (touched: resident), ``chunk`` at a time; returns how much
    it held (it never gets there under a lower memory limit)."""
    held = []
    while len(held) * chunk < total:
        held.append(b"\x01" * chunk)
        time.sleep(pause)
    return len(held) * chunk


def hog_in_child(total):
    """``hog`` in a child process of the job (its memory counts against the job's limit)."""
    import subprocess
    import sys

    code = f"import sys; sys.path[:0] = {sys.path!r}; import jobs; jobs.hog({total})"
    return subprocess.run([sys.executable, "-c", code], check=True).returncode


def oom_score_adj():
    """This worker's pid and its ``oom_score_adj`` (Linux)."""
    with open("/proc/self/oom_score_adj") as f:
        return os.getpid(), int(f.read())


# -- used by test_dask.py ----------------------------------------------------------------------


def dies_if(log, value, doom):
    """Log a start line; end the worker process if the file `doom` exists, else return."""
    _append(log, f"start {value} {os.getpid()} {time.time()}")
    if Path(doom).exists():
        os._exit(3)
    return value


# -- used by test_maps.py ----------------------------------------------------------------


def fails_on(x, bad=()):
    """x * 10, or a ValueError for the values in `bad`."""
    if x in bad:
        raise ValueError(f"bad item {x}")
    return x * 10


def flaky_item(folder, x, failures):
    """Fail the first `failures` runs of item `x` (counted in a file per item), then x."""
    counter = Path(folder) / f"item-{x}"
    count = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(count + 1))
    if count < failures:
        raise RuntimeError(f"item {x} failure {count + 1}")
    return x


def mark_item(log, x, seconds=0.0):
    """One line per run of item `x` (its pid), then sleep: counts how often each ran."""
    _append(log, f"run {x} {os.getpid()} {time.time()}")
    time.sleep(seconds)
    return x


def die_on(x, bad):
    """Kill this worker process on item `bad` (a crash inside one item)."""
    if x == bad:
        os.kill(os.getpid(), 9)
    return x


def log_job_id(path, seconds=0.0):
    """Append the id of the running job to ``path`` (one line per run), after ``seconds``."""
    from nbqueue.jobrun import current

    time.sleep(seconds)
    job_id = current().task.id
    _append(path, job_id)
    return job_id


def ticks(log, gate):
    """Append "tick RUN TIME" every 20 ms until `gate` exists, then "end RUN TIME"; RUN
    tells this execution from others. Python code all along: an interrupt stops it."""
    import uuid

    run = uuid.uuid4().hex[:8]
    while not Path(gate).exists():
        _append(log, f"tick {run} {time.time()}")
        time.sleep(0.02)
    _append(log, f"end {run} {time.time()}")
    return run


def read_fifo(fifo):
    """Block in C (opening a named pipe for reading waits for a writer) until the test
    writes to `fifo`: no interrupt reaches Python code meanwhile. Returns what it read."""
    with open(fifo, "rb") as f:
        return f.read()
