-- Activity routing: the tag and the session of each queued activity, and who holds
-- each activity session.
--
-- tag: '' for untagged work (a tag is 1 to 256 bytes, so '' is nobody's tag), else the
-- tag; session_id: NULL for work without a session. Rows queued before this migration
-- have neither.
ALTER TABLE activity_queue ADD COLUMN tag TEXT NOT NULL DEFAULT '';
ALTER TABLE activity_queue ADD COLUMN session_id TEXT;

-- A fetch claims through one of these index ranges per kind of work it takes, never by
-- reading rows it may not take:
-- activity_queue_visible: untagged work without a session, in visibility order (the
--   index of migration 1, now holding those rows only: plain work keeps one index, as
--   before);
-- activity_queue_routed: the other rows (tagged, or with a session) by tag, then
--   visibility: one range per tag a worker accepts ('' for untagged session work);
-- activity_queue_routed_time: the same rows in visibility order alone, for a worker
--   that accepts every tag.
-- Index entries carry the rowid, so each serves ORDER BY visible_at, id.
DROP INDEX activity_queue_visible;
CREATE INDEX activity_queue_visible ON activity_queue (visible_at)
    WHERE tag = '' AND session_id IS NULL;
CREATE INDEX activity_queue_routed ON activity_queue (tag, visible_at)
    WHERE tag <> '' OR session_id IS NOT NULL;
CREATE INDEX activity_queue_routed_time ON activity_queue (visible_at)
    WHERE tag <> '' OR session_id IS NOT NULL;

-- Activity sessions: who holds each, until when (epoch seconds, provider clock). A
-- session without a row, or whose locked_until has passed, is free: the next fetch
-- that takes one of its activities claims it. Rows whose lease ended are removed by
-- any runtime's session renewal (sessions_by_expiry).
CREATE TABLE sessions (
    session_id   TEXT NOT NULL PRIMARY KEY,
    owner        TEXT NOT NULL,
    locked_until REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_owner ON sessions (owner);
CREATE INDEX sessions_by_expiry ON sessions (locked_until);
