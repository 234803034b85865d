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
CREATE FUNCTION workspace_members_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE workspace_member_counts SET n = n - 1 WHERE user_id = OLD.user_id; END IF; IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO workspace_member_counts (user_id, n) VALUES (NEW.user_id, 1)
        ON CONFLICT (user_id) DO UPDATE SET n = workspace_member_counts.n + 1; END IF; RETURN NULL; END; $$;
CREATE TRIGGER workspace_members_count AFTER INSERT OR DELETE OR UPDATE OF user_id
    ON workspace_members FOR EACH ROW EXECUTE FUNCTION workspace_members_count();
