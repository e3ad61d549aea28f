-- The local store of nuages.client (one SQLite file, any number of local collections).
-- Opened in WAL mode with synchronous=FULL: a committed write survives a crash or power loss,
-- and a process killed mid-write leaves the previous committed state.

-- One row per local collection: the remote it syncs with, and how far it has pulled.
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    -- "<server url>/buckets/<bid>/collections/<cid>" of the first sync; a store syncs one remote.
    remote TEXT,
    -- Every server change up to this timestamp is applied locally (the next pull's _since).
    last_modified INTEGER
);

CREATE TABLE IF NOT EXISTS records (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    -- The record's fields as a JSON object, without id and last_modified (columns below).
    data TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('created', 'updated', 'deleted', 'synced')),
    -- The server version this local one derives from (If-Match of the next push);
    -- NULL for a record the server has never acknowledged.
    last_modified INTEGER,
    -- Bumped by every local write, so that a push can tell whether the record changed
    -- while its request was on the wire.
    revision INTEGER NOT NULL DEFAULT 0,
    -- 1 once a push of this record was sent and its outcome is not known yet: the server may
    -- hold it even though its status says 'created'.
    in_flight INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection, id)
);

-- What sync() has to push.
CREATE INDEX IF NOT EXISTS records_pending ON records (collection, status)
    WHERE status != 'synced';

-- Conflicts left for the application (Strategy.MANUAL), until resolve().
CREATE TABLE IF NOT EXISTS conflicts (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    local TEXT,   -- the local version as JSON, NULL when deleted locally
    remote TEXT,  -- the server version as JSON (with last_modified), NULL when deleted there
    PRIMARY KEY (collection, id)
);
