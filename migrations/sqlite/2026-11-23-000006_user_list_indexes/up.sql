-- ListUsers filters by role or active state and pages in username order: these indexes serve
-- each filter as a range scan in that order, so a page costs the same at any number of users
-- (the old (role, active) index made the database sort every matching user for each page).
DROP INDEX users_role_active;
CREATE INDEX users_role_username ON users (role, username);
CREATE INDEX users_active_username ON users (active, username);
