-- The audit log: one append-only, hash-chained table (see src/audit/mod.rs).
--
-- `seq` is assigned by the writer, gap-free from 1, under a transaction-scoped advisory lock
-- so that several gateways never fork the chain. `at` is RFC 3339 UTC text with exactly six
-- fractional digits (`2026-01-02T03:04:05.123456Z`), the same bytes as on SQLite, so text
-- order is time order. `payload` is the RFC 8785 (JCS) canonical JSON of the event's payload,
-- stored as TEXT (not JSONB, which would reorder and re-space it). `agent`, `server`, `tool`,
-- `approver`, `outcome` are copies of the payload's top-level string fields of the same
-- names, kept only so that filtered queries use an index; `verify` checks they match.
CREATE TABLE audit_events (
    seq       BIGINT PRIMARY KEY CHECK (seq > 0),
    id        TEXT   NOT NULL UNIQUE,
    call_id   TEXT,
    kind      TEXT   NOT NULL,
    at        TEXT   NOT NULL,
    actor     TEXT   NOT NULL,
    agent     TEXT,
    server    TEXT,
    tool      TEXT,
    approver  TEXT,
    outcome   TEXT,
    payload   TEXT   NOT NULL,
    prev_hash TEXT   NOT NULL CHECK (length(prev_hash) = 64),
    hash      TEXT   NOT NULL CHECK (length(hash) = 64)
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

-- Append-only: the database itself refuses to change or remove an event, whoever asks.
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- Privileges: nobody but the owner gets more than INSERT and SELECT. When the operator has
-- created the role `countersign_gateway` (see migrations/README.md), it gets exactly those.
REVOKE ALL ON audit_events FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'countersign_gateway') THEN
        REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM countersign_gateway;
        GRANT SELECT, INSERT ON audit_events TO countersign_gateway;
    END IF;
END;
$$;
