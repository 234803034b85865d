-- SEO reports (docs/seo.md): one row per submitted report with its four optional scores
-- (0..100) and its issue counts by severity; its issues in seo_issues. Issues carry
-- their report's workspace, url and created_at, so that every list reads one table along
-- one index. severity is a level: 1 info, 2 notice, 3 warning, 4 error.
CREATE TABLE seo_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    performance INTEGER CHECK (performance BETWEEN 0 AND 100),
    accessibility INTEGER CHECK (accessibility BETWEEN 0 AND 100),
    best_practices INTEGER CHECK (best_practices BETWEEN 0 AND 100),
    seo INTEGER CHECK (seo BETWEEN 0 AND 100),
    errors INTEGER NOT NULL DEFAULT 0,
    warnings INTEGER NOT NULL DEFAULT 0,
    notices INTEGER NOT NULL DEFAULT 0,
    infos INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
-- Newest first in a workspace (and date ranges); one URL's reports (filter, history).
CREATE INDEX seo_reports_workspace_created ON seo_reports (workspace_id, created_at, id);
CREATE INDEX seo_reports_workspace_url ON seo_reports (workspace_id, url, created_at, id);

CREATE TABLE seo_issues (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    report_id BIGINT NOT NULL REFERENCES seo_reports (id) ON DELETE CASCADE,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    issue_type TEXT NOT NULL,
    severity INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    element TEXT NOT NULL,
    details TEXT,
    created_at BIGINT NOT NULL
);
-- A page of issues costs the same at any size: each filter (or sort) of the list walks
-- its own index in (created_at, id) order within the workspace.
CREATE INDEX seo_issues_report ON seo_issues (report_id, id);
CREATE INDEX seo_issues_workspace_created ON seo_issues (workspace_id, created_at, id);
CREATE INDEX seo_issues_workspace_severity ON seo_issues (workspace_id, severity, created_at, id);
CREATE INDEX seo_issues_workspace_type ON seo_issues (workspace_id, issue_type, created_at, id);
CREATE INDEX seo_issues_workspace_url ON seo_issues (workspace_id, url, created_at, id);

-- Exact list totals without a COUNT over a workspace's reports or issues: kept in the
-- transaction that stores a report (the workspace's row first, so concurrent reports of
-- one workspace queue there and never deadlock on the day or per-type rows).
CREATE TABLE seo_totals (
    workspace_id BIGINT NOT NULL PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    reports BIGINT NOT NULL,
    issues BIGINT NOT NULL
);
-- Per UTC day (its start, epoch ms): reports and issues by severity, so that a date-range
-- total sums days and counts only the two partial days at its ends.
CREATE TABLE seo_days (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    day BIGINT NOT NULL,
    reports BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    warnings BIGINT NOT NULL,
    notices BIGINT NOT NULL,
    infos BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, day)
);
CREATE TABLE seo_issue_counts (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    issue_type TEXT NOT NULL,
    severity INTEGER NOT NULL,
    issues BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, issue_type, severity)
);
