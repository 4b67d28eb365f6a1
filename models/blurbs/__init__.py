"""Generated item blurbs (issue 5): fine-tuned generator, Ray Data batch generation behind a cache,
safety checks with extractive fallback, quality report. Heavy libraries load inside the functions."""

from models.blurbs.config import BlurbConfig
from models.blurbs.stage import BLURBS_SCHEMA, run

__all__ = ["BLURBS_SCHEMA", "BlurbConfig", "run"]
