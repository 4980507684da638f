-- Private spaces admit only listeners with a token for the space.
ALTER TABLE spaces ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
