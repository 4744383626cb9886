-- Service accounts allowed to append audit events.
ALTER TABLE service_accounts ADD COLUMN audit_writer BOOLEAN NOT NULL DEFAULT FALSE;
