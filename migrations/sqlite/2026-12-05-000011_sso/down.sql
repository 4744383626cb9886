DROP TABLE sso_handoffs;
DROP TABLE sso_logins;
DROP TABLE user_identities;
DROP TABLE user_sign_in;
