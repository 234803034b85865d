-- Webhooks: endpoints, the event outbox, one delivery per (event, endpoint) and one
-- attempt row per HTTP request made. Timestamps are epoch milliseconds.
-- Endpoints and events carry workspace_id without a foreign key on purpose: a
-- workspace.deleted event is still delivered to the deleted workspace's endpoints; the
-- retention job removes orphaned endpoints once nothing is left to deliver.
CREATE TABLE webhook_endpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    -- Signing secrets sealed with AES-GCM (never plain); the previous one keeps signing
    -- until previous_secret_expires_at after a rotation.
    secret_sealed BLOB NOT NULL,
    previous_secret_sealed BLOB,
    previous_secret_expires_at BIGINT,
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    disabled_reason TEXT,
    success_count BIGINT NOT NULL DEFAULT 0,
    failure_count BIGINT NOT NULL DEFAULT 0,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since BIGINT,
    last_delivery_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_workspace ON webhook_endpoints (workspace_id, id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    workspace_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    -- The envelope exactly as delivered (JSON text, encoded once at publish).
    payload TEXT NOT NULL,
    -- A publisher's own event id (POST /api/v1/events "id"): one event per id and workspace.
    dedup_key TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_dedup ON events (workspace_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_created_at ON events (created_at);

CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id BIGINT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'success', 'failed')),
    attempt INTEGER NOT NULL DEFAULT 0,
    manual_retries INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    -- The claim: a worker sends only while it holds the row's lease.
    locked_until BIGINT,
    locked_by TEXT,
    response_code INTEGER,
    delivered_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- What is due, in the order the claim reads it.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, id)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    status_code INTEGER,
    response_body TEXT,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempt);
