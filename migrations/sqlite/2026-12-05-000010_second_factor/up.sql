-- A user's TOTP second factor (RFC 6238): the shared secret, pending until a first code confirms
-- it, and the last time step used, so that a code cannot be replayed within its window.
CREATE TABLE user_totp (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_step BIGINT NOT NULL
);
-- Single-use recovery codes, stored as SHA-256 digests.
CREATE TABLE user_recovery_codes (
    code_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX user_recovery_codes_user ON user_recovery_codes (user_id);
