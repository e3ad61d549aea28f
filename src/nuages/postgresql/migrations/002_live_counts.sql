-- Version 2: each scope's number of live objects, kept by every write in the write
-- transaction (which holds the scope's row anyway), so that Total-Objects of a whole
-- collection reads one row instead of counting (storage/postgresql.py). Existing scopes
-- are counted once here.
ALTER TABLE timestamps ADD COLUMN live_count BIGINT NOT NULL DEFAULT 0;

UPDATE timestamps AS t SET live_count = c.live
FROM (SELECT scope, count(*) AS live FROM objects WHERE NOT deleted GROUP BY scope) AS c
WHERE c.scope = t.scope;
