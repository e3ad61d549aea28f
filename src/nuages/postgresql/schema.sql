-- The Nuages schema for a fresh PostgreSQL database (version 3, CURRENT_SCHEMA_VERSION in
-- database.py). An older database is upgraded by the numbered files of migrations/ instead,
-- so this file always describes the newest schema in full.
--
-- Identifiers (ids, parent ids, URIs, principals) have no length limit in the API, while a
-- btree index entry must fit in about 2.7 kB: unique keys are therefore SHA-256 digests
-- computed by Nuages (`key`, `scope`), and prefix lookups index the first 200 characters
-- (`left(...)`) and then compare the full value.

-- Key/value facts about the database itself; `schema_version` is written by `migrate`.
CREATE TABLE nuages_metadata (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Objects and tombstones of every scope (parent_id, resource_name).
-- `scope` = sha256 of the scope, `key` = sha256 of the scope and id (see storage/postgresql.py).
-- `body` is the exact JSON text of the object without `id` and `last_modified`, which is what
-- is returned (JSONB would rewrite numbers such as 1e16 and cannot hold U+0000). `data` is the
-- same value as JSONB, used by filters and sorting; where `body` has U+0000 inside a string,
-- `data` has U+FFFD instead and `has_nul` is true.
CREATE TABLE objects (
    key BYTEA PRIMARY KEY,
    scope BYTEA NOT NULL,
    parent_id TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    id TEXT NOT NULL,
    -- The JSON text of the id when it holds U+0000 (which TEXT cannot); `id` then has
    -- U+FFFD instead, for sorting.
    raw_id TEXT,
    last_modified BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    has_nul BOOLEAN NOT NULL,
    body TEXT NOT NULL,
    data JSONB NOT NULL
);

-- Default listings (-last_modified), `_since`/`_before`, keyset pages on last_modified and
-- Total-Objects of live objects: an index range of one scope. Live objects only for the
-- second one, which is what a listing without tombstones walks.
CREATE INDEX objects_scope_last_modified ON objects (scope, last_modified);
CREATE INDEX objects_live_scope_last_modified ON objects (scope, last_modified) WHERE NOT deleted;
-- Equality and containment filters on any field of the JSON (`data @> '{"f": v}'`).
CREATE INDEX objects_data ON objects USING GIN (data jsonb_path_ops);
-- purge(): cascades delete every scope below a parent, found by prefix.
CREATE INDEX objects_parent_prefix ON objects (left(parent_id, 200) COLLATE "C");

-- The current timestamp of each scope. Its row is also the scope's write lock: a write
-- transaction takes it (SELECT ... FOR UPDATE, queued by an advisory lock of the scope)
-- before its first write in the scope and keeps it until commit, so timestamps of a scope
-- are assigned and committed in the same order.
-- `live_count` is the number of live objects of the scope (tombstones excluded), updated by
-- every write in the same transaction: Total-Objects of a whole collection reads it.
CREATE TABLE timestamps (
    scope BYTEA PRIMARY KEY,
    parent_id TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    last_modified BIGINT NOT NULL,
    live_count BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX timestamps_parent_prefix ON timestamps (left(parent_id, 200) COLLATE "C");

-- Access control entries: `key` = sha256 of (uri, permission, principal).
CREATE TABLE access_control_entries (
    key BYTEA PRIMARY KEY,
    object_uri TEXT NOT NULL,
    permission TEXT NOT NULL,
    principal TEXT NOT NULL
);

-- One object's ACL, and URI prefix patterns (`/buckets/b/collections/*`).
CREATE INDEX access_control_entries_uri
    ON access_control_entries (left(object_uri, 200) COLLATE "C", permission);
-- "What may these principals see" listings.
CREATE INDEX access_control_entries_principal
    ON access_control_entries (left(principal, 200), permission);

-- Extra principals held by a user id (group membership, system.Authenticated).
CREATE TABLE user_principals (
    key BYTEA PRIMARY KEY,
    user_id TEXT NOT NULL,
    principal TEXT NOT NULL
);

CREATE INDEX user_principals_user ON user_principals (left(user_id, 200));
CREATE INDEX user_principals_principal ON user_principals (left(principal, 200));

-- A token that every change of user_principals replaces, in its transaction: a process
-- keeps the stored principals it read while the token read with them is current
-- (postgresql/reads.py). One row.
CREATE TABLE principals_version (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    token TEXT NOT NULL
);

INSERT INTO principals_version (token) VALUES (md5(random()::text || clock_timestamp()::text));

CREATE FUNCTION nuages_principals_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE principals_version SET token = md5(random()::text || clock_timestamp()::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER user_principals_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON user_principals
    FOR EACH STATEMENT EXECUTE FUNCTION nuages_principals_changed();

-- Cache entries: JSON `value`, absolute expiry in epoch seconds (all processes agree).
CREATE TABLE cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE INDEX cache_expires_at ON cache (expires_at);
