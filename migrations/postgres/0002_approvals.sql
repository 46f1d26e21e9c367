-- 0002: approvals and their votes.
--
-- An approval is one request for human consent to one exact call (agent, server, tool, SHA-256
-- of the canonical arguments, policy version). Its status moves only from 'pending' to one of
-- 'approved', 'denied', 'expired', 'cancelled', by compare-and-set updates. Times are Unix
-- milliseconds. The audit log (0001) is the record of truth; these tables are working state.
create table approvals (
    id               text primary key,          -- UUID v7
    call_id          text not null,             -- the call that opened it
    agent            text not null,
    on_behalf_of     text,
    server           text not null,
    tool             text not null,
    args_sha256      text not null,
    arguments        text not null,             -- JSON, redacted as the policy says
    policy_version   text not null,
    rule             text not null,
    spec             text not null,             -- JSON: approvers, groups, quorum, self-approval, redact, ...
    status           text not null default 'pending'
                     check (status in ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    created_at       bigint not null,
    expires_at       bigint not null,
    decided_at       bigint,
    decided_by       text,
    reason           text,
    break_glass      bigint not null default 0,
    consumed_by      text,                      -- the call id that used the grant (single use)
    revision         bigint not null default 0  -- bumped by every vote: serialises voters
);

-- A retry of the same call joins the pending approval: looked up by the exact-call key.
create index approvals_pending_key on approvals (agent, server, tool, args_sha256, policy_version, status);
create index approvals_status on approvals (status, expires_at);
-- Waiters learn of decisions made by other processes from this, twice a second.
create index approvals_decided on approvals (decided_at);

create table approval_votes (
    approval_id  text not null references approvals (id),
    approver     text not null,
    approve      bigint not null,             -- 1 approve, 0 deny
    reason       text,
    source       text not null,                -- cli, http, mattermost, ...
    at           bigint not null,
    primary key (approval_id, approver)        -- one vote per approver: double clicks collide here
);
