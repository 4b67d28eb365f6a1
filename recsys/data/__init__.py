"""Data in: importers for event logs, MIND and MovieLens, the synthetic shop and news site, and
`recsys data describe`. Stands on recsys.core only."""
