DROP INDEX users_active_username;
DROP INDEX users_role_username;
CREATE INDEX users_role_active ON users (role, active);
