-- Per-instance key-value state, custom status versions, and what the runtime keeps of
-- an instance's mailboxes.
--
-- kv: each instance's committed key-value state, written by the commit of the turn that
-- set or cleared the keys. value is the JSON text of the value; updated_at the
-- orchestration time of its last set (epoch milliseconds, from the KeyValueSet event).
-- A plain rowid table: values run up to 64 KiB, too big to keep in the index itself.
CREATE TABLE kv (
    instance_id TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- custom_status_version: committed turns that set the custom status. Instances stored
-- before this migration that hold a custom status set it at least once.
ALTER TABLE instances ADD COLUMN custom_status_version INTEGER NOT NULL DEFAULT 0;
UPDATE instances SET custom_status_version = 1 WHERE custom_status IS NOT NULL;

-- unread: events and queue messages the last turn left for the code to take (the
-- runtime's count; 0 for instances stored before this migration until their next turn).
ALTER TABLE instances ADD COLUMN unread INTEGER NOT NULL DEFAULT 0;

-- kv_base: the key-value state the instance's current execution started with (a JSON
-- object of key -> [value text, updated_at]), written when an execution continues as
-- new; NULL for none. A replay of the execution starts from it.
ALTER TABLE instances ADD COLUMN kv_base TEXT;
