-- The claim a webhook delivery is leased to: a replica whose claim or record was cut off by a
-- database outage (committed or not, it cannot tell) releases or records by this token once the
-- database is back, instead of leaving the subscription waiting for the lease to run out.
ALTER TABLE webhook_deliveries ADD COLUMN lease_token TEXT;
