"""recsys: a personalized recommendation engine with generative text features.

The core package: schemas, config, dataset io, importers, the synthetic shop, splits, metrics,
baselines and the CLI. Importing it stays cheap (no torch, no Ray) so `recsys --help` is instant.
"""

__version__ = "0.1.0"
