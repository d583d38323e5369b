-- Reads and management. Each "-- name:" line starts one statement;
-- {schema} is the quoted tenant schema, %(x)s are query parameters; %(key)s / %(keys)s
-- are instance keys (see 0001_initial.sql).
-- Instance rows are always returned with the same columns, in this order:
--   instance_id, name, version, state, execution_id, output, error, custom_status,
--   created_at, updated_at (epoch seconds, database clock), parent_instance_id,
--   history_len (events stored for the current execution)

-- name: get_instances
SELECT i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT count(*) FROM {schema}.history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id)
FROM {schema}.instances AS i
WHERE i.ikey = ANY(%(keys)s::bytea[])

-- name: list_instances
-- A NULL filter matches everything. md5() finds candidates by index; the full value
-- is compared too.
SELECT i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT count(*) FROM {schema}.history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id)
FROM {schema}.instances AS i
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
SELECT payload FROM {schema}.history
WHERE ikey = %(key)s
  AND execution_id = coalesce(%(execution_id)s::int,
                              (SELECT max(execution_id) FROM {schema}.history
                               WHERE ikey = %(key)s))
ORDER BY seq

-- name: list_executions
SELECT DISTINCT execution_id FROM {schema}.history
WHERE ikey = %(key)s
ORDER BY execution_id

-- name: instance_tree
-- The instance and, with cascade, every descendant through parent links. UNION (not
-- UNION ALL) stops the walk on cycles.
WITH RECURSIVE tree(ikey, instance_id) AS (
    SELECT ikey, instance_id FROM {schema}.instances WHERE ikey = %(key)s
    UNION
    SELECT c.ikey, c.instance_id
    FROM {schema}.instances AS c
    JOIN tree ON md5(c.parent_instance_id) = md5(tree.instance_id)
             AND c.parent_instance_id = tree.instance_id
    WHERE %(cascade)s
)
SELECT ikey FROM tree

-- name: purge_candidates
-- Oldest updated first, so a limit removes the oldest. FOR UPDATE re-checks the
-- filters against rows a concurrent turn changes meanwhile.
SELECT ikey FROM {schema}.instances
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
    DELETE FROM {schema}.history WHERE ikey = ANY(%(keys)s::bytea[])
), q AS (
    DELETE FROM {schema}.orchestrator_queue WHERE ikey = ANY(%(keys)s::bytea[])
), a AS (
    DELETE FROM {schema}.activity_queue WHERE ikey = ANY(%(keys)s::bytea[])
), l AS (
    DELETE FROM {schema}.instance_locks WHERE ikey = ANY(%(keys)s::bytea[])
)
DELETE FROM {schema}.instances WHERE ikey = ANY(%(keys)s::bytea[])

-- name: corrupt_history
UPDATE {schema}.history SET payload = %(garbage)s WHERE ikey = %(key)s

-- name: corrupt_messages
UPDATE {schema}.orchestrator_queue SET payload = %(garbage)s WHERE ikey = %(key)s
