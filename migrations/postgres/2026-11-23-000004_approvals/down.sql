DROP TABLE change_request_reviews;
DROP TABLE change_requests;
DROP TABLE approval_policies;
