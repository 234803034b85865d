-- Pixel sites: the domains a workspace tracks, with their pixel settings. Booleans are
-- 0/1 integers and JSON is text, as everywhere else (one SQL for both dialects).
CREATE TABLE pixel_sites (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    domain TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    features TEXT NOT NULL DEFAULT '{"pageviews":true,"events":true,"sessions":true}',
    sample_rate DOUBLE PRECISION NOT NULL DEFAULT 1.0 CHECK (sample_rate >= 0 AND sample_rate <= 1),
    allowed_origins TEXT NOT NULL DEFAULT '[]',
    honor_dnt INTEGER NOT NULL DEFAULT 1 CHECK (honor_dnt IN (0, 1)),
    excluded_paths TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- A workspace's sites in id order (the list's default sort) and by name.
CREATE INDEX pixel_sites_workspace ON pixel_sites (workspace_id, id);
CREATE INDEX pixel_sites_workspace_name_ci ON pixel_sites (workspace_id, LOWER(name), id);

-- Stats of one completed day of one site, in one timezone (the workspace's when it was
-- computed): JSON totals, breakdowns and the day's hourly series. A day is final once it
-- ended; a timezone change simply misses these rows and computes new ones.
CREATE TABLE pixel_stats_days (
    site_id BIGINT NOT NULL REFERENCES pixel_sites (id) ON DELETE CASCADE,
    timezone TEXT NOT NULL,
    day TEXT NOT NULL,
    payload TEXT NOT NULL,
    computed_at BIGINT NOT NULL,
    PRIMARY KEY (site_id, timezone, day)
);

-- Sites deleted (directly or with their workspace) whose events are still to be removed:
-- pixel_events has no foreign key (bulk insert speed), so a cluster job deletes a purged
-- site's events in bounded batches, then this row.
CREATE TABLE pixel_site_purges (
    site_id BIGINT NOT NULL PRIMARY KEY,
    deleted_at BIGINT NOT NULL
);
-- (Bodies keep their inner semicolons mid-line: the migration runner splits at line ends.)
CREATE TRIGGER pixel_sites_purge AFTER DELETE ON pixel_sites
BEGIN
    INSERT OR IGNORE INTO pixel_site_purges (site_id, deleted_at)
    VALUES (OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)); END;
