-- Activity queue statements. Each "-- name:" line starts one statement; %(x)s are
-- query parameters; %(key)s are instance keys (see 0001_initial.sql). One statement per
-- call, as in queue_orchestrations.sql (which explains the synchronous_commit setting
-- and the unqualified table names).
--
-- Invariant: while a row is leased, visible_at = locked_until, so "visible_at <= now"
-- alone selects the rows a fetch may take (never leased, released, or lease expired).

-- name: fetch_activities
-- The rows visible longest first (in enqueue order among rows that became visible
-- together), as the orchestration queue is claimed: the (visible_at, id) index yields
-- them in that order and never reaches the leased rows, however many there are. Rows
-- another fetch is claiming are skipped, not waited for. Part skip: rows of the
-- activity names in %(skip_activities)s are left to other workers (the same scan, the
-- name checked on each row).
WITH picked AS (
    SELECT id FROM activity_queue
    WHERE visible_at <= statement_timestamp()
-- if: skip
      AND name <> ALL(%(skip_activities)s::text[])
-- end
    ORDER BY visible_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), lease AS (
    SELECT clock_timestamp() + make_interval(secs => %(lock_timeout)s) AS until
)
UPDATE activity_queue AS a
SET lock_token = gen_random_uuid()::text,
    locked_until = lease.until,
    visible_at = lease.until,
    attempts = a.attempts + 1
FROM picked, lease
WHERE a.id = picked.id
RETURNING a.id, a.lock_token, a.payload, a.attempts,
          set_config('synchronous_commit', 'off', true)

-- name: ack_activity
-- Delete the work row and enqueue its completion, if the lease is held. The row is
-- locked first and its expiry judged after (st), so a concurrent renew or takeover is
-- waited for. Returns one row (none when the token names no row) saying whether the
-- lease was alive; when it was not, nothing was written.
WITH lk AS (
    SELECT id, locked_until
    FROM activity_queue
    WHERE lock_token = %(token)s
    FOR UPDATE
), st AS (
    SELECT lk.id, lk.locked_until > clock_timestamp() AS alive FROM lk
), ok AS (
    SELECT st.id FROM st WHERE st.alive
), taken AS (
    DELETE FROM activity_queue AS a USING ok WHERE a.id = ok.id
), started AS (
    -- a completion is never a start message in practice; kept for the general contract
    INSERT INTO instances
        (ikey, instance_id, name, version, state, execution_id, custom_status,
         parent_instance_id)
    SELECT %(key)s, %(instance_id)s, %(start_name)s, %(start_version)s, 'PENDING',
           %(start_execution_id)s, %(start_custom_status)s, %(start_parent)s
    WHERE %(start_name)s::text IS NOT NULL AND EXISTS (SELECT 1 FROM ok)
    ON CONFLICT (ikey) DO NOTHING
), lock_row AS (
    INSERT INTO instance_locks (ikey, instance_id)
    SELECT %(key)s, %(instance_id)s
    WHERE EXISTS (SELECT 1 FROM ok)
    ON CONFLICT (ikey) DO NOTHING
), msg AS (
    INSERT INTO orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
    SELECT %(key)s, %(instance_id)s, %(payload)s,
           coalesce(to_timestamp(%(due_at)s::float8), statement_timestamp()), %(due_at)s::float8
    WHERE EXISTS (SELECT 1 FROM ok)
)
SELECT st.alive,
       (SELECT count(pg_notify(%(channel)s, %(note)s)) FROM ok)
FROM st

-- name: renew_activity
WITH lease AS (
    SELECT clock_timestamp() + make_interval(secs => %(lock_timeout)s) AS until
)
UPDATE activity_queue AS a
SET locked_until = lease.until, visible_at = lease.until
FROM lease
WHERE a.lock_token = %(token)s AND a.locked_until > clock_timestamp()
RETURNING set_config('synchronous_commit', 'off', true)

-- name: abandon_activity
-- Without a delay the row is visible again at once: notify. Part undo: the fetch that
-- delivered the row does not count as an attempt.
WITH released AS (
    UPDATE activity_queue
    SET lock_token = NULL, locked_until = NULL,
-- if: undo
        attempts = greatest(attempts - 1, 0),
-- end
        visible_at = clock_timestamp() + make_interval(secs => greatest(%(delay)s::float8, 0))
    WHERE lock_token = %(token)s AND locked_until > clock_timestamp()
    RETURNING instance_id
)
SELECT r.instance_id,
       (SELECT count(pg_notify(%(channel)s, %(note_prefix)s || x.instance_id))
        FROM (SELECT r.instance_id) AS x
        WHERE %(delay)s::float8 <= 0),
       set_config('synchronous_commit', 'off', true)
FROM released AS r
