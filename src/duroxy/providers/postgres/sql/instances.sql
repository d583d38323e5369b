-- Reads and management. Each "-- name:" line starts one statement; %(x)s are query
-- parameters; %(key)s / %(keys)s are instance keys (see 0001_initial.sql). Table names
-- are unqualified: every pooled connection has the tenant schema as its search_path.
-- Instance rows are always returned with the same columns, in this order:
--   instance_id, name, version, state, execution_id, output, error, custom_status,
--   created_at, updated_at (epoch seconds, database clock), parent_instance_id,
--   history_len (events stored for the current execution: seq counts 0, 1, 2 ... within
--   an execution, so the highest seq + 1 is the count, found at the end of the index),
--   custom_status_version, and whether the record holds a kv_base

-- name: get_instance
-- One key, not an array of them: a prepared statement with "= ANY(array)" is planned
-- anew on every execution, because the generic plan's guess at the array's length makes
-- it look dearer than a plan for the one key actually given.
SELECT i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id),
       i.custom_status_version, i.kv_base IS NOT NULL
FROM instances AS i
WHERE i.ikey = %(key)s

-- name: list_instances
-- A NULL filter matches everything (a NULL limit: no limit). md5() finds candidates by
-- index; the full value is compared too. Times are passed as timestamptz (exact to the
-- microsecond, as stored); after_ts/after_id, a record's created_at and id, start the
-- list past that record (keyset paging).
SELECT i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id),
       i.custom_status_version, i.kv_base IS NOT NULL
FROM instances AS i
WHERE (%(states)s::text[] IS NULL OR i.state = ANY(%(states)s::text[]))
  AND (%(name)s::text IS NULL
       OR (md5(i.name) = md5(%(name)s::text) AND i.name = %(name)s::text))
  AND (%(parent)s::text IS NULL
       OR (md5(i.parent_instance_id) = md5(%(parent)s::text)
           AND i.parent_instance_id = %(parent)s::text))
  AND (%(created_after)s::timestamptz IS NULL OR i.created_at > %(created_after)s::timestamptz)
  AND (%(created_before)s::timestamptz IS NULL
       OR i.created_at < %(created_before)s::timestamptz)
  AND (%(after_ts)s::timestamptz IS NULL
       OR (i.created_at, i.instance_id) > (%(after_ts)s::timestamptz, %(after_id)s::text))
ORDER BY i.created_at, i.instance_id
LIMIT %(limit)s OFFSET %(offset)s

-- name: read_history
-- Without an execution id: the highest execution that has history.
SELECT payload FROM history
WHERE ikey = %(key)s
  AND execution_id = coalesce(%(execution_id)s::int,
                              (SELECT max(execution_id) FROM history
                               WHERE ikey = %(key)s))
ORDER BY seq

-- name: pending_work
-- What the store holds now, and when its next work falls due (epoch seconds, database
-- clock): leases held (instances in a turn; a cool-down after an abandon with a delay
-- has no token) and activities running; the earliest time a queued message (its
-- visibility or its instance's cool-down, whichever is later; a message not yet visible
-- for an instance that ended is left out) or an activity not held can be handed out,
-- counting only the activities of the tags given: every tag with %(all)s, else untagged
-- ones with %(default)s, every tagged one with %(any)s, and those in %(tags)s.
SELECT (SELECT count(*) FROM instance_locks
        WHERE lock_token IS NOT NULL AND locked_until > clock_timestamp())
     + (SELECT count(*) FROM activity_queue
        WHERE lock_token IS NOT NULL AND locked_until > clock_timestamp()),
       extract(epoch FROM least(
           (SELECT min(greatest(q.visible_at,
                                CASE WHEN l.lock_token IS NULL THEN l.locked_until END))
            FROM orchestrator_queue AS q
            LEFT JOIN instance_locks AS l ON l.ikey = q.ikey
            LEFT JOIN instances AS i ON i.ikey = q.ikey
            WHERE q.visible_at <= clock_timestamp() OR i.state IS NULL
               OR i.state NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')),
           (SELECT min(visible_at) FROM activity_queue
            WHERE (lock_token IS NULL OR locked_until <= clock_timestamp())
              AND (%(all)s::boolean OR (tag = '' AND %(default)s::boolean)
                   OR (tag <> '' AND (%(any)s::boolean
                                      OR tag = ANY(%(tags)s::text[])))))))::float8

-- name: list_executions
SELECT DISTINCT execution_id FROM history
WHERE ikey = %(key)s
ORDER BY execution_id

-- name: execution_bounds
-- The events stored for one execution: how many, and the first and last (by seq).
SELECT (SELECT count(*) FROM history WHERE ikey = %(key)s AND execution_id = %(execution_id)s),
       (SELECT payload FROM history WHERE ikey = %(key)s AND execution_id = %(execution_id)s
        ORDER BY seq LIMIT 1),
       (SELECT payload FROM history WHERE ikey = %(key)s AND execution_id = %(execution_id)s
        ORDER BY seq DESC LIMIT 1)

-- name: prune_executions
-- Past executions of one instance and their history, deleted in one statement: every
-- execution before the record's current one but the %(keep)s newest of them, and with
-- %(ended_before)s only those whose last event's ts (epoch ms) is earlier (read from the
-- event's wire form, which starts {"v":..,"k":..,"id":..,"ts":..; an event stored in
-- another form counts as not ended). FOR UPDATE of the record keeps a concurrent turn
-- from moving the current execution meanwhile. One row per deleted execution with its
-- event count; no row for an unknown instance.
WITH inst AS (
    SELECT ikey, execution_id FROM instances WHERE ikey = %(key)s FOR UPDATE
), past AS (
    SELECT h.execution_id, count(*) AS events, max(h.seq) AS last_seq
    FROM history AS h, inst
    WHERE h.ikey = inst.ikey AND h.execution_id < inst.execution_id
    GROUP BY h.execution_id
), ranked AS (
    SELECT p.*, row_number() OVER (ORDER BY p.execution_id DESC) AS newest
    FROM past AS p
), doomed AS (
    SELECT r.execution_id, r.events FROM ranked AS r
    WHERE r.newest > %(keep)s
      AND (%(ended_before)s::bigint IS NULL OR EXISTS (
          SELECT 1 FROM history AS l, inst
          WHERE l.ikey = inst.ikey AND l.execution_id = r.execution_id
            AND l.seq = r.last_seq
            AND substring(l.payload FROM '^\{"v":[0-9]+,"k":"\w+","id":-?[0-9]+,"ts":(-?[0-9]+)[,}]')::bigint
                < %(ended_before)s::bigint))
), gone AS (
    DELETE FROM history AS h
    USING doomed AS d, inst
    WHERE h.ikey = inst.ikey AND h.execution_id = d.execution_id
)
SELECT NULL::int, NULL::bigint FROM inst
UNION ALL
SELECT d.execution_id, d.events FROM doomed AS d

-- name: instance_stats
-- One row (none for an unknown instance): the unread count, the current execution's
-- events and their UTF-8 size, events and queue messages queued (by the kind inside
-- their payload), KV keys and value bytes, executions stored.
SELECT i.unread,
       (SELECT count(*) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id),
       (SELECT coalesce(sum(octet_length(h.payload)), 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id),
       (SELECT count(*) FROM orchestrator_queue AS q
        WHERE q.ikey = i.ikey
          AND (strpos(q.payload, '"k":"EventRaised"') > 0
               OR strpos(q.payload, '"k":"QueueEventDelivered"') > 0)),
       (SELECT count(*) FROM kv WHERE kv.ikey = i.ikey),
       (SELECT coalesce(sum(octet_length(kv.value)), 0) FROM kv WHERE kv.ikey = i.ikey),
       (SELECT count(DISTINCT h.execution_id) FROM history AS h WHERE h.ikey = i.ikey)
FROM instances AS i
WHERE i.ikey = %(key)s

-- name: kv_read
-- The instance's KV (one key when %(kkey)s is given), sorted by key in code point
-- order; the first row tells whether the instance has a record (NULL key: no KV row).
SELECT NULL::text, NULL::text, NULL::bigint FROM instances WHERE ikey = %(key)s
UNION ALL
(SELECT k.key, k.value, k.updated_at FROM kv AS k
 WHERE k.ikey = %(key)s AND (%(kkey)s::bytea IS NULL OR k.kkey = %(kkey)s::bytea)
 ORDER BY k.key COLLATE "C")

-- name: kv_base
SELECT kv_base FROM instances WHERE ikey = %(key)s

-- name: instance_tree
-- The instance and, with cascade, every descendant through parent links. UNION (not
-- UNION ALL) stops the walk on cycles.
WITH RECURSIVE tree(ikey, instance_id) AS (
    SELECT ikey, instance_id FROM instances WHERE ikey = %(key)s
    UNION
    SELECT c.ikey, c.instance_id
    FROM instances AS c
    JOIN tree ON md5(c.parent_instance_id) = md5(tree.instance_id)
             AND c.parent_instance_id = tree.instance_id
    WHERE %(cascade)s
)
SELECT ikey FROM tree

-- name: purge_candidates
-- Oldest updated first, so a limit removes the oldest. FOR UPDATE re-checks the
-- filters against rows a concurrent turn changes meanwhile.
SELECT ikey FROM instances
WHERE state = ANY(%(states)s::text[])
  AND (%(before)s::float8 IS NULL OR updated_at < to_timestamp(%(before)s::float8))
  AND (%(name)s::text IS NULL OR (md5(name) = md5(%(name)s::text) AND name = %(name)s::text))
ORDER BY updated_at, instance_id
LIMIT %(limit)s
FOR UPDATE

-- name: delete_instances
-- Everything stored for the given keys, including the orchestration lock, so a turn in
-- flight for a deleted instance fails its ack with LockLost. Returns deleted records.
WITH h AS (
    DELETE FROM history WHERE ikey = ANY(%(keys)s::bytea[])
), q AS (
    DELETE FROM orchestrator_queue WHERE ikey = ANY(%(keys)s::bytea[])
), a AS (
    DELETE FROM activity_queue WHERE ikey = ANY(%(keys)s::bytea[])
), l AS (
    DELETE FROM instance_locks WHERE ikey = ANY(%(keys)s::bytea[])
), k AS (
    DELETE FROM kv WHERE ikey = ANY(%(keys)s::bytea[])
)
DELETE FROM instances WHERE ikey = ANY(%(keys)s::bytea[])

-- name: delete_instances_counted
-- delete_instances, answering what went: instance records, executions and events of
-- history, queued messages and activity rows (one row).
WITH h AS (
    DELETE FROM history WHERE ikey = ANY(%(keys)s::bytea[])
    RETURNING ikey, execution_id
), q AS (
    DELETE FROM orchestrator_queue WHERE ikey = ANY(%(keys)s::bytea[]) RETURNING 1
), a AS (
    DELETE FROM activity_queue WHERE ikey = ANY(%(keys)s::bytea[]) RETURNING 1
), l AS (
    DELETE FROM instance_locks WHERE ikey = ANY(%(keys)s::bytea[])
), k AS (
    DELETE FROM kv WHERE ikey = ANY(%(keys)s::bytea[])
), i AS (
    DELETE FROM instances WHERE ikey = ANY(%(keys)s::bytea[]) RETURNING 1
)
SELECT (SELECT count(*) FROM i),
       (SELECT count(DISTINCT (ikey, execution_id)) FROM h),
       (SELECT count(*) FROM h),
       (SELECT count(*) FROM q) + (SELECT count(*) FROM a)

-- name: wake
-- Nothing: a round trip that wakes the server (and this host) a moment before a due
-- time after an idle spell (see _waking.py).
SELECT 1
