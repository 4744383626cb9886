-- The access model: portfolios -> applications -> environments, portfolio groups with their
-- members and grants, service accounts and their API keys (stored as SHA-256 only).

CREATE TABLE portfolios (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE applications (
    id TEXT PRIMARY KEY NOT NULL,
    portfolio_id TEXT NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    UNIQUE (portfolio_id, name_key)
);

CREATE TABLE environments (
    id TEXT PRIMARY KEY NOT NULL,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    description TEXT NOT NULL,
    production BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    UNIQUE (application_id, name_key)
);

CREATE TABLE portfolio_groups (
    id TEXT PRIMARY KEY NOT NULL,
    portfolio_id TEXT NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    description TEXT NOT NULL,
    administrators BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    UNIQUE (portfolio_id, name_key)
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES portfolio_groups (id) ON DELETE CASCADE,
    principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'service_account')),
    principal_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, principal_kind, principal_id)
);
CREATE INDEX group_members_principal ON group_members (principal_id);

CREATE TABLE application_grants (
    group_id TEXT NOT NULL REFERENCES portfolio_groups (id) ON DELETE CASCADE,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    feature_permission TEXT NOT NULL CHECK (feature_permission IN ('CREATE', 'CREATE_EDIT_DELETE')),
    PRIMARY KEY (group_id, application_id)
);
CREATE INDEX application_grants_application ON application_grants (application_id);

-- permissions is a bit set: READ 1, LOCK 2, UNLOCK 4, CHANGE_VALUE 8.
CREATE TABLE environment_grants (
    group_id TEXT NOT NULL REFERENCES portfolio_groups (id) ON DELETE CASCADE,
    environment_id TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    permissions INTEGER NOT NULL,
    PRIMARY KEY (group_id, environment_id)
);
CREATE INDEX environment_grants_environment ON environment_grants (environment_id);

CREATE TABLE service_accounts (
    id TEXT PRIMARY KEY NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    portfolio_id TEXT REFERENCES portfolios (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('requester', 'approver', 'team_admin')),
    active BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX service_accounts_portfolio ON service_accounts (portfolio_id);

CREATE TABLE service_account_keys (
    id TEXT PRIMARY KEY NOT NULL,
    service_account_id TEXT NOT NULL REFERENCES service_accounts (id) ON DELETE CASCADE,
    display_name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX service_account_keys_account ON service_account_keys (service_account_id);
