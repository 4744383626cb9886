//! The portable schema shared by both backends (see migrations/sqlite and migrations/postgres).

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Text,
        display_name -> Text,
        role -> Text,
        active -> Bool,
        must_change_password -> Bool,
        password_hash -> Nullable<Text>,
        search_text -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_login_at -> Nullable<BigInt>,
        last_seen_at -> Nullable<BigInt>,
        version -> BigInt,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        issued_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    login_throttle (subject) {
        subject -> Text,
        failures -> Integer,
        locked_until -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
        version -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    server_state (key) {
        key -> Text,
        value -> Text,
    }
}

diesel::table! {
    change_log (revision) {
        revision -> BigInt,
        entity_kind -> Text,
        entity_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    audit_events (seq) {
        seq -> BigInt,
        occurred_at -> BigInt,
        actor_id -> Nullable<Text>,
        actor_name -> Nullable<Text>,
        actor_role -> Nullable<Text>,
        action -> Text,
        target_type -> Text,
        target_id -> Nullable<Text>,
        before_json -> Nullable<Text>,
        after_json -> Nullable<Text>,
        outcome -> Text,
        detail -> Nullable<Text>,
        request_id -> Nullable<Text>,
        peer_addr -> Nullable<Text>,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    sessions,
    refresh_tokens,
    login_throttle,
    settings,
    server_state,
    change_log,
    audit_events,
);

diesel::table! {
    portfolios (id) {
        id -> Text,
        display_name -> Text,
        name_key -> Text,
        description -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        version -> BigInt,
    }
}

diesel::table! {
    applications (id) {
        id -> Text,
        portfolio_id -> Text,
        display_name -> Text,
        name_key -> Text,
        description -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        version -> BigInt,
    }
}

diesel::table! {
    environments (id) {
        id -> Text,
        application_id -> Text,
        display_name -> Text,
        name_key -> Text,
        description -> Text,
        production -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        version -> BigInt,
    }
}

diesel::table! {
    portfolio_groups (id) {
        id -> Text,
        portfolio_id -> Text,
        display_name -> Text,
        name_key -> Text,
        description -> Text,
        administrators -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        version -> BigInt,
    }
}

diesel::table! {
    group_members (group_id, principal_kind, principal_id) {
        group_id -> Text,
        principal_kind -> Text,
        principal_id -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    application_grants (group_id, application_id) {
        group_id -> Text,
        application_id -> Text,
        feature_permission -> Text,
    }
}

diesel::table! {
    environment_grants (group_id, environment_id) {
        group_id -> Text,
        environment_id -> Text,
        permissions -> Integer,
    }
}

diesel::table! {
    service_accounts (id) {
        id -> Text,
        display_name -> Text,
        description -> Text,
        portfolio_id -> Nullable<Text>,
        role -> Text,
        active -> Bool,
        created_at -> BigInt,
        updated_at -> BigInt,
        version -> BigInt,
        audit_writer -> Bool,
        created_by -> Nullable<Text>,
        provisioner -> Bool,
    }
}

diesel::table! {
    service_account_keys (id) {
        id -> Text,
        service_account_id -> Text,
        display_name -> Text,
        secret_hash -> Text,
        created_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        created_by -> Nullable<Text>,
    }
}

diesel::table! {
    approval_policies (environment_id) {
        environment_id -> Text,
        required_approvals -> BigInt,
        peer_review -> Bool,
        admin_override -> Bool,
        ttl_secs -> BigInt,
        updated_at -> BigInt,
        version -> BigInt,
        require_requested_reviewer -> Bool,
    }
}

diesel::table! {
    change_requests (id) {
        id -> Text,
        portfolio_id -> Text,
        application_id -> Text,
        environment_id -> Text,
        feature_key -> Text,
        kind -> Text,
        payload -> Text,
        title -> Text,
        description -> Text,
        submitter_id -> Text,
        submitter_name -> Text,
        state -> Text,
        round -> BigInt,
        required_approvals -> BigInt,
        peer_review -> Bool,
        admin_override -> Bool,
        overridden -> Bool,
        override_reason -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        expires_at -> BigInt,
        first_review_at -> Nullable<BigInt>,
        decided_at -> Nullable<BigInt>,
        applied_at -> Nullable<BigInt>,
        applied_by -> Nullable<Text>,
        version -> BigInt,
        client_request_id -> Nullable<Text>,
        requested_reviewers -> Text,
        require_requested_reviewer -> Bool,
    }
}

diesel::table! {
    change_request_reviews (id) {
        id -> Text,
        request_id -> Text,
        round -> BigInt,
        reviewer_id -> Text,
        reviewer_name -> Text,
        reviewer_role -> Text,
        verdict -> Text,
        comment -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    user_tokens (token_hash) {
        token_hash -> Text,
        user_id -> Text,
        purpose -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        superseded_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        template -> Text,
        recipient -> Text,
        user_id -> Nullable<Text>,
        subject -> Text,
        body -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        sent_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    rate_limits (key) {
        key -> Text,
        window_start -> BigInt,
        hits -> Integer,
    }
}

diesel::table! {
    idempotency_keys (scope, idempotency_key) {
        scope -> Text,
        idempotency_key -> Text,
        method -> Text,
        request_hash -> Text,
        created_at -> BigInt,
        response_body -> Nullable<Binary>,
        response_meta -> Nullable<Text>,
        standing -> Text,
    }
}

diesel::joinable!(applications -> portfolios (portfolio_id));
diesel::joinable!(environments -> applications (application_id));
diesel::joinable!(portfolio_groups -> portfolios (portfolio_id));
diesel::joinable!(group_members -> portfolio_groups (group_id));
diesel::joinable!(application_grants -> portfolio_groups (group_id));
diesel::joinable!(environment_grants -> portfolio_groups (group_id));
diesel::joinable!(service_account_keys -> service_accounts (service_account_id));
diesel::joinable!(change_request_reviews -> change_requests (request_id));
diesel::joinable!(approval_policies -> environments (environment_id));
diesel::allow_tables_to_appear_in_same_query!(
    portfolios,
    applications,
    environments,
    portfolio_groups,
    group_members,
    application_grants,
    environment_grants,
    service_accounts,
    service_account_keys,
    approval_policies,
    change_requests,
    change_request_reviews,
);

diesel::table! {
    user_totp (user_id) {
        user_id -> Text,
        secret -> Text,
        created_at -> BigInt,
        confirmed_at -> Nullable<BigInt>,
        last_step -> BigInt,
    }
}

diesel::table! {
    user_recovery_codes (code_hash) {
        code_hash -> Text,
        user_id -> Text,
        created_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    user_sign_in (user_id) {
        user_id -> Text,
        sso_only -> Bool,
        second_factor_due_at -> Nullable<BigInt>,
        second_factor_overdue -> Bool,
    }
}

diesel::table! {
    user_identities (issuer, subject) {
        issuer -> Text,
        subject -> Text,
        user_id -> Text,
        provider -> Text,
        email -> Nullable<Text>,
        created_at -> BigInt,
        last_sign_in_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    sso_logins (state_hash) {
        state_hash -> Text,
        provider -> Text,
        nonce -> Text,
        pkce_verifier -> Text,
        client_challenge -> Text,
        return_to -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    sso_handoffs (code_hash) {
        code_hash -> Text,
        user_id -> Text,
        provider -> Text,
        client_challenge -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    scim_users (user_id) {
        user_id -> Text,
        user_name -> Text,
        user_name_key -> Text,
        external_id -> Nullable<Text>,
        extra -> Text,
        version -> BigInt,
        deleted -> Bool,
    }
}

diesel::table! {
    scim_groups (group_id) {
        group_id -> Text,
        external_id -> Nullable<Text>,
        version -> BigInt,
    }
}

diesel::table! {
    user_preferences (user_id) {
        user_id -> Text,
        review_emails -> Bool,
        decision_emails -> Bool,
        updated_at -> BigInt,
        review_digest -> Bool,
        digest_day -> BigInt,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        display_name -> Text,
        url -> Text,
        format -> Text,
        event_types -> Text,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<BigInt>,
        enabled -> Bool,
        cursor_seq -> BigInt,
        version -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        webhook_id -> Text,
        first_seq -> BigInt,
        last_seq -> BigInt,
        event_type -> Text,
        payload -> Text,
        state -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<BigInt>,
        last_attempt_at -> Nullable<BigInt>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
        delivered_at -> Nullable<BigInt>,
        lease_token -> Nullable<Text>,
    }
}

diesel::table! {
    audit_checkpoints (seq) {
        seq -> BigInt,
        hash -> Text,
        events -> BigInt,
        archive -> Text,
        archive_sha256 -> Text,
        created_at -> BigInt,
    }
}

diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));
diesel::allow_tables_to_appear_in_same_query!(webhooks, webhook_deliveries);
