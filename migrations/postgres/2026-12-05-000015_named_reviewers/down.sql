ALTER TABLE user_preferences DROP COLUMN digest_day;
ALTER TABLE user_preferences DROP COLUMN review_digest;
ALTER TABLE approval_policies DROP COLUMN require_requested_reviewer;
ALTER TABLE change_requests DROP COLUMN require_requested_reviewer;
ALTER TABLE change_requests DROP COLUMN requested_reviewers;
