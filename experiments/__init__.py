"""Experiment configs (TOML) and comparison."""
