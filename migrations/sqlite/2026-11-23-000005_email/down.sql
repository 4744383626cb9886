DROP TABLE rate_limits;
DROP TABLE outbox;
DROP TABLE user_tokens;
