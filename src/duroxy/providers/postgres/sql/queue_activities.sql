-- Activity queue statements. Each "-- name:" line starts one statement; %(x)s are
-- query parameters; %(key)s are instance keys (see 0001_initial.sql). One statement per
-- call, as in queue_orchestrations.sql (which explains the synchronous_commit setting
-- and the unqualified table names).
--
-- Invariant: while a row is leased, visible_at = locked_until, so "visible_at <= now"
-- alone selects the rows a fetch may take (never leased, released, or lease expired).

-- name: fetch_activities
-- Up to %(limit)s rows the fetch's route accepts, visible longest first (in enqueue
-- order among rows that became visible together), as the orchestration queue is
-- claimed. Each part reads one index range in that order and never reaches leased rows,
-- however many there are; rows another fetch is claiming are skipped, not waited for:
-- part plain: untagged work without a session (activity_queue_visible_idx);
-- part tags: the tagged and the session work of each tag in %(tags)s, '' standing for
--   untagged session work (activity_queue_routed_idx, one range per tag);
-- part routed: all tagged and session work, whatever its tag (TagFilter.ANY;
--   activity_queue_routed_time_idx).
-- Rows of the activity names in %(skip_activities)s (NULL: none) are left to other
-- workers. A row with a session is taken only for an owner, %(owner)s (NULL: none): of a
-- session it holds (its lease may have ended: nobody claimed it since), or, with
-- %(new_sessions)s above 0, of a free session (no row, or a lease ended).
-- Part sessions: the free sessions of the rows picked, the first %(new_sessions)s in
-- row order, are claimed for the owner and those it holds renewed, for
-- %(session_lock)s seconds. The upsert sees the newest version of a session row (it
-- waits for a concurrent claim to commit), so a session another fetch claimed meanwhile
-- is not taken: its rows stay in the queue, unleased.
WITH lease AS (
    SELECT clock_timestamp() + make_interval(secs => %(lock_timeout)s) AS until
-- if: plain
), plain AS (
    SELECT q.id, q.visible_at, q.skey, q.session_id
    FROM activity_queue AS q
    WHERE q.tag = '' AND q.skey IS NULL AND q.visible_at <= statement_timestamp()
      AND (%(skip_activities)s::text[] IS NULL
           OR q.name <> ALL(%(skip_activities)s::text[]))
    ORDER BY q.visible_at, q.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
-- end
-- if: tags
), tagged AS (
    SELECT c.id, c.visible_at, c.skey, c.session_id
    FROM unnest(%(tags)s::text[]) AS t(tag)
    CROSS JOIN LATERAL (
        SELECT q.id, q.visible_at, q.skey, q.session_id
        FROM activity_queue AS q
        WHERE (q.tag <> '' OR q.skey IS NOT NULL) AND q.tag = t.tag
          AND q.visible_at <= statement_timestamp()
          AND (%(skip_activities)s::text[] IS NULL
               OR q.name <> ALL(%(skip_activities)s::text[]))
-- include: session_allowed
        ORDER BY q.visible_at, q.id
        LIMIT %(limit)s
        FOR UPDATE OF q SKIP LOCKED) AS c
-- end
-- if: routed
), routed AS (
    SELECT q.id, q.visible_at, q.skey, q.session_id
    FROM activity_queue AS q
    WHERE (q.tag <> '' OR q.skey IS NOT NULL) AND q.visible_at <= statement_timestamp()
      AND (%(skip_activities)s::text[] IS NULL
           OR q.name <> ALL(%(skip_activities)s::text[]))
-- include: session_allowed
    ORDER BY q.visible_at, q.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
-- end
), picked AS (
    SELECT c.id, c.visible_at, c.skey, c.session_id FROM (
        SELECT NULL::bigint AS id, NULL::timestamptz AS visible_at, NULL::bytea AS skey,
               NULL::text AS session_id
        WHERE false
-- if: plain
        UNION ALL SELECT * FROM plain
-- end
-- if: tags
        UNION ALL SELECT * FROM tagged
-- end
-- if: routed
        UNION ALL SELECT * FROM routed
-- end
    ) AS c
    ORDER BY c.visible_at, c.id
    LIMIT %(limit)s
-- if: sessions
), sess AS (
    SELECT p.skey, min(p.session_id) AS session_id, min(p.visible_at) AS first_at,
           min(p.id) AS first_id, coalesce(bool_or(s.owner = %(owner)s), false) AS mine
    FROM picked AS p
    LEFT JOIN sessions AS s ON s.skey = p.skey
    WHERE p.skey IS NOT NULL
    GROUP BY p.skey
), wanted AS (
    SELECT w.skey, w.session_id FROM sess AS w WHERE w.mine
    UNION ALL
    (SELECT w.skey, w.session_id FROM sess AS w WHERE NOT w.mine
     ORDER BY w.first_at, w.first_id
     LIMIT %(new_sessions)s::int)
), claimed AS (
    INSERT INTO sessions AS s (skey, session_id, owner, locked_until)
    SELECT w.skey, w.session_id, %(owner)s,
           clock_timestamp() + make_interval(secs => %(session_lock)s)
    FROM wanted AS w
    ORDER BY w.skey
    ON CONFLICT (skey) DO UPDATE
    SET owner = excluded.owner, locked_until = excluded.locked_until
    WHERE s.owner = excluded.owner OR s.locked_until <= clock_timestamp()
    RETURNING s.skey
-- end
), taken AS (
    SELECT p.id FROM picked AS p
    WHERE p.skey IS NULL
-- if: sessions
       OR p.skey IN (SELECT c.skey FROM claimed AS c)
-- end
)
UPDATE activity_queue AS a
SET lock_token = gen_random_uuid()::text,
    locked_until = lease.until,
    visible_at = lease.until,
    attempts = a.attempts + 1
FROM taken, lease
WHERE a.id = taken.id
RETURNING a.id, a.lock_token, a.payload, a.attempts,
          set_config('synchronous_commit', 'off', true)

-- fragment: session_allowed
-- a row without a session, or, for an owner, one of a session it holds or (while it
-- may claim) of a free one
AND (q.skey IS NULL
     OR (%(owner)s::text IS NOT NULL
         AND coalesce((SELECT s.owner = %(owner)s
                              OR (%(new_sessions)s::int > 0
                                  AND s.locked_until <= clock_timestamp())
                       FROM sessions AS s WHERE s.skey = q.skey),
                      %(new_sessions)s::int > 0)))

-- name: renew_sessions
-- Extend the leases of the sessions of %(keys)s that %(owner)s still holds (returned),
-- and forget the other sessions whose lease ended (a statement may change a row once:
-- those it renews are left to the renewal). Rows are locked in key order, as a fetch's
-- claim locks them, so that the two never wait for each other in a circle.
WITH mine AS (
    SELECT s.skey FROM sessions AS s
    WHERE s.skey = ANY(%(keys)s::bytea[]) AND s.owner = %(owner)s
    ORDER BY s.skey
    FOR UPDATE
), renewed AS (
    UPDATE sessions AS s
    SET locked_until = clock_timestamp() + make_interval(secs => %(lock_timeout)s)
    FROM mine AS m
    WHERE s.skey = m.skey AND s.owner = %(owner)s
    RETURNING s.session_id
), ended AS (
    -- best effort: rows another statement holds are left for the next renewal
    SELECT s.skey FROM sessions AS s
    WHERE s.locked_until <= clock_timestamp()
      AND NOT (s.skey = ANY(%(keys)s::bytea[]) AND s.owner = %(owner)s)
    ORDER BY s.skey
    FOR UPDATE SKIP LOCKED
), forgotten AS (
    DELETE FROM sessions AS s USING ended AS e WHERE s.skey = e.skey
)
SELECT r.session_id, set_config('synchronous_commit', 'off', true) FROM renewed AS r

-- name: release_sessions
-- Free the sessions of %(keys)s (NULL: all) that %(owner)s holds, and announce that
-- their queued work may be taken by any worker (the instance id of the note is empty).
WITH mine AS (
    SELECT s.skey FROM sessions AS s
    WHERE md5(s.owner) = md5(%(owner)s) AND s.owner = %(owner)s
      AND (%(keys)s::bytea[] IS NULL OR s.skey = ANY(%(keys)s::bytea[]))
    ORDER BY s.skey
    FOR UPDATE
), gone AS (
    DELETE FROM sessions AS s
    USING mine AS m
    WHERE s.skey = m.skey AND s.owner = %(owner)s
    RETURNING 1
), counted AS (
    SELECT count(*) AS n FROM gone
)
SELECT c.n,
       (SELECT count(pg_notify(%(channel)s, %(note)s)) WHERE c.n > 0),
       set_config('synchronous_commit', 'off', true)
FROM counted AS c

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
      -- (see lock_rows in queue_orchestrations.sql: no wait for the instance's turn)
      AND NOT EXISTS (SELECT 1 FROM instance_locks AS l WHERE l.ikey = %(key)s)
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
