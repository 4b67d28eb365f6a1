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

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from recsys.core.errors import RecsysInputError
from recsys.core.stopwatch import stage

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
    # what several groups of one call read (the global click rate at each row's moment): see `once`
    shared: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        """`make()`, made on the first ask for `key` in this call and shared by every later ask."""
        if key not in self.shared:
            self.shared[key] = make()
        return self.shared[key]

    @functools.cached_property
    def item_ids(self) -> list[str]:
        """targets' item_id as a list, made once for every group that reads it."""
        return self.targets["item_id"].to_list()  # type: ignore[no-any-return]

    @functools.cached_property
    def user_ids(self) -> list[str]:
        """targets' user_id as a list, made once for every group that reads it."""
        return self.targets["user_id"].to_list()  # type: ignore[no-any-return]


MomentValues = dict[str, "np.ndarray | pl.Series"]


@dataclass(frozen=True)
class Columns:
    """What a numpy `derive_values` reads: feature values as float64 (each already rounded
    through its declared dtype; NaN where null), where they are null, and each row's request as
    an integer code (rows of one request share it)."""

    values: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray]  # bool masks, only for columns that have nulls
    request: np.ndarray  # int64
    requests: int  # how many distinct codes


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
    # the same in numpy for `moment_features` (serving, batch scoring): a request's few hundred
    # rows cost a dozen polars window passes otherwise; tests/test_moment.py checks both agree
    derive_values: Callable[[Columns], MomentValues] | None = None

    @property
    def has_twin(self) -> bool:
        return self.at_moment is not None or self.derive is not None

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.specs]


REGISTRY: dict[str, FeatureGroup] = {}


def register(
    name: str, specs: list[FeatureSpec], requires: tuple[str, ...] = ()
) -> Callable[[Callable[[FeatureContext], pl.DataFrame]], Callable[[FeatureContext], pl.DataFrame]]:
    """Decorator: declare a feature group once, by name."""

    def wrap(fn: Callable[[FeatureContext], pl.DataFrame]) -> Callable[[FeatureContext], pl.DataFrame]:
        if name in REGISTRY:
            raise ValueError(f"feature group '{name}' is registered twice")
        REGISTRY[name] = FeatureGroup(name, tuple(specs), fn, requires)
        return fn

    return wrap


def register_derived(
    name: str, specs: list[FeatureSpec]
) -> Callable[[Callable[[pl.DataFrame], pl.DataFrame]], Callable[[pl.DataFrame], pl.DataFrame]]:
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


def derived_values(name: str) -> Callable[[Callable[[Columns], MomentValues]], Callable[[Columns], MomentValues]]:
    """Decorator: the numpy twin of the derived group `name` (same features, same values)."""

    def wrap(fn: Callable[[Columns], MomentValues]) -> Callable[[Columns], MomentValues]:
        group = REGISTRY.get(name)
        if group is None or group.derive is None or group.derive_values is not None:
            raise ValueError(f"derived_values('{name}'): register the derived group first, and give it one twin")
        REGISTRY[name] = replace(group, derive_values=fn)
        return fn

    return wrap


def at_moment(name: str) -> Callable[[Callable[[MomentContext], MomentValues]], Callable[[MomentContext], MomentValues]]:
    """Decorator: the counters-based twin of the registered group `name` (same features, same values)."""

    def wrap(fn: Callable[[MomentContext], MomentValues]) -> Callable[[MomentContext], MomentValues]:
        group = REGISTRY.get(name)
        if group is None or group.at_moment is not None:
            raise ValueError(f"at_moment('{name}'): register the group first, and give it one twin")
        REGISTRY[name] = replace(group, at_moment=fn)
        return fn

    return wrap


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
    return moment_features(groups, ctx).frame()


@dataclass(frozen=True)
class MomentFeatures:
    """Every group's features at one moment, as `moment_features` made them: `columns` holds
    each feature as float64 after its declared dtype (what `Ranker.matrix` reads from the frame
    of `compute_at_moment`), so scoring needs no frame; `frame()` builds that frame."""

    targets: pl.DataFrame
    specs: dict[str, FeatureSpec]  # every feature, in group order
    columns: dict[str, np.ndarray]  # float64, NaN where null
    nulls: dict[str, np.ndarray]  # bool masks of the columns that have nulls
    raw: dict[str, np.ndarray | pl.Series]  # the twins' own values (the frame is cast from these)

    def matrix(self, names: list[str]) -> np.ndarray:
        """(rows, len(names)) float64, C order: the ranker's input, null = NaN."""
        out = np.empty((self.targets.height, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            out[:, j] = self.columns[name]
        return out

    def frame(self) -> pl.DataFrame:
        out = self.targets.drop([c for c in self.targets.columns if c in self.specs])
        columns = []
        for name, spec in self.specs.items():
            if name in self.raw:
                columns.append(pl.Series(name, self.raw[name]).cast(spec.dtype))
                continue
            column = pl.Series(name, self.columns[name]).cast(spec.dtype)  # exact: already rounded to it
            if name in self.nulls:
                column = column.scatter(np.flatnonzero(self.nulls[name]), None)
            columns.append(column)
        return out.with_columns(columns)


_NUMPY_INTS = ((pl.Int8, np.int8), (pl.Int16, np.int16), (pl.Int32, np.int32), (pl.Int64, np.int64),
               (pl.UInt8, np.uint8), (pl.UInt16, np.uint16), (pl.UInt32, np.uint32), (pl.UInt64, np.uint64))


def _numpy_int(dtype: pl.DataType) -> type | None:
    """The numpy integer type of a polars integer dtype (None for any other dtype)."""
    return next((numpy for polars, numpy in _NUMPY_INTS if dtype == polars), None)


def _as_float64(values: np.ndarray | pl.Series, dtype: pl.DataType) -> tuple[np.ndarray, np.ndarray | None]:
    """A twin's values cast to the feature's dtype (as a polars cast does), then to float64:
    (values with NaN where null, the null mask or None)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        # numpy rounds to nearest as polars' cast does; other dtypes go through polars (a Series
        # per column costs more than the rest of a request's column work)
        mask = np.ma.getmaskarray(values) if isinstance(values, np.ma.MaskedArray) else None
        data = np.ma.getdata(values)
        if dtype == pl.Float32:
            out = data.astype(np.float32).astype(np.float64)
        elif dtype == pl.Float64:
            out = data.astype(np.float64)
        elif data.dtype.kind in "iu" and (target := _numpy_int(dtype)) is not None and np.can_cast(data.dtype, target):
            out = data.astype(np.float64)  # integers that fit the declared type: exact in float64 below 2**53
        else:
            out = None
        if out is not None:
            if mask is None or not mask.any():
                return out, None
            out[mask] = np.nan
            return out, mask
    series = pl.Series(values).cast(dtype)
    nulls = series.is_null().to_numpy() if series.null_count() else None
    return series.cast(pl.Float64).to_numpy(), nulls


def moment_features(groups: list[FeatureGroup], ctx: MomentContext) -> MomentFeatures:
    """Every group's features for `ctx.targets` from the `at_moment` twins, derived groups from
    their numpy twins (their polars `derive` on the frame where a group has none)."""
    specs = {s.name: s for g in groups for s in g.specs}
    raw: dict[str, np.ndarray | pl.Series] = {}
    columns: dict[str, np.ndarray] = {}
    nulls: dict[str, np.ndarray] = {}
    n = ctx.targets.height
    for group in groups:
        missing = [a for a in group.requires if a not in ctx.artefacts]
        if missing:
            raise RecsysInputError(f"feature group '{group.name}' needs stage output(s) {missing}")
        if group.derive is not None:
            continue
        if group.at_moment is None:
            raise ValueError(f"feature group '{group.name}' has no at_moment twin")
        with stage(f"features/{group.name}"):
            values = group.at_moment(ctx)
        if set(values) != set(group.feature_names):
            raise AssertionError(f"bug: at_moment '{group.name}' returned {sorted(values)}, declared {group.feature_names}")
        for spec in group.specs:
            value = values[spec.name]
            if len(value) != n:
                raise AssertionError(f"bug: at_moment '{group.name}' returned {len(value)} rows for {n} targets")
            raw[spec.name] = value
            columns[spec.name], mask = _as_float64(value, spec.dtype)
            if mask is not None:
                nulls[spec.name] = mask
    derived = [g for g in groups if g.derive is not None]
    if derived:
        with stage("features/derived"):
            _derive_all(derived, ctx.targets, specs, columns, nulls, raw)
    return MomentFeatures(ctx.targets, specs, columns, nulls, raw)


def _derive_all(groups: list[FeatureGroup], targets: pl.DataFrame, specs: dict[str, FeatureSpec],
                columns: dict[str, np.ndarray], nulls: dict[str, np.ndarray], raw: dict[str, np.ndarray | pl.Series]) -> None:
    """Derived groups' columns into `columns`/`nulls` (numpy twins), or `raw` (polars derive)."""
    request_ids = targets["request_id"]
    if request_ids.n_unique() == 1:
        codes, count = np.zeros(targets.height, dtype=np.int64), 1
    else:
        codes = request_ids.rank("dense").cast(pl.Int64).to_numpy() - 1
        count = int(codes.max()) + 1 if len(codes) else 0
    for group in groups:
        if group.derive_values is not None:
            values = group.derive_values(Columns(columns, nulls, codes, count))
        else:  # no numpy twin: the polars derive on the frame of the columns made so far
            done = {name: spec for name, spec in specs.items() if name in columns}
            out = group.derive(MomentFeatures(targets, done, columns, nulls, raw).frame())  # type: ignore[misc]
            values = {s.name: out[s.name] for s in group.specs}
            raw.update(values)
        if set(values) != set(group.feature_names):
            raise AssertionError(f"bug: derived group '{group.name}' returned {sorted(values)}, declared {group.feature_names}")
        for spec in group.specs:
            columns[spec.name], mask = _as_float64(values[spec.name], spec.dtype)
            if mask is not None:
                nulls[spec.name] = mask
