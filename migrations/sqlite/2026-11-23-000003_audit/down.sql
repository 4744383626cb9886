DROP INDEX audit_events_target_id;
ALTER TABLE service_accounts DROP COLUMN audit_writer;
