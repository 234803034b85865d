-- The database's own identity: one random id, made here, under the migration lock, so that
-- concurrent first migrations agree on it. Node-local state (the shared-memory file of
-- rate-limit buckets and the invalidation counter) is named after it, so two databases
-- never share that state and a recreated database starts clean.
CREATE TABLE instance (
    id TEXT NOT NULL PRIMARY KEY
);
INSERT INTO instance (id) VALUES (lower(hex(randomblob(16))));
