"""The audit and lineage store: its tables and its locks."""
