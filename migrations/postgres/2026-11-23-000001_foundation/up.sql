-- Foundation: users, sessions, refresh tokens, login throttling, settings, server state,
-- the change log that keeps every server's in-memory directory current, and the audit trail.
-- Times are microseconds since the Unix epoch (BIGINT), identifiers are UUID text: the same
-- portable schema on SQLite and PostgreSQL.

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    username TEXT NOT NULL UNIQUE,
    email TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('requester', 'approver', 'team_admin')),
    active BOOLEAN NOT NULL,
    must_change_password BOOLEAN NOT NULL,
    password_hash TEXT,
    search_text TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_login_at BIGINT,
    last_seen_at BIGINT,
    version BIGINT NOT NULL
);
CREATE INDEX users_role_active ON users (role, active);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoke_reason TEXT
);
CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

CREATE TABLE login_throttle (
    subject TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    locked_until BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE server_state (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE change_log (
    revision BIGINT PRIMARY KEY NOT NULL,
    entity_kind TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY NOT NULL,
    occurred_at BIGINT NOT NULL,
    actor_id TEXT,
    actor_name TEXT,
    actor_role TEXT,
    action TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT,
    before_json TEXT,
    after_json TEXT,
    outcome TEXT NOT NULL,
    detail TEXT,
    request_id TEXT,
    peer_addr TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- Queries filter by actor, target or action and a time range, ordered by (time, sequence):
-- each index serves one filter as a range scan, whatever the size of the trail.
CREATE INDEX audit_events_actor ON audit_events (actor_id, occurred_at, seq);
CREATE INDEX audit_events_target ON audit_events (target_id, occurred_at, seq);
CREATE INDEX audit_events_action ON audit_events (action, occurred_at, seq);
CREATE INDEX audit_events_time ON audit_events (occurred_at, seq);

-- Every write transaction first updates this row: it serialises writers on both backends, so
-- change-log revisions and audit sequence numbers are assigned in commit order.
INSERT INTO server_state (key, value) VALUES ('write_lock', '0');
