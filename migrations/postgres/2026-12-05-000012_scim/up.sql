-- Provisioning service accounts (SCIM): their keys provision users and groups, nothing else.
ALTER TABLE service_accounts ADD COLUMN provisioner BOOLEAN NOT NULL DEFAULT FALSE;
-- What SCIM knows of a user beside FluxGate's own columns: the userName as the provider sent
-- it (FluxGate's username may differ: it allows fewer characters), its externalId, the
-- attributes FluxGate does not model (as sent, JSON), and a version for the resource's ETag.
CREATE TABLE scim_users (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_name TEXT NOT NULL,
    user_name_key TEXT NOT NULL UNIQUE,
    external_id TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    version BIGINT NOT NULL DEFAULT 1,
    -- Deleted through SCIM: the user is deactivated here and no longer a SCIM resource.
    deleted BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX scim_users_external_id ON scim_users (external_id);
-- What SCIM knows of a portfolio group: its externalId, and a version for the ETag.
CREATE TABLE scim_groups (
    group_id TEXT PRIMARY KEY NOT NULL REFERENCES portfolio_groups (id) ON DELETE CASCADE,
    external_id TEXT,
    version BIGINT NOT NULL DEFAULT 1
);
