-- Worker heartbeats (see 0002_workers.sql). Each "-- name:" line starts one statement;
-- %(x)s are query parameters; %(key)s is a worker key (SHA-256 of the worker id). Both
-- run once per heartbeat interval or listing: they are never prepared.

-- name: record_heartbeat
-- Insert or replace a worker's row; first, given %(forget_before)s, delete the rows of
-- other workers last seen before then. A stopped row is not revived by a late heartbeat
-- of the same runtime (same started_at). A background write: its commit does not wait
-- for the WAL flush (a heartbeat lost in a server crash only makes its worker look
-- silent until the next one).
WITH forgotten AS (
    DELETE FROM workers
    WHERE last_seen_at < %(forget_before)s::float8 AND wkey <> %(key)s
)
INSERT INTO workers AS w
    (wkey, worker_id, worker_node_id, host, pid, duroxy_version, started_at, last_seen_at,
     stopped_at, heartbeat_interval, orchestration_concurrency, activity_concurrency,
     tag_filter, sessions_owned, active_activities, orchestrations, activities)
VALUES (%(key)s, %(worker_id)s, %(worker_node_id)s::text, %(host)s, %(pid)s,
        %(duroxy_version)s, %(started_at)s::float8, %(last_seen_at)s::float8,
        %(stopped_at)s::float8, %(heartbeat_interval)s::float8,
        %(orchestration_concurrency)s, %(activity_concurrency)s, %(tag_filter)s,
        %(sessions_owned)s, %(active_activities)s, %(orchestrations)s::text[],
        %(activities)s::text[])
ON CONFLICT (wkey) DO UPDATE
SET worker_id = excluded.worker_id, worker_node_id = excluded.worker_node_id,
    host = excluded.host, pid = excluded.pid, duroxy_version = excluded.duroxy_version,
    started_at = excluded.started_at, last_seen_at = excluded.last_seen_at,
    stopped_at = excluded.stopped_at, heartbeat_interval = excluded.heartbeat_interval,
    orchestration_concurrency = excluded.orchestration_concurrency,
    activity_concurrency = excluded.activity_concurrency, tag_filter = excluded.tag_filter,
    sessions_owned = excluded.sessions_owned, active_activities = excluded.active_activities,
    orchestrations = excluded.orchestrations, activities = excluded.activities
WHERE w.stopped_at IS NULL OR w.started_at <> excluded.started_at
RETURNING set_config('synchronous_commit', 'off', true)

-- name: list_workers
SELECT worker_id, worker_node_id, host, pid, duroxy_version, started_at, last_seen_at,
       stopped_at, heartbeat_interval, orchestration_concurrency, activity_concurrency,
       tag_filter, sessions_owned, active_activities, orchestrations, activities
FROM workers
WHERE %(all)s::boolean OR stopped_at IS NULL
ORDER BY started_at, worker_id
