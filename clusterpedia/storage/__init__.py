"""Storage: schema, batched writer and query compiler for SQLite, PostgreSQL and MySQL."""
