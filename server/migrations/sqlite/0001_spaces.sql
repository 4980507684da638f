CREATE TABLE spaces (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('scheduled', 'live', 'ended')),
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    scheduled_at INTEGER,
    started_at INTEGER,
    ended_at INTEGER,
    peak_listeners INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX spaces_by_state ON spaces (state, created_at);
