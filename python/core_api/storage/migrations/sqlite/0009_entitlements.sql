-- Entitlements (docs/entitlements.md): usage counters, the usage ledger, threshold
-- notices and per-workspace overrides. Timestamps are epoch milliseconds.

-- One counter per workspace, feature and period: period_start is the UTC start of the
-- feature's current period (computed, so a new period starts from zero without a cron
-- job), or 0 for features without a period. Usage is one conditional upsert on this row.
CREATE TABLE entitlement_usage (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    used BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, feature, period_start)
);

-- Every recorded usage, with its metadata and the result it got; a caller's event_id is
-- unique per workspace, feature and period, so a retried event counts once and gets the
-- first result back. Purged after expires_at (the end of the period, or 35 days).
CREATE TABLE entitlement_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    event_id TEXT,
    quantity BIGINT NOT NULL,
    used_after BIGINT NOT NULL,
    limit_value BIGINT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX entitlement_events_dedup
    ON entitlement_events (workspace_id, feature, period_start, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX entitlement_events_expiry ON entitlement_events (expires_at);

-- The 80 % and 100 % notices sent (level 80 or 100): the insert that succeeds publishes,
-- so each is published once per period whatever the number of processes.
CREATE TABLE entitlement_notices (
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    level INTEGER NOT NULL CHECK (level IN (80, 100)),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, feature, period_start, level)
);

-- Operators' overrides (core-api entitlements set|grant): kind 'set' replaces the tier's
-- limit (the newest live one wins), kind 'grant' adds to it; either may expire.
CREATE TABLE entitlement_overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    feature TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('set', 'grant')),
    amount BIGINT NOT NULL,
    expires_at BIGINT,
    note TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX entitlement_overrides_workspace ON entitlement_overrides (workspace_id, feature);
