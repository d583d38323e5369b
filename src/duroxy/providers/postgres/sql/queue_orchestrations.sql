-- Orchestration queue statements. Each "-- name:" line starts one statement;
-- {schema} is the quoted tenant schema, %(x)s are query parameters. %(key)s / %(keys)s
-- are instance keys (SHA-256 of the id, see 0001_initial.sql), always passed alongside
-- the ids they belong to.
--
-- Clock: statement_timestamp() (stable, so usable with indexes) for visibility scans,
-- clock_timestamp() for lease arithmetic. Both read the database server's clock.

-- name: create_instance
-- Record, lock row and start message in one statement (one implicit transaction).
-- Returns one row when the id was free, none when it was taken.
WITH inst AS (
    INSERT INTO {schema}.instances
        (ikey, instance_id, name, version, state, execution_id, custom_status,
         parent_instance_id)
    VALUES (%(key)s, %(instance_id)s, %(name)s, %(version)s, 'PENDING', %(execution_id)s,
            %(custom_status)s, %(parent_instance_id)s)
    ON CONFLICT (ikey) DO NOTHING
    RETURNING ikey, instance_id
), lock_row AS (
    INSERT INTO {schema}.instance_locks (ikey, instance_id)
    SELECT ikey, instance_id FROM inst
    ON CONFLICT (ikey) DO NOTHING
), msg AS (
    INSERT INTO {schema}.orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
    SELECT ikey, instance_id, %(payload)s,
           coalesce(to_timestamp(%(due_at)s::float8), statement_timestamp()), %(due_at)s::float8
    FROM inst
)
SELECT pg_notify(%(channel)s, %(note)s) FROM inst

-- name: enqueue_existing
-- A message for an instance that must have a record. FOR KEY SHARE keeps a concurrent
-- delete from removing the record between the check and the insert.
WITH inst AS (
    SELECT ikey, instance_id FROM {schema}.instances
    WHERE ikey = %(key)s
    FOR KEY SHARE
), lock_row AS (
    INSERT INTO {schema}.instance_locks (ikey, instance_id)
    SELECT ikey, instance_id FROM inst
    ON CONFLICT (ikey) DO NOTHING
), msg AS (
    INSERT INTO {schema}.orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
    SELECT ikey, instance_id, %(payload)s,
           coalesce(to_timestamp(%(due_at)s::float8), statement_timestamp()), %(due_at)s::float8
    FROM inst
)
SELECT pg_notify(%(channel)s, %(note)s) FROM inst

-- name: enqueue_messages
-- Any number of messages, in array order; lock rows for ids that never had one.
-- ON CONFLICT DO NOTHING takes no row lock on an existing lock row, so enqueueing never
-- waits for a turn in progress on the target instance (no lock-order deadlocks).
WITH lock_rows AS (
    INSERT INTO {schema}.instance_locks (ikey, instance_id)
    SELECT DISTINCT t.ikey, t.instance_id
    FROM unnest(%(keys)s::bytea[], %(instance_ids)s::text[]) AS t(ikey, instance_id)
    ORDER BY t.ikey
    ON CONFLICT (ikey) DO NOTHING
)
INSERT INTO {schema}.orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
SELECT t.ikey, t.instance_id, t.payload,
       coalesce(to_timestamp(t.due_at), statement_timestamp()), t.due_at
FROM unnest(%(keys)s::bytea[], %(instance_ids)s::text[], %(payloads)s::text[],
            %(due_ats)s::float8[])
     WITH ORDINALITY AS t(ikey, instance_id, payload, due_at, n)
ORDER BY t.n

-- name: create_started_records
-- Records for OrchestrationStarted messages sent to ids that have none (children,
-- detached starts). An existing record is left alone.
INSERT INTO {schema}.instances
    (ikey, instance_id, name, version, state, execution_id, custom_status,
     parent_instance_id)
SELECT t.ikey, t.instance_id, t.name, t.version, 'PENDING', t.execution_id,
       t.custom_status, t.parent_instance_id
FROM unnest(%(keys)s::bytea[], %(instance_ids)s::text[], %(names)s::text[],
            %(versions)s::text[], %(execution_ids)s::int[], %(custom_statuses)s::text[],
            %(parent_instance_ids)s::text[])
     WITH ORDINALITY AS t(ikey, instance_id, name, version, execution_id, custom_status,
                          parent_instance_id, n)
ORDER BY t.n
ON CONFLICT (ikey) DO NOTHING

-- name: notify
SELECT pg_notify(%(channel)s, note) FROM unnest(%(notes)s::text[]) AS t(note)

-- name: claim_instances
-- Instances with a visible message and no live lease or cool-down, oldest visible
-- message first. Lock rows claimed by a concurrent fetch are skipped, not waited for,
-- and do not count towards the limit. An instance with several visible messages appears
-- once per message; the caller keeps the first occurrence.
SELECT l.ikey, l.instance_id
FROM {schema}.orchestrator_queue AS q
JOIN {schema}.instance_locks AS l ON l.ikey = q.ikey
WHERE q.visible_at <= statement_timestamp()
  AND (l.locked_until IS NULL OR l.locked_until <= statement_timestamp())
ORDER BY q.visible_at, q.id
LIMIT %(scan)s
FOR UPDATE OF l SKIP LOCKED

-- name: claim_instance
-- One given instance, if it has a record and no live lease or cool-down (lock_instance).
SELECT l.ikey, l.instance_id
FROM {schema}.instance_locks AS l
WHERE l.ikey = %(key)s
  AND (l.locked_until IS NULL OR l.locked_until <= statement_timestamp())
  AND EXISTS (SELECT 1 FROM {schema}.instances AS i WHERE i.ikey = l.ikey)
FOR UPDATE OF l SKIP LOCKED

-- name: lock_and_deliver
-- Lease the claimed instances (one token each) and mark their visible messages as
-- delivered under that token. Returns the delivered messages.
WITH locked AS (
    UPDATE {schema}.instance_locks AS l
    SET lock_token = t.token,
        locked_until = clock_timestamp() + make_interval(secs => %(lock_timeout)s),
        has_record = EXISTS (SELECT 1 FROM {schema}.instances AS i WHERE i.ikey = l.ikey)
    FROM unnest(%(keys)s::bytea[], %(tokens)s::text[]) AS t(ikey, token)
    WHERE l.ikey = t.ikey
    RETURNING l.ikey, l.lock_token
)
UPDATE {schema}.orchestrator_queue AS q
SET lock_token = locked.lock_token, attempts = q.attempts + 1
FROM locked
WHERE q.ikey = locked.ikey AND q.visible_at <= statement_timestamp()
RETURNING q.ikey, q.id, q.payload, q.due_at, q.attempts

-- name: release_locks
UPDATE {schema}.instance_locks
SET lock_token = NULL, locked_until = NULL
WHERE ikey = ANY(%(keys)s::bytea[])

-- name: check_orchestration_lock
-- Row-locks the lease, so a concurrent renew, abandon or fetch waits for this
-- transaction; the expiry is judged after the row lock is taken.
SELECT ikey, instance_id, locked_until > clock_timestamp(), has_record
FROM {schema}.instance_locks
WHERE lock_token = %(token)s
FOR UPDATE

-- name: append_history
-- seq continues after the execution's last event, in array order.
INSERT INTO {schema}.history (ikey, execution_id, seq, event_id, payload)
SELECT %(key)s, %(execution_id)s,
       coalesce((SELECT max(seq) + 1 FROM {schema}.history
                 WHERE ikey = %(key)s AND execution_id = %(execution_id)s), 0)
       + t.n - 1,
       t.event_id, t.payload
FROM unnest(%(event_ids)s::int[], %(payloads)s::text[]) WITH ORDINALITY AS t(event_id, payload, n)

-- name: update_instance
UPDATE {schema}.instances
SET state = %(state)s, name = %(name)s, version = %(version)s,
    execution_id = %(execution_id)s, output = %(output)s, error = %(error)s,
    custom_status = %(custom_status)s, updated_at = clock_timestamp()
WHERE ikey = %(key)s

-- name: finish_turn
-- Consume exactly the messages this lock delivered and release the lease.
WITH released AS (
    UPDATE {schema}.instance_locks
    SET lock_token = NULL, locked_until = NULL
    WHERE ikey = %(key)s
)
DELETE FROM {schema}.orchestrator_queue WHERE lock_token = %(token)s

-- name: abandon_orchestration
-- Release the lease; a positive delay keeps the whole instance out of fetches until
-- it has passed (a cool-down: no token, locked_until in the future).
UPDATE {schema}.instance_locks
SET lock_token = NULL,
    locked_until = CASE WHEN %(delay)s::float8 > 0
                        THEN clock_timestamp() + make_interval(secs => %(delay)s::float8)
                   END
WHERE lock_token = %(token)s AND locked_until > clock_timestamp()
RETURNING instance_id

-- name: renew_orchestration
UPDATE {schema}.instance_locks
SET locked_until = clock_timestamp() + make_interval(secs => %(lock_timeout)s)
WHERE lock_token = %(token)s AND locked_until > clock_timestamp()
RETURNING ikey
