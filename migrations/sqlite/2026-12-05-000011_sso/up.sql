-- How a user signs in, beside their password: whether they may use one at all (an account
-- created by an identity provider has none), and the second factor their role requires, with
-- the deadline for enrolling it and whether that deadline has passed.
CREATE TABLE user_sign_in (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sso_only BOOLEAN NOT NULL DEFAULT FALSE,
    second_factor_due_at BIGINT,
    second_factor_overdue BOOLEAN NOT NULL DEFAULT FALSE
);
-- An identity at an OpenID provider (issuer and subject) linked to one user.
CREATE TABLE user_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    email TEXT,
    created_at BIGINT NOT NULL,
    last_sign_in_at BIGINT,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);
-- A sign-in sent to a provider and not back yet: the state (by digest), the nonce and PKCE
-- verifier FluxGate sent, and the challenge of the client that will collect the session.
CREATE TABLE sso_logins (
    state_hash TEXT PRIMARY KEY NOT NULL,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    client_challenge TEXT NOT NULL,
    return_to TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
-- A sign-in the provider vouched for, waiting for its client to collect the session with the
-- verifier of its challenge (single use, short-lived, by digest).
CREATE TABLE sso_handoffs (
    code_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    client_challenge TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
