-- The audit log: one append-only, hash-chained table (see src/audit/mod.rs).
--
-- `seq` is assigned by the writer, gap-free from 1. `at` is RFC 3339 UTC with exactly six
-- fractional digits (`2026-01-02T03:04:05.123456Z`), so text order is time order and it is
-- non-decreasing in `seq`. `payload` is the RFC 8785 (JCS) canonical JSON of the event's
-- payload. `agent`, `server`, `tool`, `approver`, `outcome` are copies of the payload's
-- top-level string fields of the same names, kept as columns only so that filtered queries
-- use an index; `verify` checks that they match the payload.
--
-- INTEGER PRIMARY KEY makes `seq` the rowid: the table is stored in chain order.
CREATE TABLE audit_events (
    seq       INTEGER PRIMARY KEY CHECK (seq > 0),
    id        TEXT    NOT NULL UNIQUE,
    call_id   TEXT,
    kind      TEXT    NOT NULL,
    at        TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    agent     TEXT,
    server    TEXT,
    tool      TEXT,
    approver  TEXT,
    outcome   TEXT,
    payload   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL CHECK (length(prev_hash) = 64),
    hash      TEXT    NOT NULL CHECK (length(hash) = 64)
);

-- Filters end in `ORDER BY seq`; each index carries seq so the order comes from the index.
CREATE INDEX audit_events_call_id  ON audit_events (call_id, seq)  WHERE call_id  IS NOT NULL;
CREATE INDEX audit_events_kind     ON audit_events (kind, seq);
CREATE INDEX audit_events_at       ON audit_events (at);
CREATE INDEX audit_events_actor    ON audit_events (actor, seq);
CREATE INDEX audit_events_agent    ON audit_events (agent, seq)    WHERE agent    IS NOT NULL;
CREATE INDEX audit_events_server   ON audit_events (server, seq)   WHERE server   IS NOT NULL;
CREATE INDEX audit_events_tool     ON audit_events (tool, seq)     WHERE tool     IS NOT NULL;
CREATE INDEX audit_events_approver ON audit_events (approver, seq) WHERE approver IS NOT NULL;
CREATE INDEX audit_events_outcome  ON audit_events (outcome, seq)  WHERE outcome  IS NOT NULL;

-- Append-only: the database itself refuses to change or remove an event. (SQLite has no
-- roles; a user with write access to the file can drop these triggers. `countersign audit
-- verify` catches what such a user then changes.)
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE is refused');
END;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only: DELETE is refused');
END;
