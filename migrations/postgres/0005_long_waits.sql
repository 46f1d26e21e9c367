-- 0005: task handles for calls that wait for approval (MCP tasks, both eras).
--
-- A task is created durably before the client is told its id. The gateway instance that runs it
-- holds a lease (`owner`, `lease_until`, Unix ms) and renews it; when a lease lapses (the
-- instance died), another instance (or the same one, restarted) takes the task over: a task
-- still waiting for its approval is resumed, a task whose call had been forwarded is recorded
-- as ambiguous and never run again. Terminal tasks are kept for `ttl_ms` after their last update.
create table tasks (
    id              text primary key,       -- UUID v7: the taskId
    call_id         text not null,
    agent           text not null,          -- only this agent may see the task
    era             text not null check (era in ('legacy', 'modern')),
    call            text not null,          -- JSON: what is needed to run the call again
    phase           text not null default 'policy'
                    check (phase in ('policy', 'waiting', 'forwarded', 'done')),
    status          text not null default 'working'
                    check (status in ('working', 'completed', 'failed', 'cancelled')),
    status_message  text,
    approval_id     text,
    result          text,                   -- JSON: the tool result (completed)
    error           text,                   -- JSON: a JSON-RPC error object (failed)
    created_at      bigint not null,
    updated_at      bigint not null,
    ttl_ms          bigint not null,
    poll_ms         bigint not null,
    owner           text,
    lease_until     bigint not null default 0
);

create index tasks_orphans on tasks (status, lease_until);
create index tasks_agent on tasks (agent, created_at);

-- Bookkeeping of background scans over the audit log (e.g. how far the search for calls whose
-- end was never recorded has got), so that each event is looked at once.
create table audit_marks (
    name   text primary key,
    value  bigint not null
);
