-- Password resets, registration links and email delivery.

-- Single-use tokens sent to users (reset links and registration links). Only the SHA-256 of the
-- token is stored. A newer token of the same purpose supersedes the older ones, which stay
-- (marked) so that using one gets a clear answer rather than "unknown".
CREATE TABLE user_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('password_reset', 'registration')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    superseded_at BIGINT
);
CREATE INDEX user_tokens_user ON user_tokens (user_id, purpose);
CREATE INDEX user_tokens_expiry ON user_tokens (expires_at);

-- Every email FluxGate sends, written in the transaction of the change that caused it (so a
-- message is never lost and never sent for a change that rolled back), then delivered by a
-- background worker with retries. Without SMTP, messages stay here as 'held' for a Team Admin.
CREATE TABLE outbox (
    id TEXT PRIMARY KEY NOT NULL,
    template TEXT NOT NULL,
    recipient TEXT NOT NULL,
    user_id TEXT,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'held')),
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_recipient ON outbox (recipient, id);

-- Fixed-window request counters (password-reset requests per account and per client address),
-- shared by every replica.
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY NOT NULL,
    window_start BIGINT NOT NULL,
    hits INTEGER NOT NULL
);
CREATE INDEX rate_limits_window ON rate_limits (window_start);
