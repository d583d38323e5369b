-- Activity queue statements. Each "-- name:" line starts one statement;
-- {schema} is the quoted tenant schema, %(x)s are query parameters; %(keys)s are
-- instance keys (see 0001_initial.sql).
--
-- Invariant: while a row is leased, visible_at = locked_until, so "visible_at <= now"
-- alone selects the rows a fetch may take (never leased, released, or lease expired).

-- name: enqueue_activities
INSERT INTO {schema}.activity_queue
    (ikey, instance_id, execution_id, event_id, payload, visible_at)
SELECT t.ikey, t.instance_id, t.execution_id, t.event_id, t.payload, statement_timestamp()
FROM unnest(%(keys)s::bytea[], %(instance_ids)s::text[], %(execution_ids)s::int[],
            %(event_ids)s::int[], %(payloads)s::text[])
     WITH ORDINALITY AS t(ikey, instance_id, execution_id, event_id, payload, n)
ORDER BY t.n

-- name: cancel_activities
DELETE FROM {schema}.activity_queue AS a
USING unnest(%(keys)s::bytea[], %(execution_ids)s::int[], %(event_ids)s::int[])
      AS t(ikey, execution_id, event_id)
WHERE a.ikey = t.ikey AND a.execution_id = t.execution_id AND a.event_id = t.event_id

-- name: fetch_activities
-- Oldest visible rows first; rows another fetch is claiming are skipped, not waited for.
WITH picked AS (
    SELECT id FROM {schema}.activity_queue
    WHERE visible_at <= statement_timestamp()
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), lease AS (
    SELECT clock_timestamp() + make_interval(secs => %(lock_timeout)s) AS until
)
UPDATE {schema}.activity_queue AS a
SET lock_token = gen_random_uuid()::text,
    locked_until = lease.until,
    visible_at = lease.until,
    attempts = a.attempts + 1
FROM picked, lease
WHERE a.id = picked.id
RETURNING a.id, a.lock_token, a.payload, a.attempts

-- name: check_activity_lock
SELECT id, instance_id, locked_until > clock_timestamp()
FROM {schema}.activity_queue
WHERE lock_token = %(token)s
FOR UPDATE

-- name: check_activity_locks
-- The rows of several leases at once (a turn that consumed activity results directly).
SELECT id, locked_until > clock_timestamp()
FROM {schema}.activity_queue
WHERE lock_token = ANY(%(tokens)s::text[])
ORDER BY id
FOR UPDATE

-- name: delete_activity
DELETE FROM {schema}.activity_queue WHERE id = %(id)s

-- name: delete_activities
DELETE FROM {schema}.activity_queue WHERE id = ANY(%(ids)s::bigint[])

-- name: renew_activity
WITH lease AS (
    SELECT clock_timestamp() + make_interval(secs => %(lock_timeout)s) AS until
)
UPDATE {schema}.activity_queue AS a
SET locked_until = lease.until, visible_at = lease.until
FROM lease
WHERE a.lock_token = %(token)s AND a.locked_until > clock_timestamp()
RETURNING a.id

-- name: abandon_activity
UPDATE {schema}.activity_queue
SET lock_token = NULL, locked_until = NULL,
    visible_at = clock_timestamp() + make_interval(secs => greatest(%(delay)s::float8, 0))
WHERE lock_token = %(token)s AND locked_until > clock_timestamp()
RETURNING instance_id
