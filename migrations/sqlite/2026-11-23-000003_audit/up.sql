-- Audit queries by target name alone, and service accounts allowed to append audit events.
CREATE INDEX audit_events_target_id ON audit_events (target_id, seq);
ALTER TABLE service_accounts ADD COLUMN audit_writer BOOLEAN NOT NULL DEFAULT FALSE;
