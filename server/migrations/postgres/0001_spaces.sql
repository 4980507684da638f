CREATE TABLE spaces (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('scheduled', 'live', 'ended')),
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    scheduled_at BIGINT,
    started_at BIGINT,
    ended_at BIGINT,
    peak_listeners BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX spaces_by_state ON spaces (state, created_at);
