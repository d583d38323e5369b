-- Orchestration queue statements. Each "-- name:" line starts one statement; %(x)s are
-- query parameters. %(key)s / %(keys)s are instance keys (SHA-256 of the id, see
-- 0001_initial.sql), always passed alongside the ids they belong to.
--
-- Table names are unqualified: every pooled connection is given the tenant schema as
-- its search_path once, when it is opened, so the statements are the same for every
-- schema (the provider only puts a comment naming the schema in front of each).
--
-- Every call of the provider is one statement, run in its own implicit transaction:
-- one round trip. Checks that must fail a call (a lease no longer held) are CTEs that
-- every write depends on, so a failed check writes nothing, and the statement reports
-- what it found.
--
-- Clock: statement_timestamp() (stable, so usable with indexes) for visibility scans,
-- clock_timestamp() for lease arithmetic. Both read the database server's clock.
--
-- Lock-only statements (fetch, lock_instance, renew, abandon) call
-- set_config('synchronous_commit', 'off', true) once per returned row: their commit
-- then does not wait for the WAL flush, since a lease lost in a server crash only
-- means the work is fetched again. The setting is transaction-local and returns to
-- the session default at commit; it matters only when rows were written, and a
-- statement that wrote rows always returns at least one.

-- fragment: new_record
-- inst, in the two statements that create an instance: its record, unless the id is
-- taken (then no row).
    INSERT INTO instances
        (ikey, instance_id, name, version, state, execution_id, custom_status,
         parent_instance_id)
    VALUES (%(key)s, %(instance_id)s, %(name)s, %(version)s, 'PENDING', %(execution_id)s,
            %(custom_status)s, %(parent_instance_id)s)
    ON CONFLICT (ikey) DO NOTHING
    RETURNING ikey, instance_id, created_at, updated_at

-- name: create_instance
-- Record, lock row and start message in one statement (one implicit transaction).
-- Returns one row when the id was free, none when it was taken.
WITH inst AS (
-- include: new_record
), lock_row AS (
    INSERT INTO instance_locks (ikey, instance_id)
    SELECT ikey, instance_id FROM inst
    ON CONFLICT (ikey) DO NOTHING
), msg AS (
    INSERT INTO orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
    SELECT ikey, instance_id, %(payload)s,
           coalesce(to_timestamp(%(due_at)s::float8), statement_timestamp()), %(due_at)s::float8
    FROM inst
)
SELECT count(pg_notify(%(channel)s, %(note)s)) FROM inst

-- name: create_instance_leased
-- create_instance for a fetch parked in this provider (long polling), leasing the new
-- instance to it in the same statement, as fetch_orchestrations would: lock row leased
-- with %(token)s for %(lock_timeout)s seconds (an existing lock row only if free, as a
-- fetch finds it), the start message delivered under that token, attempt 1. Only for a
-- start that is visible at once. Returns no row when the id was taken, else one: the
-- token (NULL when an existing lock row was held: nothing was leased, and the start
-- was announced as create_instance does), the message id, and the record's created_at
-- and updated_at.
WITH inst AS (
-- include: new_record
), lock_row AS (
    INSERT INTO instance_locks AS l (ikey, instance_id, lock_token, locked_until, has_record)
    SELECT ikey, instance_id, %(token)s,
           clock_timestamp() + make_interval(secs => %(lock_timeout)s), true
    FROM inst
    ON CONFLICT (ikey) DO UPDATE
    SET lock_token = excluded.lock_token, locked_until = excluded.locked_until,
        has_record = true
    WHERE l.locked_until IS NULL OR l.locked_until <= statement_timestamp()
    RETURNING l.lock_token
), msg AS (
    INSERT INTO orchestrator_queue
        (ikey, instance_id, payload, visible_at, due_at, lock_token, attempts)
    SELECT i.ikey, i.instance_id, %(payload)s, statement_timestamp(), NULL, lr.lock_token,
           CASE WHEN lr.lock_token IS NULL THEN 0 ELSE 1 END
    FROM inst AS i LEFT JOIN lock_row AS lr ON true
    RETURNING id, lock_token
)
SELECT m.lock_token, m.id, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8,
       (SELECT count(pg_notify(%(channel)s, %(note)s)) FROM msg WHERE msg.lock_token IS NULL)
FROM inst AS i, msg AS m

-- name: enqueue_existing
-- A message for an instance that must have a record. FOR KEY SHARE keeps a concurrent
-- delete from removing the record between the check and the insert.
WITH inst AS (
    SELECT ikey, instance_id FROM instances
    WHERE ikey = %(key)s
    FOR KEY SHARE
), lock_row AS (
    -- (see lock_rows in turn_writes)
    INSERT INTO instance_locks (ikey, instance_id)
    SELECT ikey, instance_id FROM inst
    WHERE NOT EXISTS (SELECT 1 FROM instance_locks AS l WHERE l.ikey = inst.ikey)
    ON CONFLICT (ikey) DO NOTHING
), msg AS (
    INSERT INTO orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
    SELECT ikey, instance_id, %(payload)s,
           coalesce(to_timestamp(%(due_at)s::float8), statement_timestamp()), %(due_at)s::float8
    FROM inst
)
SELECT count(pg_notify(%(channel)s, %(note)s)) FROM inst

-- name: fetch_orchestrations
-- Claim, lease and deliver in one statement.
-- cand: instances with a visible message and no live lease or cool-down, oldest visible
--   message first, row-locked. Lock rows claimed by a concurrent fetch are skipped, not
--   waited for. An instance appears once per visible message, so a few rows are
--   scanned per wanted instance.
-- picked: the first %(limit)s distinct instances, each with a fresh token.
-- delivered: their visible messages, marked with the token (the ack deletes exactly
--   these). A message that a concurrent ack consumed after this statement's snapshot
--   is skipped by the UPDATE.
-- leased: the lease, only on instances that got a message (the others were emptied by
--   a concurrent turn; they stay free). has_record: whether the ack may write the
--   record and history.
-- One row per delivered message (plus one per picked instance that got none, with
-- NULL token), with the instance record alongside, ordered by oldest visible message
-- then message id.
-- Part skip (a worker that leaves some orchestrations to others, see ExcludedWork):
-- cand leaves out instances whose record names an orchestration in %(skip_names)s, or
-- a (name, version) pair of %(skip_pair_names)s and %(skip_pair_versions)s; messages
-- for ids without a record are never left out. Without it (the common case) the
-- statement has no such check at all.
WITH cand AS (
    SELECT l.ikey, q.visible_at, q.id
    FROM orchestrator_queue AS q
    JOIN instance_locks AS l ON l.ikey = q.ikey
    WHERE q.visible_at <= statement_timestamp()
      AND (l.locked_until IS NULL OR l.locked_until <= statement_timestamp())
-- if: skip
      AND NOT EXISTS (
          SELECT 1 FROM instances AS i
          WHERE i.ikey = q.ikey
            AND (i.name = ANY(%(skip_names)s::text[])
                 OR EXISTS (SELECT 1
                            FROM unnest(%(skip_pair_names)s::text[],
                                        %(skip_pair_versions)s::text[]) AS s(name, version)
                            WHERE s.name = i.name AND s.version = i.version)))
-- end
    ORDER BY q.visible_at, q.id
    LIMIT %(scan)s
    FOR UPDATE OF l SKIP LOCKED
), picked AS (
    SELECT f.ikey, f.visible_at, f.id, gen_random_uuid()::text AS token
    FROM (SELECT DISTINCT ON (c.ikey) c.ikey, c.visible_at, c.id FROM cand AS c
          ORDER BY c.ikey, c.visible_at, c.id) AS f
    ORDER BY f.visible_at, f.id
    LIMIT %(limit)s
), delivered AS (
    UPDATE orchestrator_queue AS q
    SET lock_token = p.token, attempts = q.attempts + 1
    FROM picked AS p
    WHERE q.ikey = p.ikey AND q.visible_at <= statement_timestamp()
    RETURNING q.ikey, q.id, q.payload, q.due_at, q.attempts
), leased AS (
    UPDATE instance_locks AS l
    SET lock_token = p.token,
        locked_until = clock_timestamp() + make_interval(secs => %(lock_timeout)s),
        has_record = EXISTS (SELECT 1 FROM instances AS i WHERE i.ikey = l.ikey)
    FROM picked AS p
    WHERE l.ikey = p.ikey AND p.ikey IN (SELECT d.ikey FROM delivered AS d)
    RETURNING l.ikey, l.instance_id, l.lock_token
)
SELECT p.ikey, lk.instance_id, lk.lock_token, d.id, d.payload, d.due_at, d.attempts,
       i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id),
       i.custom_status_version, i.kv_base IS NOT NULL,
       set_config('synchronous_commit', 'off', true)
FROM picked AS p
LEFT JOIN leased AS lk ON lk.ikey = p.ikey
LEFT JOIN delivered AS d ON d.ikey = lk.ikey
LEFT JOIN instances AS i ON i.ikey = lk.ikey
ORDER BY p.visible_at, p.id, d.id

-- name: lock_instance
-- One given instance, if it has a record and no live lease or cool-down: lease it even
-- without a visible message, and deliver the visible ones. Rows as fetch_orchestrations
-- (one per message, or one with NULL message columns); none when refused.
WITH picked AS (
    SELECT l.ikey, gen_random_uuid()::text AS token
    FROM instance_locks AS l
    WHERE l.ikey = %(key)s
      AND (l.locked_until IS NULL OR l.locked_until <= statement_timestamp())
      AND EXISTS (SELECT 1 FROM instances AS i WHERE i.ikey = l.ikey)
    FOR UPDATE OF l SKIP LOCKED
), delivered AS (
    UPDATE orchestrator_queue AS q
    SET lock_token = p.token, attempts = q.attempts + 1
    FROM picked AS p
    WHERE q.ikey = p.ikey AND q.visible_at <= statement_timestamp()
    RETURNING q.ikey, q.id, q.payload, q.due_at, q.attempts
), leased AS (
    UPDATE instance_locks AS l
    SET lock_token = p.token,
        locked_until = clock_timestamp() + make_interval(secs => %(lock_timeout)s),
        has_record = true
    FROM picked AS p
    WHERE l.ikey = p.ikey
    RETURNING l.ikey, l.instance_id, l.lock_token
)
SELECT lk.ikey, lk.instance_id, lk.lock_token, d.id, d.payload, d.due_at, d.attempts,
       i.instance_id, i.name, i.version, i.state, i.execution_id, i.output, i.error,
       i.custom_status, extract(epoch FROM i.created_at)::float8,
       extract(epoch FROM i.updated_at)::float8, i.parent_instance_id,
       (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
        WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id),
       i.custom_status_version, i.kv_base IS NOT NULL,
       set_config('synchronous_commit', 'off', true)
FROM leased AS lk
LEFT JOIN delivered AS d ON d.ikey = lk.ikey
LEFT JOIN instances AS i ON i.ikey = lk.ikey
ORDER BY d.id

-- fragment: turn_writes
-- The writes of a turn, shared by ack_turn and commit_turn, which each start with
-- CTEs lk, acked, st and ok (and ack_turn's consumed: the messages its lease delivered):
-- lk: the instance's lock row, row-locked (a concurrent renew, abandon or fetch waits);
-- acked: the leases of the activities whose results the turn consumed, row-locked;
-- st: what was found, judged against the clock read after the locks were taken:
--   ikey, instance_id, has_record, alive (the turn may commit), acked_held, acked_alive;
-- ok: one row when the turn may commit. Every write depends on it, so a refused turn
--   writes nothing.
-- Writes happen in one snapshot: none sees another's rows, which the provider accounts
-- for (work the same turn cancels is never inserted). The record and history are
-- written only for an instance that has a record (has_record). A repeated event id
-- violates the history key and fails the statement.
-- works: the first %(claim)s activities are inserted leased to the caller for
-- %(claim_timeout)s seconds, attempt 1, as a fetch would lease them; each with its tag
-- ('' for none), session id and session key (NULL for none).
-- Parts: starts (records for started instances), msgs (messages and their lock rows),
-- works (activities), cancels (cancelled activities), kv (key-value changes: every key
-- removed with kv_clear, those of kv_del_keys removed, kv_set_* written; keys are
-- SHA-256 digests, as instance keys), each compiled in only for a turn that has such rows
-- (see _sql.py). The record takes status_bump (1 when the custom status changed),
-- unread (NULL: unchanged) and, with kv_base_set, kv_base.
-- Returns one row (none when lk found nothing): st's findings; pending, whether messages
-- wait that the turn did not consume (they arrived during the lease; fetches skipped
-- them, so the instance is announced again); the claimed activities (ids, tokens, event
-- ids, in insertion order); the record's created_at, updated_at, parent and history
-- length after the turn (NULL without a record: with the commit's own fields they make
-- the final record of an instance that ends), then the record's custom_status_version
-- and whether it holds a kv_base. Notifications are sent only when the turn committed:
-- the given notes, the terminal one (prefix given when the turn ends the instance) and
-- the updated one (prefix given when the turn changed the custom status or the KV) for
-- an instance with a record, and the pending one.
taken AS (
    DELETE FROM activity_queue AS a
    USING acked, ok
    WHERE a.id = acked.id
), hist AS (
    INSERT INTO history (ikey, execution_id, seq, event_id, payload)
    SELECT ok.ikey, %(execution_id)s, b.next + t.n - 1, t.event_id, t.payload
    FROM ok
    CROSS JOIN LATERAL (
        SELECT coalesce(max(h.seq) + 1, 0) AS next FROM history AS h
        WHERE h.ikey = ok.ikey AND h.execution_id = %(execution_id)s) AS b
    CROSS JOIN unnest(%(event_ids)s::int[], %(payloads)s::text[])
        WITH ORDINALITY AS t(event_id, payload, n)
    WHERE ok.has_record
    ORDER BY t.n
), rec AS (
    UPDATE instances AS i
    SET state = %(state)s, name = %(name)s, version = %(version)s,
        execution_id = %(execution_id)s, output = %(output)s, error = %(error)s,
        custom_status = %(custom_status)s, updated_at = clock_timestamp(),
        custom_status_version = i.custom_status_version + %(status_bump)s::int,
        unread = coalesce(%(unread)s::int, i.unread),
        kv_base = CASE WHEN %(kv_base_set)s::boolean THEN %(kv_base)s::text ELSE i.kv_base END
    FROM ok
    WHERE i.ikey = ok.ikey AND ok.has_record
    RETURNING extract(epoch FROM i.created_at)::float8 AS created_at,
              extract(epoch FROM i.updated_at)::float8 AS updated_at,
              i.parent_instance_id,
              (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
               WHERE h.ikey = i.ikey AND h.execution_id = %(execution_id)s)
              + cardinality(%(event_ids)s::int[]) AS history_len,
              i.custom_status_version,
              i.kv_base IS NOT NULL AS kv_base
-- if: kv
), kv_gone AS (
    -- the keys the turn removed (every key with kv_clear), but those it sets again:
    -- one statement may not change a row twice, and kv_put writes those
    DELETE FROM kv AS k
    USING ok
    WHERE k.ikey = ok.ikey AND ok.has_record
      AND (%(kv_clear)s::boolean OR k.kkey = ANY(%(kv_del_keys)s::bytea[]))
      AND NOT (k.kkey = ANY(coalesce(%(kv_set_keys)s::bytea[], ARRAY[]::bytea[])))
), kv_put AS (
    INSERT INTO kv (ikey, kkey, key, value, updated_at)
    SELECT ok.ikey, t.kkey, t.key, t.value, t.updated_at
    FROM ok, unnest(%(kv_set_keys)s::bytea[], %(kv_set_names)s::text[],
                    %(kv_set_values)s::text[], %(kv_set_ats)s::bigint[])
         AS t(kkey, key, value, updated_at)
    WHERE ok.has_record
    ON CONFLICT (ikey, kkey) DO UPDATE
    SET key = excluded.key, value = excluded.value, updated_at = excluded.updated_at
-- end
-- if: starts
), started AS (
    -- records for OrchestrationStarted messages to ids that have none (children,
    -- detached starts); an existing record is left alone
    INSERT INTO instances
        (ikey, instance_id, name, version, state, execution_id, custom_status,
         parent_instance_id)
    SELECT t.ikey, t.instance_id, t.name, t.version, 'PENDING', t.execution_id,
           t.custom_status, t.parent_instance_id
    FROM ok, unnest(%(start_keys)s::bytea[], %(start_ids)s::text[], %(start_names)s::text[],
                    %(start_versions)s::text[], %(start_execs)s::int[],
                    %(start_statuses)s::text[], %(start_parents)s::text[])
         WITH ORDINALITY AS t(ikey, instance_id, name, version, execution_id,
                              custom_status, parent_instance_id, n)
    ORDER BY t.n
    ON CONFLICT (ikey) DO NOTHING
-- end
-- if: msgs
), msgs AS (
    INSERT INTO orchestrator_queue (ikey, instance_id, payload, visible_at, due_at)
    SELECT t.ikey, t.instance_id, t.payload,
           coalesce(to_timestamp(t.due_at), statement_timestamp()), t.due_at
    FROM ok, unnest(%(msg_keys)s::bytea[], %(msg_ids)s::text[], %(msg_payloads)s::text[],
                    %(msg_due_ats)s::float8[])
         WITH ORDINALITY AS t(ikey, instance_id, payload, due_at, n)
    ORDER BY t.n
    RETURNING ikey, instance_id
), lock_rows AS (
    -- lock rows for message targets that never had one. Only where the snapshot shows
    -- none: ON CONFLICT DO NOTHING takes no row lock on an existing row, but its
    -- uniqueness check waits for a transaction updating that row (a turn of the
    -- target, until its commit has flushed), so it is not asked to check a row known
    -- to exist
    INSERT INTO instance_locks (ikey, instance_id)
    SELECT DISTINCT m.ikey, m.instance_id FROM msgs AS m
    WHERE NOT EXISTS (SELECT 1 FROM instance_locks AS l WHERE l.ikey = m.ikey)
    ORDER BY m.ikey
    ON CONFLICT (ikey) DO NOTHING
-- end
-- if: works
), works AS (
    INSERT INTO activity_queue (ikey, instance_id, execution_id, event_id, name, payload,
                                tag, session_id, skey, visible_at, lock_token,
                                locked_until, attempts)
    SELECT w.ikey, w.instance_id, w.execution_id, w.event_id, w.name, w.payload, w.tag,
           w.session_id, w.skey, coalesce(w.until, statement_timestamp()), w.token,
           w.until, CASE WHEN w.token IS NULL THEN 0 ELSE 1 END
    FROM (SELECT t.*, CASE WHEN t.n <= %(claim)s THEN gen_random_uuid()::text END AS token,
                 CASE WHEN t.n <= %(claim)s
                      THEN clock_timestamp() + make_interval(secs => %(claim_timeout)s) END
                     AS until
          FROM ok, unnest(%(work_keys)s::bytea[], %(work_ids)s::text[],
                          %(work_execs)s::int[], %(work_events)s::int[],
                          %(work_names)s::text[], %(work_payloads)s::text[],
                          %(work_tags)s::text[], %(work_sessions)s::text[],
                          %(work_skeys)s::bytea[])
               WITH ORDINALITY AS t(ikey, instance_id, execution_id, event_id, name,
                                    payload, tag, session_id, skey, n)
          ORDER BY t.n) AS w
    RETURNING id, lock_token, event_id
-- end
-- if: cancels
), cancelled AS (
    DELETE FROM activity_queue AS a
    USING ok, unnest(%(cancel_keys)s::bytea[], %(cancel_execs)s::int[],
                     %(cancel_events)s::int[]) AS t(ikey, execution_id, event_id)
    WHERE a.ikey = t.ikey AND a.execution_id = t.execution_id AND a.event_id = t.event_id
-- end
), released AS (
    UPDATE instance_locks AS l
    SET lock_token = NULL, locked_until = NULL
    FROM ok
    WHERE l.ikey = ok.ikey
), pending AS (
    SELECT EXISTS (SELECT 1 FROM orchestrator_queue AS q, ok
                   WHERE q.ikey = ok.ikey AND q.visible_at <= statement_timestamp()
                     AND q.lock_token IS DISTINCT FROM %(token)s) AS waiting
)
SELECT st.instance_id, st.has_record, st.alive, st.acked_held, st.acked_alive,
       pending.waiting, c.ids, c.tokens, c.events,
       r.created_at, r.updated_at, r.parent_instance_id, r.history_len,
       (SELECT count(pg_notify(%(channel)s, n.note))
        FROM ok, unnest(%(notes)s::text[] || ARRAY[
                 CASE WHEN ok.has_record THEN %(terminal_prefix)s::text || ok.instance_id END,
                 CASE WHEN ok.has_record THEN %(updated_prefix)s::text || ok.instance_id END,
                 CASE WHEN pending.waiting THEN %(self_prefix)s::text || ok.instance_id END])
             AS n(note)
        WHERE n.note IS NOT NULL),
       r.custom_status_version, r.kv_base
FROM st, pending,
-- if: works
     LATERAL (SELECT array_agg(w.id ORDER BY w.id) AS ids,
                     array_agg(w.lock_token ORDER BY w.id) AS tokens,
                     array_agg(w.event_id ORDER BY w.id) AS events
              FROM works AS w WHERE w.lock_token IS NOT NULL) AS c
-- end
-- unless: works
     (SELECT NULL::bigint[] AS ids, NULL::text[] AS tokens, NULL::int[] AS events) AS c
-- end
     LEFT JOIN LATERAL (SELECT * FROM rec) AS r ON true

-- name: ack_turn
-- A whole turn under the lease %(token)s, in one statement (see turn_writes). The
-- lease must be live, and so must the lease of every activity whose result the turn
-- consumed; has_record says whether the instance had a record when it was fetched.
WITH lk AS (
    SELECT ikey, instance_id, has_record, locked_until
    FROM instance_locks
    WHERE lock_token = %(token)s
    FOR UPDATE
), acked AS (
    -- one lookup per token (a plain "lock_token = ANY(...)" may be planned, while the
    -- queue is small, as a scan of the whole table, and stay so)
    SELECT a.id, a.locked_until
    FROM unnest(%(acked_tokens)s::text[]) AS t(token)
    JOIN activity_queue AS a ON a.lock_token = t.token
    ORDER BY a.id
    FOR UPDATE OF a
), st AS (
    SELECT lk.ikey, lk.instance_id, lk.has_record,
           lk.locked_until > clock_timestamp() AS alive, a.held AS acked_held,
           a.alive AS acked_alive
    FROM lk, (SELECT count(*) AS held,
                     count(*) FILTER (WHERE acked.locked_until > clock_timestamp()) AS alive
              FROM acked) AS a
), ok AS (
    SELECT st.ikey, st.instance_id, st.has_record FROM st
    WHERE st.alive AND st.acked_held = %(acked_count)s AND st.acked_alive = %(acked_count)s
), consumed AS (
    -- exactly the messages this lease delivered
    DELETE FROM orchestrator_queue AS q
    USING ok
    WHERE q.lock_token = %(token)s
),
-- include: turn_writes

-- name: commit_turn
-- A whole turn for instance %(key)s without a lease (see turn_writes), committed only
-- if nothing happened to the instance since the caller's last turn: it has a record at
-- execution %(execution_id)s with %(expected_len)s events, no live lease or cool-down
-- and no visible message, and its lock row was not changed after this statement's
-- snapshot (compared by xmin: the version read with the row lock, which is the newest,
-- against the one in the snapshot, so a lease taken and released meanwhile, whose
-- writes the snapshot cannot see, refuses the turn too). %(token)s is NULL.
-- Part consume (a timer fired in place): the turn consumed the queued messages whose
-- payloads are %(consume)s (%(consume_count)s of them, distinct). Each must be queued
-- and delivered to no fetch, visible yet or not (the caller's clock found them due);
-- visible messages other than these refuse the turn as above; they are deleted with it.
-- No fetch can deliver them meanwhile: a delivery needs the lock row, held here.
WITH lk AS (
    SELECT l.ikey, l.instance_id, true AS has_record, l.locked_until, l.xmin AS version
    FROM instance_locks AS l
    WHERE l.ikey = %(key)s
    FOR UPDATE
), acked AS (
    -- one lookup per token (a plain "lock_token = ANY(...)" may be planned, while the
    -- queue is small, as a scan of the whole table, and stay so)
    SELECT a.id, a.locked_until
    FROM unnest(%(acked_tokens)s::text[]) AS t(token)
    JOIN activity_queue AS a ON a.lock_token = t.token
    ORDER BY a.id
    FOR UPDATE OF a
), st AS (
    SELECT lk.ikey, lk.instance_id, lk.has_record,
           (lk.locked_until IS NULL OR lk.locked_until <= clock_timestamp())
           AND lk.version = (SELECT l.xmin FROM instance_locks AS l WHERE l.ikey = lk.ikey)
           AND EXISTS (
               SELECT 1 FROM instances AS i
               WHERE i.ikey = lk.ikey AND i.execution_id = %(execution_id)s
                 AND (SELECT coalesce(max(h.seq) + 1, 0) FROM history AS h
                      WHERE h.ikey = i.ikey AND h.execution_id = i.execution_id)
                     = %(expected_len)s)
           AND NOT EXISTS (
               SELECT 1 FROM orchestrator_queue AS q
               WHERE q.ikey = lk.ikey AND q.visible_at <= statement_timestamp()
-- if: consume
                 AND NOT (q.lock_token IS NULL AND q.payload = ANY(%(consume)s::text[]))
-- end
           )
-- if: consume
           AND (SELECT count(*) FROM orchestrator_queue AS q
                WHERE q.ikey = lk.ikey AND q.lock_token IS NULL
                  AND q.payload = ANY(%(consume)s::text[])) = %(consume_count)s
-- end
           AS alive,
           a.held AS acked_held, a.alive AS acked_alive
    FROM lk, (SELECT count(*) AS held,
                     count(*) FILTER (WHERE acked.locked_until > clock_timestamp()) AS alive
              FROM acked) AS a
), ok AS (
    SELECT st.ikey, st.instance_id, st.has_record FROM st
    WHERE st.alive AND st.acked_held = %(acked_count)s AND st.acked_alive = %(acked_count)s
-- if: consume
), consumed AS (
    DELETE FROM orchestrator_queue AS q
    USING ok
    WHERE q.ikey = ok.ikey AND q.lock_token IS NULL
      AND q.payload = ANY(%(consume)s::text[])
-- end
),
-- include: turn_writes

-- name: announce
-- A note for other nodes, sent when a turn learned of news for its instance too late
-- for its own statement to see it (see PostgresProvider._commit_turn).
SELECT pg_notify(%(channel)s, %(note)s)

-- name: abandon_orchestration
-- Release the lease; a positive delay keeps the whole instance out of fetches until
-- it has passed (a cool-down: no token, locked_until in the future). Without a delay
-- the messages are visible again at once: notify. Part undo: the delivery does not
-- count as an attempt (a lease nobody used, or work handed back to a worker that has
-- the code for it).
WITH released AS (
    UPDATE instance_locks
    SET lock_token = NULL,
        locked_until = CASE WHEN %(delay)s::float8 > 0
                            THEN clock_timestamp() + make_interval(secs => %(delay)s::float8)
                       END
    WHERE lock_token = %(token)s AND locked_until > clock_timestamp()
    RETURNING ikey, instance_id
-- if: undo
), undone AS (
    UPDATE orchestrator_queue AS q SET attempts = greatest(q.attempts - 1, 0)
    FROM released AS r
    WHERE q.ikey = r.ikey AND q.lock_token = %(token)s
-- end
)
SELECT r.instance_id,
       (SELECT count(pg_notify(%(channel)s, %(note_prefix)s || x.instance_id))
        FROM (SELECT r.instance_id) AS x
        WHERE %(delay)s::float8 <= 0),
       set_config('synchronous_commit', 'off', true)
FROM released AS r

-- name: renew_orchestration
UPDATE instance_locks
SET locked_until = clock_timestamp() + make_interval(secs => %(lock_timeout)s)
WHERE lock_token = %(token)s AND locked_until > clock_timestamp()
RETURNING set_config('synchronous_commit', 'off', true)
