-- duroxy PostgreSQL store, migration 1: the initial tables.
--
-- Every table lives in the tenant's own schema ({schema} is replaced by the quoted
-- schema name). All times are timestamptz written from the database clock; the
-- application host's clock is only used for timer fire times the runtime chose.
--
-- Instance ids may be 1,024 characters of any script, up to 4 KB of UTF-8: more than a
-- B-tree entry can hold (about 2.7 KB). So rows are keyed by ikey, the SHA-256 of the
-- id's UTF-8 bytes (32 bytes, computed by the provider), and the id itself is stored
-- alongside for reading back. Other long texts used in filters (name, parent id) are
-- indexed through md5() and always re-checked against the full value.

-- One row per instance: what clients see.
CREATE TABLE {schema}.instances (
    ikey               bytea       PRIMARY KEY,
    instance_id        text        NOT NULL,
    name               text        NOT NULL,
    version            text,
    state              text        NOT NULL,
    execution_id       integer     NOT NULL DEFAULT 1,
    output             text,
    error              text,
    custom_status      text,
    parent_instance_id text,
    created_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- list_instances pages in (created_at, instance_id) order, optionally by state or name;
-- ties on created_at (microseconds) are rare, so sorting them by id costs nothing.
CREATE INDEX instances_created_idx ON {schema}.instances (created_at);
CREATE INDEX instances_state_idx ON {schema}.instances (state, created_at);
CREATE INDEX instances_name_idx ON {schema}.instances (md5(name), created_at);
-- cascading deletes and list_instances(parent_instance_id=...) follow the parent links.
CREATE INDEX instances_parent_idx ON {schema}.instances (md5(parent_instance_id))
    WHERE parent_instance_id IS NOT NULL;
-- purge selects instances by state and age.
CREATE INDEX instances_updated_idx ON {schema}.instances (state, updated_at);

-- History events, one row each, in the order they were appended (seq counts from 0
-- within an execution). An event id appears once per execution: appending it again
-- violates the unique key, which fails the whole ack.
CREATE TABLE {schema}.history (
    ikey         bytea   NOT NULL,
    execution_id integer NOT NULL,
    seq          integer NOT NULL,
    event_id     integer NOT NULL,
    payload      text    NOT NULL,
    PRIMARY KEY (ikey, execution_id, seq),
    UNIQUE (ikey, execution_id, event_id)
);

-- The per-instance orchestration lock. A row exists for every instance id that ever
-- had a message queued (also ids without an instance record), so the fetch can lock
-- it with FOR UPDATE SKIP LOCKED. The lease is held while lock_token is set and
-- locked_until lies in the future (database clock). With lock_token NULL, a future
-- locked_until is a cool-down after an abandon with delay: nobody holds the instance,
-- but it is not fetched before then. has_record says whether the instance had a
-- record when the lock was taken; an ack only writes records and history if it did.
CREATE TABLE {schema}.instance_locks (
    ikey         bytea   PRIMARY KEY,
    instance_id  text    NOT NULL,
    lock_token   text    UNIQUE,
    locked_until timestamptz,
    has_record   boolean NOT NULL DEFAULT false
);

-- Orchestration queue. lock_token names the lock under which a message was last
-- delivered; the ack deletes exactly those rows. attempts counts deliveries.
CREATE TABLE {schema}.orchestrator_queue (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ikey        bytea       NOT NULL,
    instance_id text        NOT NULL,
    payload     text        NOT NULL,
    visible_at  timestamptz NOT NULL,
    -- the visible_at the runtime asked for (epoch seconds), returned as given
    due_at      double precision,
    lock_token  text,
    attempts    integer     NOT NULL DEFAULT 0
);
CREATE INDEX orchestrator_queue_visible_idx ON {schema}.orchestrator_queue (visible_at, id);
CREATE INDEX orchestrator_queue_instance_idx ON {schema}.orchestrator_queue (ikey, id);
CREATE INDEX orchestrator_queue_lock_idx ON {schema}.orchestrator_queue (lock_token)
    WHERE lock_token IS NOT NULL;

-- Activity queue, locked per row. While a row is locked, visible_at equals
-- locked_until, so the fetch scans one index and never sees rows in flight.
CREATE TABLE {schema}.activity_queue (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ikey         bytea       NOT NULL,
    instance_id  text        NOT NULL,
    execution_id integer     NOT NULL,
    event_id     integer     NOT NULL,
    payload      text        NOT NULL,
    visible_at   timestamptz NOT NULL,
    lock_token   text        UNIQUE,
    locked_until timestamptz,
    attempts     integer     NOT NULL DEFAULT 0
);
CREATE INDEX activity_queue_visible_idx ON {schema}.activity_queue (visible_at, id);
CREATE INDEX activity_queue_work_idx ON {schema}.activity_queue (ikey, execution_id, event_id);
