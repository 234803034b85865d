-- Cluster jobs (purges today, webhook deliveries later) run on one worker at a time:
-- a worker runs a job only after it has taken the job's lease row until expires_at.
CREATE TABLE job_leases (
    name TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
