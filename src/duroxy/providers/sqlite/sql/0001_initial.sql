-- Initial schema of the duroxy SQLite store.
--
-- Times are epoch seconds (REAL) on the provider's clock. Payloads are the JSON text of
-- duroxy.history (encode_message / encode_event / ActivityWork.to_json), stored as is so
-- that a row that no longer decodes is reported for its own instance only.

CREATE TABLE instances (
    instance_id        TEXT    NOT NULL PRIMARY KEY,
    name               TEXT    NOT NULL,
    version            TEXT,
    state              TEXT    NOT NULL,
    execution_id       INTEGER NOT NULL,
    output             TEXT,
    error_json         TEXT,
    custom_status      TEXT,
    created_at         REAL    NOT NULL,
    updated_at         REAL    NOT NULL,
    parent_instance_id TEXT,
    -- number of history rows stored for execution_id
    history_len        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX instances_by_created ON instances (created_at, instance_id);
CREATE INDEX instances_by_parent ON instances (parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;
CREATE INDEX instances_by_state ON instances (state, updated_at);

CREATE TABLE history (
    instance_id  TEXT    NOT NULL,
    execution_id INTEGER NOT NULL,
    event_id     INTEGER NOT NULL,
    event_json   TEXT    NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
) WITHOUT ROWID;

-- Orchestration messages. A row is delivered when visible_at <= now and its instance
-- holds no live lock in instance_locks. lock_token marks the rows a lock delivered, so
-- that the ack deletes exactly those. msg_visible_at keeps the visible_at the message
-- was enqueued with (NULL: none), to hand the message back as it was given; visible_at
-- itself is never earlier than the enqueue time, so the (visible_at, id) order is the
-- enqueue order for everything but delayed messages, which queue up when they fall due.
CREATE TABLE orchestrator_queue (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id    TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    visible_at     REAL    NOT NULL,
    msg_visible_at REAL,
    lock_token     TEXT,
    fetch_count    INTEGER NOT NULL DEFAULT 0
);
-- Index entries carry the rowid, so this serves ORDER BY visible_at, id.
CREATE INDEX orchestrator_queue_visible ON orchestrator_queue (visible_at);
CREATE INDEX orchestrator_queue_instance ON orchestrator_queue (instance_id, visible_at);

-- Per-instance locks, kept apart from instances so that messages for an instance
-- without a record can be locked too. A row whose locked_until has passed is dead and
-- is overwritten by the next fetch; ack and abandon delete the row. An abandon with a
-- delay leaves a row under a token nobody holds: the instance cools down until then.
-- had_record says whether the instance had a record when it was fetched: only then does
-- the ack write history and the record.
CREATE TABLE instance_locks (
    instance_id  TEXT    NOT NULL PRIMARY KEY,
    lock_token   TEXT    NOT NULL UNIQUE,
    locked_until REAL    NOT NULL,
    had_record   INTEGER NOT NULL
) WITHOUT ROWID;

-- Activity work. While a row is locked, visible_at holds the lock's expiry: one index
-- range (visible_at <= now) then finds both fresh rows and rows whose lock expired.
-- enqueued_at is when the row was created: an abandon without delay puts the row back
-- in its place in the queue.
CREATE TABLE activity_queue (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT    NOT NULL,
    execution_id INTEGER NOT NULL,
    event_id     INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    visible_at   REAL    NOT NULL,
    enqueued_at  REAL    NOT NULL,
    lock_token   TEXT,
    fetch_count  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX activity_queue_visible ON activity_queue (visible_at);
CREATE UNIQUE INDEX activity_queue_work ON activity_queue (instance_id, execution_id, event_id);
