-- Webhook subscriptions: an HTTPS endpoint told of audit events as they commit. The feed is the
-- audit trail itself (appended in the transaction of every change, in commit order): a worker
-- copies the events after `cursor_seq` that a subscription selects into its deliveries, under
-- the store's write lock, so every event is handed to a subscription once, by one replica.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    url TEXT NOT NULL,
    -- 'events' (one Standard Webhooks message per event) or 'audit_stream' (JSON lines batches).
    format TEXT NOT NULL,
    -- Space-separated event types: audit actions, 'prefix.*' or '*'.
    event_types TEXT NOT NULL,
    secret TEXT NOT NULL,
    -- The secret before the last rotation, still signing until previous_secret_expires_at.
    previous_secret TEXT,
    previous_secret_expires_at BIGINT,
    enabled BOOLEAN NOT NULL,
    -- The last audit sequence number handed to this subscription.
    cursor_seq BIGINT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One message to one subscription, with its delivery state; id is the webhook-id header.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    first_seq BIGINT NOT NULL,
    last_seq BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    -- 'pending', 'delivered' or 'failed'.
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT,
    last_attempt_at BIGINT,
    last_status INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
-- A subscription's deliveries in feed order: its head is the oldest pending one.
CREATE INDEX webhook_deliveries_feed ON webhook_deliveries (webhook_id, state, first_seq);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (webhook_id, id);

-- Where the audit trail was pruned: the last pruned event's sequence number and hash, which
-- the first remaining event's prev_hash must match; and the archive the pruned events went to.
CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY NOT NULL,
    hash TEXT NOT NULL,
    events BIGINT NOT NULL,
    archive TEXT NOT NULL,
    archive_sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
