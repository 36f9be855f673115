-- Look-alike names (spec 14): the Unicode TR39 skeleton of each agent's name and each user's
-- id, so that a new name that looks like an existing one is found in one indexed lookup. Keep
-- in step with ../postgres.
-- Rows from before this migration are filled in when the authority opens the database
-- (skeletons are computed in Rust, not in SQL).
ALTER TABLE agents ADD COLUMN name_skeleton TEXT;
CREATE INDEX agents_name_skeleton ON agents (name_skeleton);
ALTER TABLE users ADD COLUMN user_id_skeleton TEXT;
CREATE INDEX users_user_id_skeleton ON users (user_id_skeleton);
