-- duroxy PostgreSQL store, migration 4: activity routing. The tag and the session of
-- each queued activity, and who holds each activity session.
--
-- tag: '' for untagged work (a tag is 1 to 256 bytes, so '' is nobody's tag), else the
-- tag; session_id: NULL for work without a session; skey: the SHA-256 of the session
-- id's UTF-8 bytes (computed by the provider; session ids may be 1,024 characters, more
-- than a B-tree entry holds, as instance ids). Rows queued before this migration have
-- neither tag nor session.
ALTER TABLE {schema}.activity_queue
    ADD COLUMN tag        text  NOT NULL DEFAULT '',
    ADD COLUMN session_id text,
    ADD COLUMN skey       bytea;

-- A fetch claims through one of these index ranges per kind of work it takes, never by
-- reading rows it may not take:
-- activity_queue_visible_idx: untagged work without a session, in visibility order (the
--   index of migration 1, now holding those rows only: plain work keeps one index, as
--   before);
-- activity_queue_routed_idx: the other rows (tagged, or with a session) by tag, then
--   visibility: one range per tag a worker accepts ('' for untagged session work);
-- activity_queue_routed_time_idx: the same rows in visibility order alone, for a worker
--   that accepts every tag.
DROP INDEX {schema}.activity_queue_visible_idx;
CREATE INDEX activity_queue_visible_idx ON {schema}.activity_queue (visible_at, id)
    WHERE tag = '' AND skey IS NULL;
CREATE INDEX activity_queue_routed_idx ON {schema}.activity_queue (tag, visible_at, id)
    WHERE tag <> '' OR skey IS NOT NULL;
CREATE INDEX activity_queue_routed_time_idx ON {schema}.activity_queue (visible_at, id)
    WHERE tag <> '' OR skey IS NOT NULL;

-- Activity sessions: who holds each (owner: a runtime's worker_node_id, or an id of
-- one runtime's lifetime), until when (database clock). A session without a row, or
-- whose locked_until has passed, is free: the next fetch that takes one of its
-- activities claims it. Rows whose lease ended are removed by any runtime's session
-- renewal (sessions_expiry_idx). Owners may be long: looked up through md5(), the value
-- re-checked.
CREATE TABLE {schema}.sessions (
    skey         bytea       PRIMARY KEY,
    session_id   text        NOT NULL,
    owner        text        NOT NULL,
    locked_until timestamptz NOT NULL
);
CREATE INDEX sessions_owner_idx ON {schema}.sessions (md5(owner));
CREATE INDEX sessions_expiry_idx ON {schema}.sessions (locked_until);
