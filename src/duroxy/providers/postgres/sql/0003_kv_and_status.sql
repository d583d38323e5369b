-- duroxy PostgreSQL store, migration 3: per-instance key-value state, custom status
-- versions, and what the runtime keeps of an instance's mailboxes.
--
-- kv: each instance's committed key-value state, written by the statement of the turn
-- that set or cleared the keys. Keys may be 1,024 characters (up to 4 KB of UTF-8), more
-- than a B-tree entry holds, so rows are keyed by kkey, the SHA-256 of the key's UTF-8
-- bytes (computed by the provider), beside the instance key; the key itself is stored
-- for reading back. value is the value's JSON text; updated_at the orchestration time
-- of its last set (epoch milliseconds, from the KeyValueSet event).
CREATE TABLE {schema}.kv (
    ikey       bytea  NOT NULL,
    kkey       bytea  NOT NULL,
    key        text   NOT NULL,
    value      text   NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (ikey, kkey)
);

-- custom_status_version: committed turns that set the custom status (instances stored
-- before this migration that hold a custom status set it at least once). unread:
-- events and queue messages the last turn left for the code to take (0 for instances
-- stored before this migration until their next turn). kv_base: the key-value state
-- the current execution started with (JSON object of key -> [value text, updated_at]),
-- written when an execution continues as new; NULL for none.
ALTER TABLE {schema}.instances
    ADD COLUMN custom_status_version bigint  NOT NULL DEFAULT 0,
    ADD COLUMN unread                integer NOT NULL DEFAULT 0,
    ADD COLUMN kv_base               text;
UPDATE {schema}.instances SET custom_status_version = 1 WHERE custom_status IS NOT NULL;
