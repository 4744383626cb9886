-- Four-eyes approvals: per-environment policies, change requests and their reviews.
-- Requests and reviews keep the names of their principals and survive their deletion.

CREATE TABLE approval_policies (
    environment_id TEXT PRIMARY KEY NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    required_approvals BIGINT NOT NULL,
    peer_review BOOLEAN NOT NULL,
    admin_override BOOLEAN NOT NULL,
    ttl_secs BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE change_requests (
    id TEXT PRIMARY KEY NOT NULL,
    portfolio_id TEXT NOT NULL,
    application_id TEXT NOT NULL,
    environment_id TEXT NOT NULL,
    feature_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    submitter_id TEXT NOT NULL,
    submitter_name TEXT NOT NULL,
    state TEXT NOT NULL,
    -- Bumped by every edit; only approvals of the current round count.
    round BIGINT NOT NULL,
    -- The policy the request is held to, taken at submission and at every edit.
    required_approvals BIGINT NOT NULL,
    peer_review BOOLEAN NOT NULL,
    admin_override BOOLEAN NOT NULL,
    overridden BOOLEAN NOT NULL,
    override_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    first_review_at BIGINT,
    decided_at BIGINT,
    applied_at BIGINT,
    applied_by TEXT,
    version BIGINT NOT NULL,
    -- The submitter's idempotency key: a retried submission returns the first request.
    client_request_id TEXT
);

CREATE UNIQUE INDEX change_requests_client_request ON change_requests (submitter_id, client_request_id);

CREATE INDEX change_requests_open ON change_requests (state, expires_at);
CREATE INDEX change_requests_environment ON change_requests (environment_id, id);
CREATE INDEX change_requests_submitter ON change_requests (submitter_id, id);
CREATE INDEX change_requests_created ON change_requests (created_at);

CREATE TABLE change_request_reviews (
    id TEXT PRIMARY KEY NOT NULL,
    request_id TEXT NOT NULL REFERENCES change_requests (id) ON DELETE CASCADE,
    round BIGINT NOT NULL,
    reviewer_id TEXT NOT NULL,
    reviewer_name TEXT NOT NULL,
    reviewer_role TEXT NOT NULL,
    verdict TEXT NOT NULL,
    comment TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Approvals come from distinct principals: one verdict per principal per round.
    UNIQUE (request_id, round, reviewer_id)
);

CREATE INDEX change_request_reviews_reviewer ON change_request_reviews (reviewer_id, created_at);
