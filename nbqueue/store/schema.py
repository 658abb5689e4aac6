"""The queue's tables, inside diskcache's SQLite file (``cache.db``).

Partial indexes per state make every hot query an index seek: ready jobs by
``(priority desc, seq)``, time waits by ``not_before``, running jobs by owner (and
lease), per-resource wait lists by ``blocker``. Counts per state are a table, so counting
never scans: deletes keep it by trigger; inserts and state changes are counted by
the transaction (``Tx.move``, ``Tx.insert``) and written once at its end (a trigger
per changed row cost more than the change itself). The ``:changes`` row of the same
table counts committed transactions, for cheap polling: one page written per commit
for both.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

FORMAT = 1  # the on-disk format this nbqueue writes; a newer one is refused

SCHEMA = """
CREATE TABLE IF NOT EXISTS nbq_meta(key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS nbq_fn(
  id TEXT PRIMARY KEY, blob BLOB NOT NULL, by_value INTEGER NOT NULL,
  python TEXT NOT NULL, cloudpickle TEXT NOT NULL, label TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nbq_job(
  id TEXT PRIMARY KEY, seq INTEGER NOT NULL, key TEXT, name TEXT NOT NULL,
  kind TEXT NOT NULL, state TEXT NOT NULL, blocker TEXT, reason TEXT NOT NULL DEFAULT '',
  priority INTEGER NOT NULL DEFAULT 0, not_before REAL,
  fn TEXT, args BLOB, refs TEXT, needs TEXT, options TEXT NOT NULL,
  pending INTEGER NOT NULL DEFAULT 0, steps INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 0,
  retry_base INTEGER NOT NULL DEFAULT 0, deaths INTEGER NOT NULL DEFAULT 0,
  claim INTEGER NOT NULL DEFAULT 0, owner TEXT, lease_until REAL,
  handed INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
  parent TEXT, step INTEGER, position INTEGER,
  created REAL NOT NULL, started REAL, ended REAL,
  result BLOB, result_ref TEXT, error TEXT, progress TEXT, log TEXT, payload BLOB,
  why TEXT, log_before TEXT, args_ref TEXT, wait TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS nbq_job_key ON nbq_job(key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS nbq_job_ready ON nbq_job(priority DESC, seq) WHERE state = 'ready';
CREATE INDEX IF NOT EXISTS nbq_job_time ON nbq_job(not_before)
  WHERE state = 'waiting' AND blocker = 'time';
CREATE INDEX IF NOT EXISTS nbq_job_blocked ON nbq_job(blocker, priority DESC, seq)
  WHERE state = 'waiting';
-- running jobs by owner, then lease (one index: every claim and completion writes it)
DROP INDEX IF EXISTS nbq_job_lease;
DROP INDEX IF EXISTS nbq_job_owner;
CREATE INDEX IF NOT EXISTS nbq_job_running ON nbq_job(owner, lease_until)
  WHERE state = 'running';
CREATE INDEX IF NOT EXISTS nbq_job_parent ON nbq_job(parent, seq) WHERE parent IS NOT NULL;
-- top-level jobs by state, then end time (NULL while active), then submission: the panel
-- pages these (active ones oldest first, ended ones newest end first), housekeeping reads
-- the ended ones by end time; parent makes it covering for counts. One index for both
-- orders: a job that ends moves within it, where a second index by end time would cost
-- every commit of a stream a page more
DROP INDEX IF EXISTS nbq_job_top;
DROP INDEX IF EXISTS nbq_job_top_ended;
CREATE INDEX IF NOT EXISTS nbq_job_listed ON nbq_job(state, ended, seq, parent)
  WHERE parent IS NULL;
-- children by state (top-level ones are in nbq_job_listed): each job is in one of the
-- two, so a change of state writes one index, not two
DROP INDEX IF EXISTS nbq_job_state;
CREATE INDEX IF NOT EXISTS nbq_job_kids ON nbq_job(state, seq) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS nbq_job_name ON nbq_job(name, seq);
-- the panel's list (listing.py): top-level gates by name (to fold earlier runs)
CREATE INDEX IF NOT EXISTS nbq_job_top_gate ON nbq_job(name, seq)
  WHERE kind = 'gate' AND parent IS NULL;
-- job waits for need. soft: 1 when any ending of need will do (a generator waiting for
-- its children), 0 when need must end done (needs=, a job handle as an argument). The
-- code calls it any_end; the column keeps its first name, which queues on disk carry
CREATE TABLE IF NOT EXISTS nbq_need(need TEXT NOT NULL, job TEXT NOT NULL, soft INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(need, job)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nbq_count(state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
DROP TRIGGER IF EXISTS nbq_count_ins;
DROP TRIGGER IF EXISTS nbq_count_upd;
DROP TRIGGER IF EXISTS nbq_count_del;
-- a map's chunks are not counted (their map is): see Tx.move
CREATE TRIGGER IF NOT EXISTS nbq_count_gone AFTER DELETE ON nbq_job WHEN OLD.kind != 'chunk' BEGIN
  UPDATE nbq_count SET n = n - 1 WHERE state = OLD.state; END;
CREATE TABLE IF NOT EXISTS nbq_resource(name TEXT PRIMARY KEY,
  capacity INTEGER NOT NULL DEFAULT 1, available INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS nbq_hold(resource TEXT NOT NULL, job TEXT NOT NULL,
  units INTEGER NOT NULL, since REAL NOT NULL, PRIMARY KEY(resource, job)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nbq_hold_job ON nbq_hold(job);
CREATE INDEX IF NOT EXISTS nbq_need_job ON nbq_need(job);
CREATE TABLE IF NOT EXISTS nbq_journal(job TEXT NOT NULL, step INTEGER NOT NULL,
  fingerprint TEXT NOT NULL, children TEXT NOT NULL, at REAL NOT NULL,
  PRIMARY KEY(job, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nbq_dispatcher(owner TEXT PRIMARY KEY, pid INTEGER, host TEXT,
  started REAL, heartbeat REAL, workers INTEGER, executor TEXT, error TEXT, stopped REAL);
CREATE TABLE IF NOT EXISTS nbq_output(name TEXT PRIMARY KEY, kind TEXT NOT NULL,
  spec TEXT NOT NULL, cursor INTEGER NOT NULL, created REAL NOT NULL, delivered REAL, error TEXT,
  failures INTEGER NOT NULL DEFAULT 0, retry_at REAL, events TEXT NOT NULL DEFAULT 'ended');
-- a job's output, apart from its row: the row changes at every claim, heartbeat and
-- progress write, and SQLite rewrites a whole row on each change (before: the output of
-- earlier attempts, each after a header line)
CREATE TABLE IF NOT EXISTS nbq_log(job TEXT PRIMARY KEY, log TEXT NOT NULL, before TEXT);
CREATE TABLE IF NOT EXISTS nbq_outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
  name TEXT, kind TEXT, state TEXT NOT NULL, reason TEXT, error TEXT, attempt INTEGER,
  parent TEXT, created REAL, started REAL, ended REAL, event TEXT, at REAL);
-- what a review gate asks for (its GateSpec as JSON) and its timers: since (it entered
-- review), deadline, the next reminder, overdue (a kept deadline passed), due (the
-- earliest of the deadline and the reminder: what a dispatcher looks for, gates.py)
CREATE TABLE IF NOT EXISTS nbq_gate(job TEXT PRIMARY KEY, spec TEXT NOT NULL, since REAL,
  deadline REAL, remind REAL, overdue INTEGER NOT NULL DEFAULT 0, due REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nbq_gate_due ON nbq_gate(due) WHERE due IS NOT NULL;
-- chunked maps (store/maps.py): the map's job row holds its name, state, options and
-- counts; here its chunking. cursor: items [0, cursor) are in chunks already; chunksize
-- NULL: automatic, the next chunk has ``size`` items and chunks of that size took
-- ``smoothed`` seconds (chunking.next_size); carving: 1 while it runs with items left to
-- put in chunks; stopped: the items past the cursor were cancelled with the map;
-- done/failed/cancelled: items that ended so
CREATE TABLE IF NOT EXISTS nbq_map(id TEXT PRIMARY KEY, total INTEGER NOT NULL,
  cursor INTEGER NOT NULL DEFAULT 0, chunksize INTEGER, size INTEGER NOT NULL DEFAULT 1,
  smoothed REAL NOT NULL DEFAULT 0, chunks INTEGER NOT NULL DEFAULT 0,
  carving INTEGER NOT NULL DEFAULT 0, stopped INTEGER NOT NULL DEFAULT 0,
  done INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
  cancelled INTEGER NOT NULL DEFAULT 0, priority INTEGER NOT NULL DEFAULT 0,
  seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nbq_map_carve ON nbq_map(priority DESC, seq) WHERE carving = 1;
-- the items' arguments, pickled together in blocks of consecutive items (write-once)
CREATE TABLE IF NOT EXISTS nbq_map_args(map TEXT NOT NULL, start INTEGER NOT NULL,
  n INTEGER NOT NULL, args BLOB NOT NULL, PRIMARY KEY(map, start));
-- the results of a chunk's first run, pickled together: items [start, start + n) are
-- done with these results unless nbq_map_item says otherwise (write-once)
CREATE TABLE IF NOT EXISTS nbq_map_out(map TEXT NOT NULL, start INTEGER NOT NULL,
  n INTEGER NOT NULL, results BLOB NOT NULL, PRIMARY KEY(map, start));
-- the items whose ending is their own: failed (error), waiting for a retry, cancelled,
-- run again (then done with their own result); base: attempts before the last rerun
CREATE TABLE IF NOT EXISTS nbq_map_item(map TEXT NOT NULL, idx INTEGER NOT NULL,
  state TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, base INTEGER NOT NULL DEFAULT 0,
  result BLOB, error TEXT, PRIMARY KEY(map, idx));
-- the tracebacks of failed items, each once per map (items often fail alike)
CREATE TABLE IF NOT EXISTS nbq_map_tb(map TEXT NOT NULL, hash TEXT NOT NULL,
  text TEXT NOT NULL, PRIMARY KEY(map, hash)) WITHOUT ROWID;
-- recurring work (schedules.py): what a schedule calls (its function, arguments and
-- options, stored as a job's), its ScheduleSpec as JSON, and its next firing (NULL while
-- it is paused), with what came of its firings
CREATE TABLE IF NOT EXISTS nbq_schedule(name TEXT PRIMARY KEY, spec TEXT NOT NULL,
  fn TEXT NOT NULL, args BLOB, refs TEXT, needs TEXT, options TEXT NOT NULL,
  created REAL NOT NULL, paused INTEGER NOT NULL DEFAULT 0, next REAL, last REAL,
  last_job TEXT, fired INTEGER NOT NULL DEFAULT 0, missed INTEGER NOT NULL DEFAULT 0,
  skipped INTEGER NOT NULL DEFAULT 0, note TEXT, note_at REAL);
CREATE INDEX IF NOT EXISTS nbq_schedule_due ON nbq_schedule(next) WHERE next IS NOT NULL;
-- pauses (pauses.py): the whole queue (name '') or the jobs of a name claim nothing new
CREATE TABLE IF NOT EXISTS nbq_pause(name TEXT PRIMARY KEY, since REAL NOT NULL) WITHOUT ROWID;
-- rate limits (rates.py): at most n jobs holding the resource start per `per` seconds; the
-- times of its last n starts are a ring in nbq_rate (slot: the start's number mod n; seq
-- counts them), wake is when a start frees while jobs wait for one
CREATE TABLE IF NOT EXISTS nbq_rate_limit(resource TEXT PRIMARY KEY, n INTEGER NOT NULL,
  per REAL NOT NULL, seq INTEGER NOT NULL DEFAULT 0, wake REAL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nbq_rate_wake ON nbq_rate_limit(wake) WHERE wake IS NOT NULL;
CREATE TABLE IF NOT EXISTS nbq_rate(resource TEXT NOT NULL, slot INTEGER NOT NULL,
  at REAL NOT NULL, PRIMARY KEY(resource, slot)) WITHOUT ROWID;
"""


# columns added after format 1 was first written: (table, column, declaration)
ADDED_COLUMNS = (
    ("nbq_job", "why", "TEXT"),  # what ended the attempt before this one (shown as the reason it runs again)
    ("nbq_job", "log_before", "TEXT"),  # the output of earlier attempts, each after a header line
    # arguments of ARGS_APART bytes or more: the key of their write-once diskcache value
    # (then args is NULL); logs moved to nbq_log at the same time (log, log_before: read
    # for the jobs of a queue an older nbqueue wrote, never written)
    ("nbq_job", "args_ref", "TEXT"),
    # what a waiting job waits for, as facts (a waits.Blocker as JSON, read only while it
    # waits), with its reason '': the sentence is made when read, in the reader's local
    # time. The rows an older nbqueue wrote have none, and their reason as it was written
    ("nbq_job", "wait", "TEXT"),
    # the firing a schedule's note speaks of: the note names it AT (recurrence.py), put
    # in when read, in the reader's local time (notes an older nbqueue wrote have a clock)
    ("nbq_schedule", "note_at", "REAL"),
    # events besides endings (review, reminder, drained; NULL: an ending) and their time
    ("nbq_outbox", "event", "TEXT"),
    ("nbq_outbox", "at", "REAL"),
    # a notifier's failed deliveries in a row, and when the next try is due (backoff)
    ("nbq_output", "failures", "INTEGER NOT NULL DEFAULT 0"),
    ("nbq_output", "retry_at", "REAL"),
    # the events an output receives, comma-separated ('*': all); outputs registered
    # before it receive endings only, as they did
    ("nbq_output", "events", "TEXT NOT NULL DEFAULT 'ended'"),
)


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""


def install(sql: Any) -> None:
    """Create or upgrade the queue's tables and its meta and count rows (idempotent);
    ``sql`` executes a statement inside the caller's transaction."""
    from .. import job as J

    for statement in _statements(SCHEMA):
        sql(statement)
    for table, column, declaration in ADDED_COLUMNS:  # a queue an older nbqueue made
        if column not in {r[1] for r in sql(f"PRAGMA table_info({table})")}:
            sql(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    sql("INSERT OR IGNORE INTO nbq_meta VALUES ('format', ?)", (FORMAT,))
    sql("INSERT OR IGNORE INTO nbq_meta VALUES ('created', ?)", (time.time(),))
    sql("INSERT OR IGNORE INTO nbq_meta VALUES ('seq', 0)")
    # 1: the last drain was recorded (or no work came yet); a transaction that makes a
    # job ready or running sets it to 0 (gates.py)
    sql("INSERT OR IGNORE INTO nbq_meta VALUES ('drained', 1)")
    # bits of the controls in use, read by every claim (controls.py)
    sql("INSERT OR IGNORE INTO nbq_meta VALUES ('controls', 0)")
    # names this queue in notifications (the idempotency key of a webhook)
    sql("INSERT OR IGNORE INTO nbq_meta VALUES ('id', ?)", (secrets.token_hex(8),))
    sql("INSERT OR IGNORE INTO nbq_count VALUES (':changes', 0)")
    for state in J.STATES:
        sql("INSERT OR IGNORE INTO nbq_count VALUES (?, 0)", (state,))


def is_current(sql: Any) -> bool:
    """Whether every table, index and column of this nbqueue's schema exists (read only): a queue
    an older nbqueue wrote is upgraded by a writer before it is read."""
    tables = {name for name, in sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)) <= tables:
        return False
    # the indexes too: reads name them (INDEXED BY), and a newer nbqueue may add some
    indexes = {name for name, in sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
    if not set(re.findall(r"CREATE (?:UNIQUE )?INDEX IF NOT EXISTS (\w+)", SCHEMA)) <= indexes:
        return False
    return all(column in {r[1] for r in sql(f"PRAGMA table_info({table})")}
               for table, column, _ in ADDED_COLUMNS)
