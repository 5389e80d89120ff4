"""Cache keys and the cached step results (checked JSON, never pickles)."""
