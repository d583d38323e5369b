-- Worker heartbeats, and the activity name as a column of the activity queue.
--
-- One row per runtime (keyed by worker_id), written when it starts, every heartbeat
-- interval and when it stops. Times are epoch seconds on the runtime's clock (REAL);
-- orchestrations and activities are JSON arrays of "name@version" and of names.
-- worker_node_id, tag_filter and sessions_owned describe activity routing.
CREATE TABLE workers (
    worker_id                 TEXT    NOT NULL PRIMARY KEY,
    worker_node_id            TEXT,
    host                      TEXT    NOT NULL,
    pid                       INTEGER NOT NULL,
    duroxy_version            TEXT    NOT NULL,
    started_at                REAL    NOT NULL,
    last_seen_at              REAL    NOT NULL,
    stopped_at                REAL,
    heartbeat_interval        REAL    NOT NULL,
    orchestration_concurrency INTEGER NOT NULL,
    activity_concurrency      INTEGER NOT NULL,
    tag_filter                TEXT    NOT NULL,
    sessions_owned            INTEGER NOT NULL DEFAULT 0,
    active_activities         INTEGER NOT NULL DEFAULT 0,
    orchestrations            TEXT    NOT NULL DEFAULT '[]',
    activities                TEXT    NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
-- Rows not seen for a day are removed by any runtime's heartbeat.
CREATE INDEX workers_by_last_seen ON workers (last_seen_at);

-- The activity's name, so that a fetch can leave the activities of some names to
-- other workers without decoding payloads. Rows queued before this migration get it
-- from their payload; '' (no activity has that name) where the payload is not JSON.
ALTER TABLE activity_queue ADD COLUMN name TEXT NOT NULL DEFAULT '';
UPDATE activity_queue
SET name = coalesce(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.name') END, '');
