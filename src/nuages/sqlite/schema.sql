-- The Nuages schema for a fresh SQLite database (version 2, CURRENT_SCHEMA_VERSION in
-- database.py). A database created by an older Nuages is upgraded by the numbered files of
-- migrations/ instead, so this file always describes the newest schema in full.
--
-- Tables are STRICT so that a value of the wrong type is an error instead of being
-- silently converted by column affinity. Small rows that are always looked up by their
-- whole key are WITHOUT ROWID.

-- Key/value facts about the database itself; `schema_version` is written by `migrate`.
CREATE TABLE nuages_metadata (
    name TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Objects and tombstones of every scope (parent_id, resource_name).
-- `data` is the JSON text of the object without `id` and `last_modified`: those two live in
-- columns so that lookups, `_since` and the default order use indexes. A tombstone's data
-- is {"deleted":true}; `deleted` mirrors it so that live listings need no JSON work.
-- `has_nul` is 1 when some string in `data` contains U+0000: json_extract() stops at that
-- character, so the query compiler takes an exact (Python) path for such rows.
-- A rowid table (not WITHOUT ROWID) because `data` can be large.
CREATE TABLE objects (
    parent_id TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    id TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    deleted INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    has_nul INTEGER NOT NULL CHECK (has_nul IN (0, 1)),
    data TEXT NOT NULL,
    PRIMARY KEY (parent_id, resource_name, id)
) STRICT;

-- Listings (default order -last_modified), `_since`/`_before` and keyset pages over
-- last_modified walk this index. Not UNIQUE: a replicated (requested) timestamp in the past
-- may repeat one already used in the scope, which the memory reference backend accepts.
CREATE INDEX objects_last_modified ON objects (parent_id, resource_name, last_modified);

-- The current timestamp of each scope: the greatest last_modified ever written there, or
-- the `now` given to a scope read before its first write (then stable until a write).
-- `live_count` is the number of live objects of the scope (tombstones excluded), updated by
-- every write in the same transaction: Total-Objects of a whole collection reads it.
CREATE TABLE timestamps (
    parent_id TEXT NOT NULL,
    resource_name TEXT NOT NULL,
    last_modified INTEGER NOT NULL,
    live_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (parent_id, resource_name)
) STRICT, WITHOUT ROWID;

-- Access control entries. The primary key serves reads of one object's ACL and
-- check_permission; the principal index serves "what may these principals see" listings.
CREATE TABLE access_control_entries (
    object_uri TEXT NOT NULL,
    permission TEXT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (object_uri, permission, principal)
) STRICT, WITHOUT ROWID;

CREATE INDEX access_control_entries_principal
    ON access_control_entries (principal, permission, object_uri);

-- Extra principals held by a user id (group membership, system.Authenticated).
CREATE TABLE user_principals (
    user_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    PRIMARY KEY (user_id, principal)
) STRICT, WITHOUT ROWID;

-- remove_principal (a deleted group) finds its members through this index.
CREATE INDEX user_principals_principal ON user_principals (principal);

-- Cache entries: JSON `value`, absolute expiry in epoch seconds (wall clock, so that
-- several processes sharing the file agree).
CREATE TABLE cache (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at REAL NOT NULL
) STRICT, WITHOUT ROWID;

-- Expired entries are purged a few at a time on writes, oldest first.
CREATE INDEX cache_expires_at ON cache (expires_at);
