"""Feature groups for the ranker: pure polars functions, registered once by name (registry.py)."""
