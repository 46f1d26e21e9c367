-- 0004: working state of the Matrix, Slack and webhook chat backends.
--
-- Where each approval's card was posted (to edit it with the outcome and reply under it), how
-- far the Matrix /sync loop has read (so a restart resumes where it stopped), and the Matrix
-- events already handled (so a replayed event is never counted twice). Times are Unix
-- milliseconds. The audit log (0001) is the record of truth; these tables are working state.
create table chat_cards (
    backend      text not null,                 -- 'matrix' or 'slack'
    approval_id  text not null,
    channel      text not null,                 -- Matrix room id, Slack channel id
    message_id   text not null,                 -- Matrix event id, Slack message ts
    created_at   bigint not null,
    primary key (backend, approval_id)
);
create index chat_cards_by_message on chat_cards (backend, message_id);

create table chat_matrix_sync (
    account      text primary key,              -- the bot's Matrix user id
    next_batch   text not null,
    updated_at   bigint not null
);

create table chat_matrix_handled (
    event_key    text primary key,              -- an event id, or 'receipt:<event>:<user>'
    handled_at   bigint not null
);
