-- Version 2: each scope's number of live objects, kept by every write in the write
-- transaction, so that Total-Objects of a whole collection reads one row instead of
-- counting (storage/sqlite.py). Existing scopes are counted once here.
ALTER TABLE timestamps ADD COLUMN live_count INTEGER NOT NULL DEFAULT 0;

UPDATE timestamps SET live_count = (
    SELECT count(*) FROM objects AS o
    WHERE o.parent_id = timestamps.parent_id
        AND o.resource_name = timestamps.resource_name
        AND o.deleted = 0
);
