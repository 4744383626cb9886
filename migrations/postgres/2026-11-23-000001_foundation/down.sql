DROP TABLE audit_events;
DROP TABLE change_log;
DROP TABLE server_state;
DROP TABLE settings;
DROP TABLE login_throttle;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE users;
