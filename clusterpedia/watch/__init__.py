"""Watch over the change log: per-event filters and the per-process feed that fans out."""
