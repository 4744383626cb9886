ALTER TABLE service_accounts DROP COLUMN audit_writer;
