"""Every feature group, by name: importing this module imports each module that registers groups
(the registry itself imports none of them, so groups and registry do not import each other)."""

from __future__ import annotations

import features.behavioural
import features.blurbs
import features.collaborative
import features.context
import features.text
from features.registry import REGISTRY, FeatureGroup
from recsys.core.errors import RecsysInputError

MODULES = (features.behavioural, features.blurbs, features.collaborative, features.context, features.text)


def load_all() -> dict[str, FeatureGroup]:
    """The registry, every group registered (their modules are imported above)."""
    return REGISTRY


def resolve(names: list[str]) -> list[FeatureGroup]:
    """Groups by name, in order; an unknown name is a RecsysInputError listing the known ones."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise RecsysInputError(f"unknown feature group(s) {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n] for n in names]
