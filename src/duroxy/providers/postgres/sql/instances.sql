-- Reads and management. Each "-- name:" line starts one statement; %(x)s are query
-- parameters; %(key)s / %(keys)s are instance keys (see 0001_initial.sql). Table names
-- are unqualified: every pooled connection has the tenant schema as its search_path.
-- Instance rows are always returned with the same columns, in this order:
--   instance_id, name, version, state, execution_id, output, error, custom_status,
--   created_at, updated_at (epoch seconds, database clock), parent_instance_id,
--   history_len (events stored for the current execution: seq counts 0, 1, 2 ... within
--   an execution, so the highest seq + 1 is the count, found at the end of the index)

-- name: get_instance
-- One key, not an array of them: a prepared statement with "= ANY(array)" is planned
-- anew on every execution, because the generic plan's guess at the array's length makes
-- it look dearer than a plan for the one key actually given.
SELECT i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id)
FROM instances AS i
WHERE i.ikey = %(key)s

-- name: list_instances
-- A NULL filter matches everything. md5() finds candidates by index; the full value
-- is compared too.
SELECT i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id)
FROM instances AS i
WHERE (%(states)s::text[] IS NULL OR i.state = ANY(%(states)s::text[]))
  AND (%(name)s::text IS NULL
       OR (md5(i.name) = md5(%(name)s::text) AND i.name = %(name)s::text))
  AND (%(parent)s::text IS NULL
       OR (md5(i.parent_instance_id) = md5(%(parent)s::text)
           AND i.parent_instance_id = %(parent)s::text))
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

-- name: list_executions
SELECT DISTINCT execution_id FROM history
WHERE ikey = %(key)s
ORDER BY execution_id

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
)
DELETE FROM instances WHERE ikey = ANY(%(keys)s::bytea[])
