-- Reviewers a submitter names (`users/{id}`, space-separated), and whether the request's policy
-- requires one of them among its approvers (copied from the policy like its other rules).
ALTER TABLE change_requests ADD COLUMN requested_reviewers TEXT NOT NULL DEFAULT '';
ALTER TABLE change_requests ADD COLUMN require_requested_reviewer BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE approval_policies ADD COLUMN require_requested_reviewer BOOLEAN NOT NULL DEFAULT FALSE;
-- A daily digest of the requests a user may review instead of one email each, and the UTC day
-- (days since 1970-01-01) its last digest covered.
ALTER TABLE user_preferences ADD COLUMN review_digest BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE user_preferences ADD COLUMN digest_day BIGINT NOT NULL DEFAULT 0;
