ALTER TABLE service_account_keys DROP COLUMN created_by;
ALTER TABLE service_accounts DROP COLUMN created_by;
