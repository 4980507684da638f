-- What a space carried, kept once it has ended (the live counters go away).
ALTER TABLE spaces ADD COLUMN packets BIGINT NOT NULL DEFAULT 0;
ALTER TABLE spaces ADD COLUMN duration_ms BIGINT NOT NULL DEFAULT 0;
