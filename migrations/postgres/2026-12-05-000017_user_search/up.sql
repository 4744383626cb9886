-- Substring search over users by trigrams: a GIN index of users.search_text with pg_trgm's
-- operator class, which serves `search_text LIKE '%term%'` for terms of three characters or
-- more. The extension is created in the public schema when it is missing and the role may
-- (pg_trgm is a trusted extension: a database owner may); where it cannot be, the migration
-- goes on without the index and user search scans (docs/deployment.md).
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm could not be created (%): user search will scan', SQLERRM;
END
$$;

DO $$
DECLARE
    trgm_schema name;
BEGIN
    SELECT n.nspname INTO trgm_schema
        FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format(
            'CREATE INDEX users_search_trgm ON users USING gin (search_text %I.gin_trgm_ops)',
            trgm_schema
        );
    END IF;
END
$$;
