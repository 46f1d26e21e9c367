-- 0006: signed chain heads.
--
-- The last event of every committed batch carries an Ed25519 signature over
-- `countersign-audit-head:v1:{seq}:{hash}` by the writer's key (`key_id` is the first 16 hex
-- digits of SHA-256 over the raw public key). The key lives outside the database, so whoever
-- can write the database but does not hold the key cannot append, edit or re-hash events
-- without `audit verify` (and every writer, before it appends) seeing an unsigned or badly
-- signed head. Rows without a signature are inner rows of a batch; they are covered by the
-- signature on the batch's last row through the hash chain.
alter table audit_events add column key_id text;
alter table audit_events add column signature text;

-- Who reviewed a break-glass approval afterwards (`approval.reviewed`).
alter table approvals add column reviewed_by text;
