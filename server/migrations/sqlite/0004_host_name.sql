-- The name people see for the host (the token's identity is often "admin").
ALTER TABLE spaces ADD COLUMN host_name TEXT;
