-- Recorded replies are sealed: the key column now holds a SHA-256 of the client's idempotency key,
-- and the reply is encrypted under a key derived from the idempotency key itself, which only the
-- client holds; neither the database nor a backup of it reveals a reply (API-key secrets,
-- temporary passwords, tokens). Records written before were plaintext: they are dropped (a retry
-- of a call made just before the upgrade is then evaluated afresh).
DELETE FROM idempotency_keys;
-- The caller's standing (role, state, groups) when the call was made, hashed: a replay to a
-- caller whose standing changed since is refused.
ALTER TABLE idempotency_keys ADD COLUMN standing TEXT NOT NULL DEFAULT '';
