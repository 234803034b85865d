-- Pixel events, written in batches (COPY on PostgreSQL, executemany on SQLite). No
-- foreign key to pixel_sites on purpose (bulk insert speed): a deleted site's events are
-- removed by the sites' purge job. No raw IP or user agent is stored: visitor_id and
-- session_id are keyed hashes (daily salt), browser and device are parsed from the user
-- agent before it is discarded.
CREATE TABLE pixel_events (
    site_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    referrer_source TEXT,
    visitor_id BIGINT NOT NULL,
    session_id BIGINT,
    browser TEXT NOT NULL,
    device TEXT NOT NULL,
    props TEXT
);
CREATE INDEX pixel_events_site_ts ON pixel_events (site_id, ts);

-- One random salt per UTC day (day = epoch day number, hex text). The visitor hash key
-- is derived from it and the server secret; yesterday's is kept for sessions crossing
-- midnight and tomorrow's made ahead of time, older ones are deleted.
CREATE TABLE pixel_salts (
    day BIGINT NOT NULL PRIMARY KEY,
    salt TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Events dropped as bots or headless browsers: counted per site and UTC day, not stored.
CREATE TABLE pixel_bot_counts (
    site_id BIGINT NOT NULL,
    day BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (site_id, day)
);
