-- Version 3: a token that changes with every change of user_principals, in the same
-- transaction, so that a process may keep the stored principals it read for as long as
-- the token it read with them is current (postgresql/reads.py).
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
