"""paperline: research-paper methods as versioned, gated, tracked and promoted models."""

__version__ = "0.1.0"
