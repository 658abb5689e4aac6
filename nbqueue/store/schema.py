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

import sqlite3
from collections.abc import Iterator

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
  why TEXT, log_before TEXT);
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
-- top-level jobs (the panel pages these); parent makes it covering for counts
CREATE INDEX IF NOT EXISTS nbq_job_top ON nbq_job(state, seq, parent) WHERE parent IS NULL;
-- children by state (top-level ones are in nbq_job_top): each job is in one of the
-- two, so a change of state writes one index, not two
DROP INDEX IF EXISTS nbq_job_state;
CREATE INDEX IF NOT EXISTS nbq_job_kids ON nbq_job(state, seq) WHERE parent IS NOT NULL;
CREATE INDEX IF NOT EXISTS nbq_job_name ON nbq_job(name, seq);
CREATE TABLE IF NOT EXISTS nbq_need(need TEXT NOT NULL, job TEXT NOT NULL, soft INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY(need, job)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS nbq_count(state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
DROP TRIGGER IF EXISTS nbq_count_ins;
DROP TRIGGER IF EXISTS nbq_count_upd;
CREATE TRIGGER IF NOT EXISTS nbq_count_del AFTER DELETE ON nbq_job BEGIN
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
  spec TEXT NOT NULL, cursor INTEGER NOT NULL, created REAL NOT NULL, delivered REAL, error TEXT);
CREATE TABLE IF NOT EXISTS nbq_outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL,
  name TEXT, kind TEXT, state TEXT NOT NULL, reason TEXT, error TEXT, attempt INTEGER,
  parent TEXT, created REAL, started REAL, ended REAL);
"""


# columns added after format 1 was first written: (table, column, declaration)
ADDED_COLUMNS = (
    ("nbq_job", "why", "TEXT"),  # what ended the attempt before this one (shown as the reason it runs again)
    ("nbq_job", "log_before", "TEXT"),  # the output of earlier attempts, each after a header line
)


def _statements(script: str) -> Iterator[str]:
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
