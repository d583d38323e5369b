-- Named statements of the SQLite store. Each starts with a "-- name: NAME" line; the
-- statement runs to the next name line. Comment lines are dropped when loading.
-- Statements take plain positional parameters (?, bound to a tuple in the order they
-- appear: the cheapest form) or named ones (:name, bound to a dict). Never numbered
-- ones (?1): Python 3.12 warns when they are bound to a sequence, 3.14 refuses it.

-- ------------------------------------------------------------------ migrations
-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
);

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: record_migration
INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?);

-- name: first_migration
-- The name duroxy's first migration recorded: another application's schema_version
-- table holds some other name (or has no such columns).
SELECT name FROM schema_version WHERE version = 1;

-- ------------------------------------------------------------------ instances
-- Records end with whether the instance holds a kv_base, asked with typeof(): unlike
-- IS NOT NULL, it does not read the (possibly large) value itself.
-- name: get_instance
SELECT instance_id, name, version, state, execution_id, output, error_json, custom_status,
       created_at, updated_at, parent_instance_id, history_len, custom_status_version,
       typeof(kv_base) = 'text'
FROM instances WHERE instance_id = ?;

-- name: instance_exists
SELECT 1 FROM instances WHERE instance_id = ?;

-- name: insert_instance
-- (instance_id, name, version, execution_id, custom_status, created_at, updated_at,
--  parent_instance_id); ON CONFLICT leaves an existing record alone (rowcount 0).
INSERT INTO instances (instance_id, name, version, state, execution_id, custom_status,
                       created_at, updated_at, parent_instance_id, history_len)
VALUES (?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, 0)
ON CONFLICT (instance_id) DO NOTHING;

-- name: update_instance
-- (name, version, state, execution_id, output, error_json, custom_status, updated_at,
--  history_len, 1 when the custom status changed else 0, unread or NULL: unchanged,
--  1 to replace kv_base else 0, the new kv_base, instance_id)
UPDATE instances
SET name = ?, version = ?, state = ?, execution_id = ?, output = ?, error_json = ?,
    custom_status = ?, updated_at = ?, history_len = ?,
    custom_status_version = custom_status_version + ?, unread = coalesce(?, unread),
    kv_base = CASE WHEN ? THEN ? ELSE kv_base END
WHERE instance_id = ?;

-- name: list_instances
-- NULL filters match everything; :after_ts/:after_id (a record's created_at and id, as
-- read) start past that record (keyset paging); :limit -1 is no limit.
SELECT instance_id, name, version, state, execution_id, output, error_json, custom_status,
       created_at, updated_at, parent_instance_id, history_len, custom_status_version,
       typeof(kv_base) = 'text'
FROM instances
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:name IS NULL OR name = :name)
  AND (:parent IS NULL OR parent_instance_id = :parent)
  AND (:created_after IS NULL OR created_at > :created_after)
  AND (:created_before IS NULL OR created_at < :created_before)
  AND (:after_ts IS NULL OR (created_at, instance_id) > (:after_ts, :after_id))
ORDER BY created_at, instance_id
LIMIT :limit OFFSET :offset;

-- name: children
SELECT instance_id FROM instances WHERE parent_instance_id = ?;

-- name: purge_candidates
SELECT instance_id FROM instances
WHERE state IN (SELECT value FROM json_each(:states))
  AND (:before IS NULL OR updated_at < :before)
  AND (:name IS NULL OR name = :name)
ORDER BY updated_at, instance_id
LIMIT :limit;

-- name: delete_instance_row
DELETE FROM instances WHERE instance_id = ?;

-- name: delete_instance_history
DELETE FROM history WHERE instance_id = ?;

-- name: delete_instance_messages
DELETE FROM orchestrator_queue WHERE instance_id = ?;

-- name: delete_instance_activities
DELETE FROM activity_queue WHERE instance_id = ?;

-- name: delete_instance_lock
DELETE FROM instance_locks WHERE instance_id = ?;

-- name: delete_instance_kv
DELETE FROM kv WHERE instance_id = ?;

-- name: history_totals
-- (instance_id): executions and events stored, counted before a delete
SELECT count(DISTINCT execution_id), count(*) FROM history WHERE instance_id = ?;

-- name: instance_stats
-- (instance_id): the current execution's events and their UTF-8 size, the unread count,
-- events and queue messages queued (by the kind inside their payload), KV keys and
-- value bytes, executions stored. No row: no record.
SELECT i.unread,
       (SELECT count(*) FROM history AS h
        WHERE h.instance_id = i.instance_id AND h.execution_id = i.execution_id),
       (SELECT coalesce(sum(length(CAST(h.event_json AS BLOB))), 0) FROM history AS h
        WHERE h.instance_id = i.instance_id AND h.execution_id = i.execution_id),
       (SELECT count(*) FROM orchestrator_queue AS q
        WHERE q.instance_id = i.instance_id
          AND CASE WHEN json_valid(q.payload)
                   THEN json_extract(q.payload, '$.event.k')
                        IN ('EventRaised', 'QueueEventDelivered') ELSE 0 END),
       (SELECT count(*) FROM kv WHERE kv.instance_id = i.instance_id),
       (SELECT coalesce(sum(length(CAST(kv.value AS BLOB))), 0) FROM kv
        WHERE kv.instance_id = i.instance_id),
       (SELECT count(DISTINCT h.execution_id) FROM history AS h
        WHERE h.instance_id = i.instance_id)
FROM instances AS i WHERE i.instance_id = ?;

-- ------------------------------------------------------------------ executions
-- name: execution_bounds
-- (instance_id, execution_id): events stored, the first and the last event id
SELECT count(*), min(event_id), max(event_id) FROM history
WHERE instance_id = ? AND execution_id = ?;

-- name: read_events
-- (instance_id, execution_id, event id, event id)
SELECT event_json FROM history
WHERE instance_id = ? AND execution_id = ? AND event_id IN (?, ?)
ORDER BY event_id;

-- name: current_execution
SELECT execution_id FROM instances WHERE instance_id = ?;

-- name: past_executions
-- (instance_id, current execution id): the executions before it, oldest first, with
-- their event counts and the ts of their last event (NULL when it does not decode)
SELECT h.execution_id, count(*),
       (SELECT CASE WHEN json_valid(l.event_json) THEN json_extract(l.event_json, '$.ts') END
        FROM history AS l
        WHERE l.instance_id = h.instance_id AND l.execution_id = h.execution_id
        ORDER BY l.event_id DESC LIMIT 1)
FROM history AS h
WHERE h.instance_id = ? AND h.execution_id < ?
GROUP BY h.execution_id
ORDER BY h.execution_id;

-- name: delete_execution
DELETE FROM history WHERE instance_id = ? AND execution_id = ?;

-- ------------------------------------------------------------------ key-value state
-- name: kv_all
SELECT key, value, updated_at FROM kv WHERE instance_id = ? ORDER BY key;

-- name: kv_one
SELECT key, value, updated_at FROM kv WHERE instance_id = ? AND key = ?;

-- name: kv_base
SELECT kv_base FROM instances WHERE instance_id = ?;

-- name: kv_clear
DELETE FROM kv WHERE instance_id = ?;

-- name: kv_delete
DELETE FROM kv WHERE instance_id = ? AND key = ?;

-- name: kv_set
-- (instance_id, key, value, updated_at)
INSERT INTO kv (instance_id, key, value, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (instance_id, key) DO UPDATE
SET value = excluded.value, updated_at = excluded.updated_at;

-- ------------------------------------------------------------------ history
-- name: insert_event
INSERT INTO history (instance_id, execution_id, event_id, event_json) VALUES (?, ?, ?, ?);

-- name: read_history
SELECT event_json FROM history WHERE instance_id = ? AND execution_id = ? ORDER BY event_id;

-- name: read_latest_history
-- (instance_id, instance_id)
SELECT event_json FROM history
WHERE instance_id = ?
  AND execution_id = (SELECT max(execution_id) FROM history WHERE instance_id = ?)
ORDER BY event_id;

-- name: list_executions
SELECT DISTINCT execution_id FROM history WHERE instance_id = ? ORDER BY execution_id;

-- name: count_history
SELECT count(*) FROM history WHERE instance_id = ? AND execution_id = ?;

-- ------------------------------------------------------------------ orchestration queue
-- name: enqueue_message
-- (instance_id, payload, visible_at, msg_visible_at)
INSERT INTO orchestrator_queue (instance_id, payload, visible_at, msg_visible_at)
VALUES (?, ?, ?, ?);

-- name: orchestration_candidates
-- (now, now, row cap): the oldest visible messages whose instance holds no live lock, a
-- range scan of orchestrator_queue_visible that stops after the cap. The caller keeps
-- the first distinct instances.
SELECT q.instance_id FROM orchestrator_queue AS q
WHERE q.visible_at <= ?
  AND NOT EXISTS (SELECT 1 FROM instance_locks AS l
                  WHERE l.instance_id = q.instance_id AND l.locked_until > ?)
ORDER BY q.visible_at, q.id
LIMIT ?;

-- name: orchestration_candidates_excluding
-- orchestration_candidates (now, now, names, pairs, row cap), leaving out instances whose
-- record names an orchestration in names (a JSON array) or a [name, version] pair in
-- pairs (a JSON array of pairs): another worker runs those (see ExcludedWork). Messages
-- for ids without a record are never left out. Still one range scan of
-- orchestrator_queue_visible, with a record lookup by key per row.
SELECT q.instance_id FROM orchestrator_queue AS q
WHERE q.visible_at <= ?
  AND NOT EXISTS (SELECT 1 FROM instance_locks AS l
                  WHERE l.instance_id = q.instance_id AND l.locked_until > ?)
  AND NOT EXISTS (SELECT 1 FROM instances AS i
                  WHERE i.instance_id = q.instance_id
                    AND (i.name IN (SELECT value FROM json_each(?))
                         OR EXISTS (SELECT 1 FROM json_each(?) AS p
                                    WHERE json_extract(p.value, '$[0]') = i.name
                                      AND json_extract(p.value, '$[1]') = i.version)))
ORDER BY q.visible_at, q.id
LIMIT ?;

-- name: next_due
-- (now): the earliest time a queued message becomes visible, among those not visible
-- yet (delayed messages: timers, backoff waits); NULL when there is none.
SELECT min(visible_at) FROM orchestrator_queue WHERE visible_at > ?;

-- name: pending_held
-- (now, now): locks held now: instances in a turn (a cool-down, whose token starts with
-- 'cool:', is held by nobody) and activities running.
SELECT (SELECT count(*) FROM instance_locks
        WHERE locked_until > ? AND substr(lock_token, 1, 5) <> 'cool:')
     + (SELECT count(*) FROM activity_queue WHERE lock_token IS NOT NULL AND visible_at > ?);

-- name: pending_due_messages
-- (now): the earliest time a queued message can be handed out: its visibility, or the
-- end of its instance's cool-down; a message not yet visible for an instance that ended
-- is left out (it will only be discarded).
SELECT min(max(q.visible_at, CASE WHEN substr(l.lock_token, 1, 5) = 'cool:'
                                  THEN l.locked_until ELSE 0 END))
FROM orchestrator_queue AS q
LEFT JOIN instance_locks AS l ON l.instance_id = q.instance_id
LEFT JOIN instances AS i ON i.instance_id = q.instance_id
WHERE q.visible_at <= ? OR i.state IS NULL
   OR i.state NOT IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- name: pending_due_activities
-- (:now, and the tags that count: :all 1 for every tag, else :default 1 for untagged
-- work, :any 1 for every tag, :tags a JSON array): the earliest time an activity not held
-- can be handed out (a row parked for good, at 1e300, never is).
SELECT min(visible_at) FROM activity_queue
WHERE (lock_token IS NULL OR visible_at <= :now) AND visible_at < 1e300
  AND (:all OR (tag = '' AND :default)
       OR (tag <> '' AND (:any OR tag IN (SELECT value FROM json_each(:tags)))));

-- name: lock_instance
-- (instance_id, lock_token, locked_until, had_record); replaces a dead lock of the
-- same instance (the fetch only picks instances whose lock is dead or absent).
INSERT INTO instance_locks (instance_id, lock_token, locked_until, had_record)
VALUES (?, ?, ?, ?)
ON CONFLICT (instance_id) DO UPDATE
SET lock_token = excluded.lock_token, locked_until = excluded.locked_until,
    had_record = excluded.had_record;

-- name: claim_messages
-- (lock_token, instance_id, now): marks every visible message of the instance as
-- delivered under the lock.
UPDATE orchestrator_queue SET lock_token = ?, fetch_count = fetch_count + 1
WHERE instance_id = ? AND visible_at <= ?
RETURNING id, payload, msg_visible_at, fetch_count;

-- name: lock_expiry
SELECT locked_until FROM instance_locks WHERE instance_id = ?;

-- name: find_lock
SELECT instance_id, locked_until, had_record FROM instance_locks WHERE lock_token = ?;

-- name: find_lock_and_progress
-- The lock of an ack, with the record's execution and history length (NULL: no record).
SELECT l.instance_id, l.locked_until, l.had_record, i.execution_id, i.history_len
FROM instance_locks AS l LEFT JOIN instances AS i ON i.instance_id = l.instance_id
WHERE l.lock_token = ?;

-- name: cool_down
-- (lock_token, locked_until, instance_id): abandon with a delay parks the instance
-- under a token nobody holds.
UPDATE instance_locks SET lock_token = ?, locked_until = ? WHERE instance_id = ?;

-- name: renew_lock
UPDATE instance_locks SET locked_until = ? WHERE lock_token = ? AND locked_until > ?;

-- name: release_lock
DELETE FROM instance_locks WHERE instance_id = ?;

-- name: delete_delivered
DELETE FROM orchestrator_queue WHERE instance_id = ? AND lock_token = ?;

-- name: unclaim_messages
-- (instance_id, lock_token)
UPDATE orchestrator_queue SET lock_token = NULL WHERE instance_id = ? AND lock_token = ?;

-- name: undeliver_messages
-- (instance_id, lock_token): as unclaim_messages, for a lock nobody used (its fetch's
-- caller went away): the delivery does not count.
UPDATE orchestrator_queue SET lock_token = NULL, fetch_count = max(fetch_count - 1, 0)
WHERE instance_id = ? AND lock_token = ?;

-- name: lock_free_turn_state
-- (now, now, instance_id): what a turn committed without a lock checks, in one lookup: the
-- record's execution and history length, whether a live lock (or cool-down) holds the
-- instance, whether messages wait for it. No row: the instance has no record.
SELECT i.execution_id, i.history_len,
       EXISTS (SELECT 1 FROM instance_locks AS l
               WHERE l.instance_id = i.instance_id AND l.locked_until > ?),
       EXISTS (SELECT 1 FROM orchestrator_queue AS q
               WHERE q.instance_id = i.instance_id AND q.visible_at <= ?)
FROM instances AS i WHERE i.instance_id = ?;

-- name: consume_message
-- (instance_id, payload): a queued message a turn committed without a lock consumed
-- (a timer fired in place), if no fetch delivered it.
DELETE FROM orchestrator_queue
WHERE id = (SELECT id FROM orchestrator_queue
            WHERE instance_id = ? AND payload = ? AND lock_token IS NULL LIMIT 1);

-- name: has_visible_messages
SELECT 1 FROM orchestrator_queue WHERE instance_id = ? AND visible_at <= ? LIMIT 1;

-- ------------------------------------------------------------------ activity queue
-- name: enqueue_activity
-- (instance_id, execution_id, event_id, activity name, payload, tag ('' for none),
-- session_id (NULL for none), visible_at, enqueued_at: the same time); scheduling the
-- same work twice keeps the first row.
INSERT INTO activity_queue (instance_id, execution_id, event_id, name, payload, tag,
                            session_id, visible_at, enqueued_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (instance_id, execution_id, event_id) DO NOTHING;

-- name: enqueue_activity_returning
-- enqueue_activity, answering the new row's id (nothing when the work already exists).
INSERT INTO activity_queue (instance_id, execution_id, event_id, name, payload, tag,
                            session_id, visible_at, enqueued_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (instance_id, execution_id, event_id) DO NOTHING
RETURNING id;

-- ------------------------------------------------------------------ activity routing
-- A fetch of activities is one statement (composed in _routing.py): the union of the
-- parts its route needs, each the oldest rows, at most :limit, of one index range it
-- may take, then the oldest :limit of those. The plain part alone is the whole
-- statement of a fetch of untagged work without sessions. Each part answers (id,
-- payload, fetch_count, session_id, holder of the session, visible_at). Parameters:
-- :now, :limit, :skip (JSON array of the activity names left to other workers), and for
-- session work :owner and :may_claim (1 while the fetch may claim a free session). A
-- part's SKIP stands for claim_skip or nothing, its SESSIONS for claim_sessions_none or
-- claim_sessions_owned.

-- name: claim_plain
-- untagged work without a session (index activity_queue_visible)
SELECT q.id, q.payload, q.fetch_count, q.session_id, NULL AS holder, q.visible_at
FROM activity_queue AS q
WHERE q.tag = '' AND q.session_id IS NULL AND q.visible_at <= :now
  SKIP
ORDER BY q.visible_at, q.id
LIMIT :limit

-- name: claim_tag
-- the tagged and the session work of one tag, :tag ('': untagged session work), index
-- activity_queue_routed
SELECT q.id, q.payload, q.fetch_count, q.session_id,
       (SELECT s.owner FROM sessions AS s WHERE s.session_id = q.session_id) AS holder,
       q.visible_at
FROM activity_queue AS q
WHERE (q.tag <> '' OR q.session_id IS NOT NULL) AND q.tag = :tag AND q.visible_at <= :now
  SKIP
  AND SESSIONS
ORDER BY q.visible_at, q.id
LIMIT :limit

-- name: claim_routed
-- every tagged and session work, whatever its tag (TagFilter.ANY), index
-- activity_queue_routed_time
SELECT q.id, q.payload, q.fetch_count, q.session_id,
       (SELECT s.owner FROM sessions AS s WHERE s.session_id = q.session_id) AS holder,
       q.visible_at
FROM activity_queue AS q
WHERE (q.tag <> '' OR q.session_id IS NOT NULL) AND q.visible_at <= :now
  SKIP
  AND SESSIONS
ORDER BY q.visible_at, q.id
LIMIT :limit

-- name: claim_skip
-- a part's SKIP, for a fetch that leaves some activity names to other workers (the
-- names checked on each row of the range); nothing otherwise
AND q.name NOT IN (SELECT value FROM json_each(:skip))

-- name: claim_sessions_none
-- a fetch for no session owner takes work without a session only
q.session_id IS NULL

-- name: claim_sessions_owned
-- work without a session, of a session :owner holds (its lease may have ended: nobody
-- claimed it since), or, with :may_claim, of a free session (no row, or a lease ended)
(q.session_id IS NULL
 OR coalesce((SELECT s.owner = :owner OR (:may_claim AND s.locked_until <= :now)
              FROM sessions AS s WHERE s.session_id = q.session_id), :may_claim))

-- name: claim_session
-- (session_id, owner, locked_until): the fetch took work of the session for owner
INSERT INTO sessions (session_id, owner, locked_until) VALUES (?, ?, ?)
ON CONFLICT (session_id) DO UPDATE
SET owner = excluded.owner, locked_until = excluded.locked_until;

-- name: renew_sessions
-- (:until, :owner, :ids JSON array): extend the leases owner still holds
UPDATE sessions SET locked_until = :until
WHERE session_id IN (SELECT value FROM json_each(:ids)) AND owner = :owner
RETURNING session_id;

-- name: forget_sessions
-- (now): leases that ended free their sessions anyway; their rows go
DELETE FROM sessions WHERE locked_until <= ?;

-- name: release_sessions
-- (:owner, :ids JSON array or NULL for all of them)
DELETE FROM sessions
WHERE owner = :owner AND (:ids IS NULL OR session_id IN (SELECT value FROM json_each(:ids)));

-- name: lock_activity
-- (lock_token, locked_until, id)
UPDATE activity_queue SET lock_token = ?, visible_at = ?, fetch_count = fetch_count + 1
WHERE id = ?;

-- name: ack_activity
-- (id, lock_token, now): only a live lock deletes the row.
DELETE FROM activity_queue WHERE id = ? AND lock_token = ? AND visible_at > ?;

-- name: renew_activity
-- (locked_until, id, lock_token, now)
UPDATE activity_queue SET visible_at = ?
WHERE id = ? AND lock_token = ? AND visible_at > ?;

-- name: abandon_activity
-- (visible_at or NULL: back to its place in the queue, whether the fetch that delivered
-- it counts as an attempt: 1 or 0, id, lock_token, now)
UPDATE activity_queue SET lock_token = NULL, visible_at = coalesce(?, enqueued_at),
                          fetch_count = max(fetch_count - 1 + ?, 0)
WHERE id = ? AND lock_token = ? AND visible_at > ?
RETURNING instance_id;

-- name: activity_lock_token
SELECT lock_token FROM activity_queue WHERE id = ?;

-- name: park_activity
-- (id): a row whose payload does not decode is never fetched again.
UPDATE activity_queue SET lock_token = NULL, visible_at = 1e300 WHERE id = ?;

-- name: cancel_activity
DELETE FROM activity_queue WHERE instance_id = ? AND execution_id = ? AND event_id = ?;

-- ------------------------------------------------------------------ workers
-- name: forget_workers
-- (before, worker_id): rows of other workers last seen before then.
DELETE FROM workers WHERE last_seen_at < ? AND worker_id <> ?;

-- name: record_heartbeat
-- Insert or replace a worker's row; a stopped row is not revived by a late heartbeat of
-- the same runtime (same started_at).
INSERT INTO workers (worker_id, worker_node_id, host, pid, duroxy_version, started_at,
                     last_seen_at, stopped_at, heartbeat_interval,
                     orchestration_concurrency, activity_concurrency, tag_filter,
                     sessions_owned, active_activities, orchestrations, activities)
VALUES (:worker_id, :worker_node_id, :host, :pid, :duroxy_version, :started_at,
        :last_seen_at, :stopped_at, :heartbeat_interval, :orchestration_concurrency,
        :activity_concurrency, :tag_filter, :sessions_owned, :active_activities,
        :orchestrations, :activities)
ON CONFLICT (worker_id) DO UPDATE
SET worker_node_id = excluded.worker_node_id, host = excluded.host, pid = excluded.pid,
    duroxy_version = excluded.duroxy_version, started_at = excluded.started_at,
    last_seen_at = excluded.last_seen_at, stopped_at = excluded.stopped_at,
    heartbeat_interval = excluded.heartbeat_interval,
    orchestration_concurrency = excluded.orchestration_concurrency,
    activity_concurrency = excluded.activity_concurrency, tag_filter = excluded.tag_filter,
    sessions_owned = excluded.sessions_owned, active_activities = excluded.active_activities,
    orchestrations = excluded.orchestrations, activities = excluded.activities
WHERE workers.stopped_at IS NULL OR workers.started_at <> excluded.started_at;

-- name: list_workers
SELECT worker_id, worker_node_id, host, pid, duroxy_version, started_at, last_seen_at,
       stopped_at, heartbeat_interval, orchestration_concurrency, activity_concurrency,
       tag_filter, sessions_owned, active_activities, orchestrations, activities
FROM workers
WHERE :all OR stopped_at IS NULL
ORDER BY started_at, worker_id;
