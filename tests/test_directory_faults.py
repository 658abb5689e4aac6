"""Faults of the queue directory, with real processes and real files: trust for every file
in it (links, modes, owners), many processes creating one directory at once, damaged
database files (refused unchanged, checked, salvaged), and readers that need no write
lock (a stopped writer, a read-only mount).

The tests run as root (the owner tests ``chown`` files to another uid, and the read-only
test bind-mounts the directory); each skips, with the reason, where that is impossible.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import jobs
import pytest
from conftest import kill_and_reap, python_env, start_python, wait_for

import nbqueue
from nbqueue.outputs import JsonLines, deliver, registered
from nbqueue.store import Store
from nbqueue.store.check import check_queue

STRANGER = 54321  # a uid that owns nothing here


def nbq(*args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nbqueue ARGS`` to its end."""
    return subprocess.run([sys.executable, "-m", "nbqueue", *map(str, args)], cwd=cwd,
                          env=python_env(), text=True, capture_output=True, timeout=timeout)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")


def make_queue(path: Path, n: int = 5) -> list[str]:
    """A queue with ``n`` ready jobs (closed again); their ids."""
    with contextlib.closing(nbqueue.Queue(path, start=False)) as q:
        return [h.id for h in q.map(jobs.add, range(n), range(n), key=None)]


def served_queue(path: Path) -> dict[str, str]:
    """A queue with a done job, a done job with a large result (a value file), a review
    gate, and ready jobs (closed again); their ids by role."""
    with contextlib.closing(nbqueue.Queue(path, workers=1)) as q:
        small = q.submit(jobs.add, 2, 3, name="small")
        large = q.submit(jobs.sized, 100_000, name="large")
        assert small.result(timeout=60) == 5
        assert len(large.result(timeout=60)) == 100_000
        q.stop()
        gate = q.review("ship it?")
        ready = q.submit(jobs.add, 1, 1, name="later")
    return {"small": small.id, "large": large.id, "gate": gate.id, "ready": ready.id}


def checkpoint(path: Path) -> None:
    """Move every commit from the queue's WAL into cache.db (as the last connection to
    close does; a dispatcher thread's connection stays open until collected)."""
    con = sqlite3.connect(path / "cache.db")
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def fingerprint(path: Path) -> tuple[str, int]:
    """The content hash and mtime of a file (read with no queue open in this process)."""
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@contextlib.contextmanager
def stopped_writer(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A process that holds SQLite's write lock on the queue (an open transaction) and
    then stops itself (SIGSTOP); always resumed and killed at the end."""
    proc = start_python(f"""
        import os, signal
        from nbqueue.store import Store
        store = Store({str(path)!r})
        with store._txn():  # BEGIN IMMEDIATE: the write lock, held
            print("locked", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
    """, cwd=path.parent)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked", proc.stderr
        wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                 == "T", message="the writer stopping itself")
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        kill_and_reap(proc)


# -- trust for every file ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cache.db", "cache.db-wal", "cache.db-shm", "turn.lock",
                                  "service.json", "space.reserve.0"])
def test_a_file_writable_by_everyone_is_refused(queue_dir, name):
    make_queue(queue_dir)
    target = queue_dir / name
    target.touch()
    os.chmod(target, 0o666)
    before = sorted(os.listdir(queue_dir))
    with pytest.raises(nbqueue.UnsafeQueue) as info:
        nbqueue.Queue(queue_dir, start=False)
    assert str(target) in str(info.value)
    assert f"chmod o-w {target}" in str(info.value)
    assert sorted(os.listdir(queue_dir)) == before


def test_a_group_writable_file_warns_where_the_group_can_reach_it(queue_dir):
    make_queue(queue_dir)
    os.chmod(queue_dir / "cache.db", 0o660)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a private directory: out of the group's reach
        nbqueue.Queue(queue_dir, start=False).close()
    os.chmod(queue_dir, 0o750)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nbqueue.Queue(queue_dir, start=False).close()
    texts = [str(w.message) for w in caught]
    assert f"{queue_dir / 'cache.db'} is writable by its group" in "\n".join(texts), texts


@pytest.mark.parametrize("name", ["cache.db", "turn.lock"])
def test_a_file_owned_by_another_user_is_refused(queue_dir, name):
    needs_root()
    make_queue(queue_dir)
    os.chown(queue_dir / name, STRANGER, STRANGER)
    with pytest.raises(nbqueue.UnsafeQueue) as info:
        nbqueue.Queue(queue_dir, start=False)
    assert f"{queue_dir / name} belongs to another user (uid {STRANGER})" in str(info.value)


def test_a_value_directory_owned_by_another_user_is_refused(tmp_path, queue_dir):
    needs_root()
    ids = served_queue(queue_dir)
    [top] = [p for p in queue_dir.iterdir() if len(p.name) == 2 and p.is_dir()]
    [leaf] = list(top.iterdir())
    os.chown(leaf, STRANGER, STRANGER)  # below the top: checked when the value is read
    with contextlib.closing(nbqueue.Queue(queue_dir, start=False)) as q:
        with pytest.raises(nbqueue.UnsafeQueue, match="belongs to another user"):
            q.job(ids["large"]).result(timeout=10)
    os.chown(top, STRANGER, STRANGER)  # the top: checked at opening
    with pytest.raises(nbqueue.UnsafeQueue, match=str(top)):
        nbqueue.Queue(queue_dir, start=False)


def test_a_database_linked_to_another_users_file_is_refused(tmp_path, queue_dir):
    needs_root()
    victim_dir = tmp_path / "theirs"
    make_queue(victim_dir)
    victim = victim_dir / "cache.db"
    os.chown(victim, STRANGER, STRANGER)
    before = fingerprint(victim)
    queue_dir.mkdir(mode=0o700)
    (queue_dir / "cache.db").symlink_to(victim)
    with pytest.raises(nbqueue.UnsafeQueue) as info:
        nbqueue.Queue(queue_dir, start=False)
    assert "symbolic link" in str(info.value) and str(victim) in str(info.value)
    assert "Remove it" in str(info.value)
    assert fingerprint(victim) == before
    assert sorted(os.listdir(queue_dir)) == ["cache.db"]


def test_the_turnstile_is_never_created_through_a_link(tmp_path, queue_dir):
    make_queue(queue_dir)
    (queue_dir / "turn.lock").unlink()
    target = tmp_path / "planted"
    (queue_dir / "turn.lock").symlink_to(target)
    with pytest.raises(nbqueue.UnsafeQueue, match="turn.lock is a symbolic link"):
        nbqueue.Queue(queue_dir, start=False)
    assert not target.exists()


def test_an_outputs_lock_is_never_created_through_a_link(tmp_path, queue_dir):
    make_queue(queue_dir)
    output = JsonLines(tmp_path / "out.jsonl")
    store = Store(queue_dir)
    try:
        deliver(store, [output])
        [lock] = list((queue_dir / "outputs").iterdir())
        lock.unlink()
        target = tmp_path / "planted"
        lock.symlink_to(target)
        deliver(store, [output])
        [entry] = registered(store)
        assert "UnsafeQueue" in entry["error"] and "symbolic link" in entry["error"]
        assert not target.exists()
    finally:
        store.close()


def test_new_files_are_private(queue_dir):
    old = os.umask(0o002)  # a common umask: files 0664, directories 0775
    try:
        served_queue(queue_dir)
    finally:
        os.umask(old)
    values = list(queue_dir.glob("??/??/*.val"))
    assert values
    paths = [queue_dir / "cache.db", queue_dir / "turn.lock", *values,
             *(p.parent for p in values), *(p.parent.parent for p in values)]
    for path in paths:
        assert path.stat().st_mode & 0o077 == 0, (path, oct(path.stat().st_mode))


# -- many processes opening one new directory --------------------------------------------------


def test_processes_opening_one_new_directory_at_once_all_succeed(tmp_path):
    rounds, n = 50, 3
    base = tmp_path / "rounds"
    base.mkdir()
    children = [start_python(f"""
        import os, time
        from pathlib import Path
        import jobs, nbqueue
        base = Path({str(base)!r})
        for r in range({rounds}):
            (base / f"ready-{{r}}-{me}").touch()
            while not (base / f"go-{{r}}").exists():
                time.sleep(0.0002)
            try:
                q = nbqueue.Queue(base / f"q{{r}}", start=False)
                q.submit(jobs.add, {me}, r, key=None)
                q.close()
                print("ok", flush=True)
            except Exception as exc:
                print(f"round {{r}}: {{type(exc).__name__}}: {{exc}}", flush=True)
    """, cwd=tmp_path) for me in range(n)]
    try:
        for r in range(rounds):
            wait_for(lambda r=r: all((base / f"ready-{r}-{me}").exists() for me in range(n)),
                     interval=0.0005, message=f"the processes reaching round {r}")
            (base / f"go-{r}").touch()
        outputs = [child.communicate(timeout=120) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                kill_and_reap(child)
    failures = [line for out, _ in outputs for line in out.splitlines() if line != "ok"]
    assert failures == [], failures[:5]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    for r in range(rounds):
        with contextlib.closing(nbqueue.Queue(base / f"q{r}", start=False)) as q:
            assert len(q.jobs()) == n
        assert check_queue(base / f"q{r}").healthy


# -- damaged files -----------------------------------------------------------------------------


def _truncate(db: Path) -> None:
    with db.open("r+b") as f:
        f.truncate(db.stat().st_size // 2)


def _garbage(db: Path) -> None:
    db.write_bytes(os.urandom(db.stat().st_size))


def _garbage_header(db: Path) -> None:
    with db.open("r+b") as f:
        f.write(os.urandom(100))


@pytest.mark.parametrize("damage", [_truncate, _garbage, _garbage_header])
def test_a_damaged_database_is_refused_and_left_as_it_is(tmp_path, queue_dir, damage):
    make_queue(queue_dir, 300)
    db = queue_dir / "cache.db"
    damage(db)
    before = fingerprint(db)
    for start in (False, True):
        with pytest.raises(nbqueue.CorruptQueue) as info:
            nbqueue.Queue(queue_dir, workers=1, start=start)
        text = str(info.value)
        assert str(db) in text
        assert f"nbqueue check {queue_dir}" in text and f"nbqueue salvage {queue_dir}" in text
    assert fingerprint(db) == before
    proc = nbq("status", queue_dir, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is damaged" in proc.stderr
    proc = nbq("check", queue_dir, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.strip()
    proc = nbq("salvage", queue_dir, tmp_path / "new", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 0:  # a truncated file whose schema still reads
        assert damage is _truncate and " jobs copied" in proc.stdout, proc.stdout
        assert nbq("check", tmp_path / "new", cwd=tmp_path).returncode == 0
    else:  # SQLite reads nothing of a file whose header or schema is gone
        assert proc.returncode == 1 and "nothing can be copied" in proc.stderr, proc.stderr
    assert fingerprint(db) == before


def _damage_job_pages(db: Path, pages: int = 2) -> None:
    """Overwrite ``pages`` leaf pages of the job table in the middle of the file."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        size = con.execute("PRAGMA page_size").fetchone()[0]
        leaves = [n for n, in con.execute("SELECT pageno FROM dbstat WHERE name = 'nbq_job' "
                                          "AND pagetype = 'leaf' ORDER BY pageno")]
    finally:
        con.close()
    assert len(leaves) > 4
    middle = len(leaves) // 2
    with db.open("r+b") as f:
        for page in leaves[middle:middle + pages]:
            f.seek((page - 1) * size)
            f.write(os.urandom(size))


def test_check_reports_damage_and_salvage_copies_what_reads(tmp_path, queue_dir):
    ids = served_queue(queue_dir)
    with contextlib.closing(nbqueue.Queue(queue_dir, start=False)) as q:
        first = q.submit(jobs.add, 10, 1, name="first")
        q.submit(jobs.add, first, 1, name="second")  # needs the first
        q.map(jobs.square, range(400), key=None, name="many")
        total = len(q.jobs())
    checkpoint(queue_dir)
    db = queue_dir / "cache.db"
    _damage_job_pages(db)
    before = fingerprint(db)

    check = nbq("check", queue_dir, cwd=tmp_path)
    assert check.returncode == 1, check.stdout
    assert "integrity_check" in check.stdout and "malformed" in check.stdout, check.stdout
    assert "nbqueue salvage" in check.stderr

    new = tmp_path / "new"
    done = nbq("salvage", queue_dir, new, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = done.stdout.splitlines()[0]
    copied = int(summary.split(" jobs copied")[0].rsplit(" ", 1)[1])
    lost = int(summary.split(" lost;")[0].rsplit(" ", 1)[1])
    assert lost > 0 and copied + lost == total, summary
    assert "1 large values copied, 0 lost" in summary, summary
    assert fingerprint(db) == before

    assert nbq("check", new, cwd=tmp_path).returncode == 0
    with contextlib.closing(nbqueue.Queue(new, workers=2)) as q:
        q.join(timeout=120)
        counts = q.status()["counts"]
        assert counts["ready"] == counts["running"] == counts["waiting"] == 0, counts
        assert sum(counts.values()) == copied
        assert len(q.job(ids["large"]).result(timeout=10)) == 100_000
        assert q.job(ids["gate"]).state == "review"
        squares = [h for h in q.jobs(name="many")]
        assert squares and all(h.state == "done" for h in squares)
        assert {h.result() for h in squares} <= {i * i for i in range(400)}


def test_salvage_applies_the_queue_rules_to_what_was_lost(tmp_path, queue_dir):
    ids = served_queue(queue_dir)
    with contextlib.closing(nbqueue.Queue(queue_dir, workers=1)) as q:
        gen = q.submit(jobs.waits_on, tmp_path / "never", 3, name="gen")
        wait_for(lambda: gen.state == "waiting", message="the generator's yield")
        q.stop()
        first = q.submit(jobs.add, 1, 2, name="first")
        second = q.submit(jobs.add, first, 10, name="second")  # takes first's result
        held = q.submit(jobs.add, 5, 5, name="held", priority=10)
        [claimed] = q._store.claim("a dispatcher that is gone", 1, lease=3600)
        assert claimed.id == held.id
        lost_child = gen.children[0].id
    con = sqlite3.connect(queue_dir / "cache.db")
    with con:  # rows lost to damage
        con.execute("DELETE FROM nbq_job WHERE id IN (?, ?)", (lost_child, first.id))
    con.close()
    [value] = list(queue_dir.glob("??/??/*.val"))
    value.unlink()  # the large result's file

    report = nbq("salvage", queue_dir, tmp_path / "new", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "; 0 large values copied, 1 lost" in report.stdout, report.stdout
    with contextlib.closing(nbqueue.Queue(tmp_path / "new", workers=1)) as q:
        q.join(timeout=120)
        records = {h.id: h.record() for h in q.jobs()}
        assert records[gen.id].state == "cancelled"
        assert records[gen.id].reason == f"salvage: its child job {lost_child} was lost"
        assert {r.state for r in records.values() if r.parent == gen.id} == {"cancelled"}
        assert records[second.id].state == "cancelled"
        assert records[second.id].reason == f"salvage: it needs job {first.id}, which was lost"
        assert records[ids["large"]].state == "failed"
        assert records[ids["large"]].reason == "salvage: its result was lost; retry it"
        assert records[held.id].state == "done"
        assert records[held.id].attempt == 2 and "its queue was salvaged" in records[held.id].why
        assert q.job(ids["small"]).result() == 5
        assert q.job(ids["ready"]).result(timeout=60) == 2
        assert q.job(ids["large"]).retry().result(timeout=60) == b"x" * 100_000
    assert nbq("check", tmp_path / "new", cwd=tmp_path).returncode == 0


def test_check_names_each_broken_invariant(tmp_path, queue_dir):
    ids = served_queue(queue_dir)
    assert nbq("check", queue_dir, cwd=tmp_path).returncode == 0
    con = sqlite3.connect(queue_dir / "cache.db")
    with con:
        con.execute("UPDATE nbq_count SET n = n + 2 WHERE state = 'ready'")
        con.execute("UPDATE nbq_job SET state = 'running', owner = NULL WHERE id = ?",
                    (ids["ready"],))
        con.execute("INSERT INTO nbq_need VALUES ('feedfacefeedface', ?, 0)", (ids["gate"],))
        con.execute("INSERT INTO nbq_hold VALUES ('gpu', 'deadbeefdeadbeef', 1, 0)")
    con.close()
    [value] = list(queue_dir.glob("??/??/*.val"))
    orphan = value.with_name("0" * 28 + ".val")
    orphan.write_bytes(b"left by a transaction that never committed")
    value.unlink()
    proc = nbq("check", queue_dir, cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    expected = [
        "count of ready jobs says 3, the rows hold 0",
        "count of running jobs says 0, the rows hold 1",
        f"job {ids['ready']} is running but has no owner",
        "nbq_need names job feedfacefeedface (need), which does not exist",
        "nbq_hold names job deadbeefdeadbeef (job), which does not exist",
        f"value result:{ids['large']}:1: its file",
        f"value file {orphan} is named by no row",
    ]
    for text in expected:
        assert any(line.startswith(text) for line in lines), (text, lines)
    assert len(lines) == len(expected), lines


# -- readers need no write lock ---------------------------------------------------------------


def test_readers_work_while_a_stopped_writer_holds_the_lock(tmp_path, queue_dir):
    ids = served_queue(queue_dir)
    with stopped_writer(queue_dir) as writer:
        status = nbq("status", queue_dir, "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert '"done": 2' in status.stdout
        listing = nbq("jobs", queue_dir, cwd=tmp_path)
        assert listing.returncode == 0 and "later" in listing.stdout, listing.stderr
        reviews = nbq("reviews", queue_dir, cwd=tmp_path)
        assert reviews.returncode == 0 and "ship it?" in reviews.stdout, reviews.stderr
        export = nbq("export", queue_dir, "--jsonl", tmp_path / "ended.jsonl", cwd=tmp_path)
        assert export.returncode == 0, export.stderr
        assert len((tmp_path / "ended.jsonl").read_text().splitlines()) == 2

        with contextlib.closing(nbqueue.Queue(queue_dir, start=False)) as q:
            assert len(q.job(ids["large"]).result(timeout=10)) == 100_000
            assert q.status()["counts"]["review"] == 1
            assert not q._store.writing

        store = Store(queue_dir, timeout=0.5)
        try:
            with pytest.raises(nbqueue.QueueLocked) as info:
                store.set_resource("gpu", capacity=2)
        finally:
            store.close()
        text = str(info.value)
        assert f"pid {writer.pid}" in text and "stopped" in text, text
        assert f"kill -CONT {writer.pid}" in text


def test_a_reading_queue_writes_nothing_until_its_first_write(tmp_path, queue_dir):
    gate = tmp_path / "gate"
    proc = start_python(f"""
        import time
        import jobs, nbqueue
        q = nbqueue.Queue({str(queue_dir)!r}, workers=1)
        h = q.submit(jobs.wait_for_file, {str(gate)!r}, "late", key="held")
        while h.state != "running":
            time.sleep(0.01)
        print(h.id, flush=True)
        time.sleep(600)
    """, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        job_id = proc.stdout.readline().strip()
    finally:
        kill_and_reap(proc)  # its dispatcher dies holding the job
    files = [queue_dir / "cache.db", queue_dir / "cache.db-wal"]
    before = [fingerprint(f) for f in files]
    with contextlib.closing(nbqueue.Queue(queue_dir, start=False)) as q:
        h = q.job(job_id)
        assert h.state == "running"  # no recovery while only reading
        assert q.status()["counts"]["running"] == 1
        assert not q._store.writing
        assert [fingerprint(f) for f in files] == before
        q.submit(jobs.add, 1, 2)  # the first write: the switch, and recovery with it
        assert q._store.writing
        assert h.state == "ready"
        assert h.reason.startswith("its dispatcher's process died while attempt 1 ran")


def test_readers_work_on_a_read_only_mount(tmp_path, queue_dir):
    ids = served_queue(queue_dir)
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "--bind", str(queue_dir), str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount --bind is not permitted here")
    try:
        remount = subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)],
                                 capture_output=True, text=True)
        if remount.returncode != 0:
            pytest.skip(f"remount read-only failed: {remount.stderr}")
        with pytest.raises(OSError):
            (mount / "probe").touch()
        for command in (("status",), ("jobs",), ("reviews",),
                        ("export", "--jsonl", tmp_path / "ended.jsonl")):
            proc = nbq(command[0], mount, *command[1:], cwd=tmp_path)
            assert proc.returncode == 0, (command, proc.stderr)
        assert "ship it?" in nbq("reviews", mount, cwd=tmp_path).stdout
        with contextlib.closing(nbqueue.Queue(mount, start=False)) as q:
            assert len(q.job(ids["large"]).result(timeout=10)) == 100_000
            assert q.job(ids["small"]).result() == 5
            with pytest.raises(nbqueue.StoreError, match="read-only"):
                q.submit(jobs.add, 1, 1)
        assert nbq("check", mount, cwd=tmp_path).returncode == 0
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
