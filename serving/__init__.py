"""Serving: the Ray Serve app and batch scoring (one Scorer for both)."""
