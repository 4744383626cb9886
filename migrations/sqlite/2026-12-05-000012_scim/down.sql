DROP TABLE scim_groups;
DROP TABLE scim_users;
ALTER TABLE service_accounts DROP COLUMN provisioner;
