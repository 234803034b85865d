-- Indexes that let a list page walk its scope in page order and stop after one page,
-- whatever the collection's size (the totals come from a cache; see web/totals.py).
-- A user's workspaces in id order, covering the role: replaces the user_id-only index.
DROP INDEX workspace_members_user;
CREATE INDEX workspace_members_user ON workspace_members (user_id, workspace_id, role);
-- Case-insensitive name sort (lists sort text by LOWER(column) on both dialects).
CREATE INDEX workspaces_name_ci ON workspaces (LOWER(name), id);
-- A workspace's live keys by id (the default sort; with the status columns, so that a
-- status count reads rows in id order) and by name; revoked keys never list.
CREATE INDEX api_keys_live ON api_keys (workspace_id, id, expires_at, grace_period_ends_at)
    WHERE revoked_at IS NULL;
CREATE INDEX api_keys_live_name_ci ON api_keys (workspace_id, LOWER(name), id)
    WHERE revoked_at IS NULL;
