-- 0003: the Mattermost backend's working state.
--
-- A card is the post that asks for one approval (one per approval). Each rendering of a card
-- that still has buttons carries fresh per-button tokens; only their SHA-256 is stored, and a
-- click spends its token (compare-and-set on used_at). Times are Unix milliseconds.
create table mattermost_cards (
    approval_id  text primary key,
    post_id      text not null,
    channel_id   text not null,
    created_at   bigint not null
);
create index mattermost_cards_post on mattermost_cards (post_id);

create table mattermost_tokens (
    token_sha256 text primary key,             -- hex SHA-256 of the token in the button's context
    approval_id  text not null,
    decision     text not null check (decision in ('approve', 'deny')),
    expires_at   bigint not null,
    used_at      bigint,
    used_by      text,                         -- the Mattermost user id that spent it
    trigger_id   text                          -- the click's raw trigger_id (evidence for a later dialog)
);
create index mattermost_tokens_approval on mattermost_tokens (approval_id);
