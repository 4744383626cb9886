DROP INDEX IF EXISTS users_search_trgm;
