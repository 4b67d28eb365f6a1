"""The feature registry: every feature group is declared once, by name, with dtypes and a line of
description. Experiment configs list group names; an unknown name fails at config load.

A group is a pure function `compute(ctx) -> pl.DataFrame` returning one row per target row, keyed
by (request_id, item_id), with exactly its declared feature columns. Point-in-time rule: a feature
of a target row may only use log events with `ts` strictly before that row's `ts`.

A group may also have an `at_moment(ctx) -> {feature: values}` twin that reads the log's running
counters (`features.state.LogState`) instead of the log: the same features for targets later than
every logged event (serving and batch scoring), for the cost of lookups. Both must give identical
values; tests/test_moment.py checks every group that has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

import polars as pl

from recsys.errors import RecsysInputError

if TYPE_CHECKING:
    from features.state import LogState

KEYS = ("request_id", "item_id")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    dtype: pl.DataType
    description: str


@dataclass(frozen=True)
class FeatureContext:
    """What a feature group may look at.

    targets: request_id, user_id, item_id, ts (the rows to featurise; ts is when the ranking happens)
    log: past events in the events schema (the group must filter to ts < target ts itself)
    items: the catalog (items schema)
    artefacts: trained stage outputs by name, e.g. "interest" (a scorer), "blurbs" (a frame)
    totals: optional `features.pointintime.global_totals` of the *whole* log. Given, `log` may be
      cut down to the events of the targets' users and items (what online serving does); the
      global rates come from here. None: computed from `log`.
    """

    targets: pl.DataFrame
    log: pl.DataFrame
    items: pl.DataFrame
    artefacts: dict[str, Any] = field(default_factory=dict)
    totals: pl.DataFrame | None = None


@dataclass(frozen=True)
class MomentContext:
    """What an `at_moment` twin may look at: targets (request_id, user_id, item_id, ts) all later
    than every event in `state`, their ts as UTC microseconds, the state, and the artefacts."""

    targets: pl.DataFrame
    ts: np.ndarray
    state: LogState
    artefacts: dict[str, Any] = field(default_factory=dict)


MomentValues = dict[str, "np.ndarray | pl.Series"]


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    specs: tuple[FeatureSpec, ...]
    compute: Callable[[FeatureContext], pl.DataFrame]
    requires: tuple[str, ...] = ()  # artefact names that must be present in the context
    at_moment: Callable[[MomentContext], MomentValues] | None = None
    # a derived group reads the other groups' features of the same request (not the log): it runs
    # after them, on both paths, so it needs no twin
    derive: Callable[[pl.DataFrame], pl.DataFrame] | None = None

    @property
    def has_twin(self) -> bool:
        return self.at_moment is not None or self.derive is not None

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]


REGISTRY: dict[str, FeatureGroup] = {}


def register(name: str, specs: list[FeatureSpec], requires: tuple[str, ...] = ()) -> Callable[[Callable[[FeatureContext], pl.DataFrame]], Callable[[FeatureContext], pl.DataFrame]]:
    """Decorator: declare a feature group once, by name."""

    def wrap(fn: Callable[[FeatureContext], pl.DataFrame]) -> Callable[[FeatureContext], pl.DataFrame]:
        if name in REGISTRY:
            raise ValueError(f"feature group '{name}' is registered twice")
        REGISTRY[name] = FeatureGroup(name, tuple(specs), fn, requires)
        return fn

    return wrap


def register_derived(name: str, specs: list[FeatureSpec]) -> Callable[[Callable[[pl.DataFrame], pl.DataFrame]], Callable[[pl.DataFrame], pl.DataFrame]]:
    """Decorator: a group computed from the other groups' columns of the same request
    (`derive(frame) -> frame` keyed by request_id, item_id; absent input columns give nulls)."""

    def wrap(fn: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[pl.DataFrame], pl.DataFrame]:
        if name in REGISTRY:
            raise ValueError(f"feature group '{name}' is registered twice")

        def not_from_log(ctx: FeatureContext) -> pl.DataFrame:
            raise AssertionError(f"bug: derived group '{name}' is computed from features, not from the log")

        REGISTRY[name] = FeatureGroup(name, tuple(specs), not_from_log, derive=fn)
        return fn

    return wrap


def _derived(groups: list[FeatureGroup], out: pl.DataFrame) -> pl.DataFrame:
    """`out` + the derived groups' columns, computed from `out` (after every other group)."""
    for group in groups:
        if group.derive is None:
            continue
        frame = group.derive(out)
        expected = {*KEYS, *group.feature_names}
        if set(frame.columns) != expected or frame.height != out.height:
            raise AssertionError(f"bug: derived group '{group.name}' returned {frame.columns} x {frame.height}")
        out = out.with_columns(frame.select(pl.col(s.name).cast(s.dtype) for s in group.specs))
    return out


def at_moment(name: str) -> Callable[[Callable[[MomentContext], MomentValues]], Callable[[MomentContext], MomentValues]]:
    """Decorator: the counters-based twin of the registered group `name` (same features, same values)."""

    def wrap(fn: Callable[[MomentContext], MomentValues]) -> Callable[[MomentContext], MomentValues]:
        group = REGISTRY.get(name)
        if group is None or group.at_moment is not None:
            raise ValueError(f"at_moment('{name}'): register the group first, and give it one twin")
        REGISTRY[name] = replace(group, at_moment=fn)
        return fn

    return wrap


def load_all() -> dict[str, FeatureGroup]:
    """Import every module that registers groups, then return the registry."""
    import features.behavioural  # noqa: F401
    import features.blurbs  # noqa: F401
    import features.collaborative  # noqa: F401
    import features.context  # noqa: F401
    import features.text  # noqa: F401

    return REGISTRY


def resolve(names: list[str]) -> list[FeatureGroup]:
    """Groups by name, in order; an unknown name is a RecsysInputError listing the known ones."""
    registry = load_all()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise RecsysInputError(f"unknown feature group(s) {unknown}; known: {sorted(registry)}")
    return [registry[n] for n in names]


def compute_features(groups: list[FeatureGroup], ctx: FeatureContext) -> pl.DataFrame:
    """targets + every group's columns, cast to the declared dtypes; checks each group's output."""
    # a target column named like a feature (e.g. `position`) is replaced by the feature
    names = [n for g in groups for n in g.feature_names]
    out = ctx.targets.drop([c for c in ctx.targets.columns if c in names])
    for group in groups:
        missing = [a for a in group.requires if a not in ctx.artefacts]
        if missing:
            raise RecsysInputError(f"feature group '{group.name}' needs stage output(s) {missing}")
        if group.derive is not None:
            continue
        frame = group.compute(ctx)
        expected = {*KEYS, *group.feature_names}
        if set(frame.columns) != expected:
            raise AssertionError(f"bug: group '{group.name}' returned {frame.columns}, declared {sorted(expected)}")
        if frame.height != ctx.targets.height:
            raise AssertionError(f"bug: group '{group.name}' returned {frame.height} rows for {ctx.targets.height} targets")
        frame = frame.select(*KEYS, *(pl.col(s.name).cast(s.dtype) for s in group.specs))
        out = out.join(frame, on=list(KEYS), how="left", maintain_order="left")
    return _derived(groups, out)


def compute_at_moment(groups: list[FeatureGroup], ctx: MomentContext) -> pl.DataFrame:
    """What `compute_features` returns, from the groups' `at_moment` twins (each must have one)."""
    names = [n for g in groups for n in g.feature_names]
    out = ctx.targets.drop([c for c in ctx.targets.columns if c in names])
    columns = []
    for group in groups:
        missing = [a for a in group.requires if a not in ctx.artefacts]
        if missing:
            raise RecsysInputError(f"feature group '{group.name}' needs stage output(s) {missing}")
        if group.derive is not None:
            continue
        if group.at_moment is None:
            raise ValueError(f"feature group '{group.name}' has no at_moment twin")
        values = group.at_moment(ctx)
        if set(values) != set(group.feature_names):
            raise AssertionError(f"bug: at_moment '{group.name}' returned {sorted(values)}, declared {group.feature_names}")
        for spec in group.specs:
            column = pl.Series(spec.name, values[spec.name])
            if column.len() != ctx.targets.height:
                raise AssertionError(f"bug: at_moment '{group.name}' returned {column.len()} rows for {ctx.targets.height} targets")
            columns.append(column.cast(spec.dtype))
    return _derived(groups, out.with_columns(columns))
