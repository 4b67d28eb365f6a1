"""Importers: each maps one source format onto the data contract (recsys.core.schemas)."""
