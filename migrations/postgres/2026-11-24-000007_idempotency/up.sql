-- Idempotency keys: a client names a mutating call with an `idempotency-key` header so that a
-- retry (after a time-out, say) gets the first call's outcome instead of writing twice. The key
-- is reserved in the transaction of the call's write, so a retry can never repeat a committed
-- write; the reply is recorded just after, and replayed byte for byte.
CREATE TABLE idempotency_keys (
    -- The caller the key belongs to (a user or service account id): keys are per caller.
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- The method and the SHA-256 of the request message: a key reused for another request is
    -- refused.
    method TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The recorded reply: the response message frames and the status trailers (JSON), null
    -- until recorded.
    response_body BYTEA,
    response_meta TEXT,
    PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
