-- duroxy PostgreSQL store, migration 2: worker heartbeats, and the activity name as a
-- column of the activity queue.
--
-- One row per runtime, written when it starts, every heartbeat interval and when it
-- stops. Keyed by wkey, the SHA-256 of worker_id (ids may be longer than a B-tree
-- entry allows, as instance ids). Times are epoch seconds on the runtime's clock, as
-- the runtime gave them (double precision: returned exactly). worker_node_id,
-- tag_filter and sessions_owned describe activity routing.
CREATE TABLE {schema}.workers (
    wkey                      bytea            PRIMARY KEY,
    worker_id                 text             NOT NULL,
    worker_node_id            text,
    host                      text             NOT NULL,
    pid                       bigint           NOT NULL,
    duroxy_version            text             NOT NULL,
    started_at                double precision NOT NULL,
    last_seen_at              double precision NOT NULL,
    stopped_at                double precision,
    heartbeat_interval        double precision NOT NULL,
    orchestration_concurrency bigint           NOT NULL,
    activity_concurrency      bigint           NOT NULL,
    tag_filter                text             NOT NULL,
    sessions_owned            bigint           NOT NULL DEFAULT 0,
    active_activities         bigint           NOT NULL DEFAULT 0,
    orchestrations            text[]           NOT NULL DEFAULT ARRAY[]::text[],
    activities                text[]           NOT NULL DEFAULT ARRAY[]::text[]
);
-- Rows not seen for a day are removed by any runtime's heartbeat.
CREATE INDEX workers_last_seen_idx ON {schema}.workers (last_seen_at);

-- The activity's name, so that a fetch can leave the activities of some names to
-- other workers without decoding payloads. Rows queued before this migration get it
-- from their payload; '' (no activity has that name) where the payload is not JSON,
-- which only tampering produces.
ALTER TABLE {schema}.activity_queue ADD COLUMN name text NOT NULL DEFAULT '';
DO $$
DECLARE
    r record;
BEGIN
    UPDATE {schema}.activity_queue SET name = coalesce(payload::json ->> 'name', '');
EXCEPTION WHEN others THEN
    FOR r IN SELECT id, payload FROM {schema}.activity_queue LOOP
        BEGIN
            UPDATE {schema}.activity_queue SET name = coalesce(r.payload::json ->> 'name', '')
            WHERE id = r.id;
        EXCEPTION WHEN others THEN
            NULL;  -- not JSON: left ''
        END;
    END LOOP;
END
$$;
