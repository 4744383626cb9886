-- What a user wants to be told by email (a user without a row wants everything).
CREATE TABLE user_preferences (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    review_emails BOOLEAN NOT NULL DEFAULT TRUE,
    decision_emails BOOLEAN NOT NULL DEFAULT TRUE,
    updated_at BIGINT NOT NULL
);
