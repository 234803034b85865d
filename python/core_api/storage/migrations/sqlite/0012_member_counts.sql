-- How many workspaces each user belongs to, kept by triggers on workspace_members (every
-- path: creates, added members, deleted workspaces and users through their cascades), so
-- that the unfiltered total of GET /workspaces is one row read instead of a COUNT over the
-- user's memberships, which grew with the collection under writes (issue 8).
CREATE TABLE workspace_member_counts (
    user_id BIGINT NOT NULL PRIMARY KEY,
    n BIGINT NOT NULL
);
INSERT INTO workspace_member_counts (user_id, n)
    SELECT user_id, COUNT(*) FROM workspace_members GROUP BY user_id;
-- (Bodies keep their inner semicolons mid-line: the migration runner splits at line ends.)
CREATE TRIGGER workspace_members_count_insert AFTER INSERT ON workspace_members
BEGIN
    INSERT INTO workspace_member_counts (user_id, n) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET n = n + 1; END;
CREATE TRIGGER workspace_members_count_delete AFTER DELETE ON workspace_members
BEGIN
    UPDATE workspace_member_counts SET n = n - 1 WHERE user_id = OLD.user_id; END;
CREATE TRIGGER workspace_members_count_update AFTER UPDATE OF user_id ON workspace_members
BEGIN
    UPDATE workspace_member_counts SET n = n - 1 WHERE user_id = OLD.user_id; INSERT INTO
    workspace_member_counts (user_id, n) VALUES (NEW.user_id, 1)
    ON CONFLICT (user_id) DO UPDATE SET n = n + 1; END;
