"""The floor every layer stands on: errors, the table schemas, dataset io, validation, the config
dataclasses, splits, metrics, ranking targets, Ray and MLflow-store helpers, console/log routing.
Imports nothing of features, models, serving or the pipeline (import-linter contracts)."""
