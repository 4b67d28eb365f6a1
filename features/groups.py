"""Every feature group, by name: importing this module imports each module that registers groups
(the registry itself imports none of them, so groups and registry do not import each other)."""

from __future__ import annotations

from features import behavioural, blurbs, collaborative, context, text  # noqa: F401 (imported for the groups each registers)
from features.registry import REGISTRY, FeatureGroup
from recsys.core.errors import RecsysInputError


def load_all() -> dict[str, FeatureGroup]:
    """The registry, every group registered (their modules are imported above)."""
    return REGISTRY


def resolve(names: list[str]) -> list[FeatureGroup]:
    """Groups by name, in order; an unknown name is a RecsysInputError listing the known ones."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise RecsysInputError(f"unknown feature group(s) {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in names]
