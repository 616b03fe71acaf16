"""Per-cluster sync workers, health probing and status reporting."""
