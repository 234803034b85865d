-- MCP gateway (docs/mcp.md). Timestamps are epoch milliseconds.

-- The MCP servers a key may use: a JSON array of server ids, or NULL for every server
-- its workspace may use.
ALTER TABLE api_keys ADD COLUMN mcp_servers TEXT;

-- The audit log: one row per tool call or resource read through the gateway (REST or
-- /api/v1/mcp), written in batches by each process. arguments is kept only when the
-- registry says so ([gateway] audit_arguments); deleted with the workspace.
CREATE TABLE mcp_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id BIGINT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    key_id BIGINT,
    user_id BIGINT,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    kind TEXT NOT NULL,
    transport TEXT NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    error TEXT,
    arguments TEXT,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX mcp_audit_workspace ON mcp_audit (workspace_id, created_at);
CREATE INDEX mcp_audit_created ON mcp_audit (created_at);
