"""One config object per run: its dataclasses, and parsing a TOML table + `--set section.key=value`
overrides into it with every value's type and bound checked.

Saved as config.json in the run directory and logged to MLflow, so every artefact says how it
was made. Unknown sections and keys fail here; `recsys.pipeline.configure.load_config` adds the
checks that need the layers above (feature group names, the [interest] and [blurbs] sections).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from recsys.core.errors import RecsysInputError
from recsys.core.splits import SplitConfig

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "default.toml"
BEHAVIOURAL_GROUPS = ["item_popularity", "user_activity", "user_affinity"]
# experiments/default.toml lists the same groups (a config without `features` gets these)
DEFAULT_FEATURES = ("item_popularity", "item_trend", "user_activity", "user_affinity", "user_topic", "collaborative",
                    "interest", "request_context")


@dataclass(frozen=True)
class RankerConfig:
    # "impressions": one LambdaMART group per logged request (re-rank what the shop showed);
    # "catalog": one group per (user, cutoff) over every item the user has not seen, labels =
    # clicks in the following horizon, replayed at several cutoffs (CONTRACT.md's lesson).
    # "mixed": both catalog groups and page groups (per user at each cutoff, the items they were
    # shown in the following horizon, ranked as of the cutoff), so one ranker serves both jobs.
    task: Literal["mixed", "impressions", "catalog"] = "mixed"
    # LightGBM's listwise objective: "rank_xendcg" (cross-entropy over each group's softmax) or
    # "lambdarank". Measured on the contract analogues (2026-12-03, held-out-user stopping):
    # xendcg with 7 leaves of >= 200 rows beat lambdarank with 31 leaves of >= 50 on valid and
    # test at every MovieLens origin (catalog job) and on the news page job; lambdarank stopped
    # after a handful of trees on those small logs.
    objective: Literal["rank_xendcg", "lambdarank"] = "rank_xendcg"
    num_leaves: int = 7
    learning_rate: float = 0.05
    n_estimators: int = 400
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.9
    cutoffs: int = 8
    max_users_per_cutoff: int = 300
    max_page_users_per_cutoff: int = 2000
    # catalog groups at each user's own moment as well (0 = off): users active only for a while
    # rarely straddle a global cutoff (targets.user_cut_targets)
    max_cut_users: int = 600
    max_items_per_group: int = 3000
    # "auto": with both catalog and page groups, one ranker per job, each request routed by its
    # candidate count (models.ranker.RoutedRanker) and each route judged by the release gate on
    # its own groups; "off": one ranker over every group
    routing: Literal["auto", "off"] = "auto"
    # share of the training groups' users held out to stop boosting on (the valid groups stay
    # unseen until the release gate judges the candidates on them); 0 = stop on valid
    stop_fraction: float = 0.2
    seed: int = 13


@dataclass(frozen=True)
class MlflowConfig:
    experiment: str = "recsys"
    registered_model: str = "recsys-ranker"
    tracking_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir


@dataclass(frozen=True)
class StagesConfig:
    interest: bool = True
    blurbs: bool = True


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    description: str = ""
    data: str = ""  # dataset directory; `recsys train --data` overrides it
    features: list[str] = field(default_factory=lambda: list(DEFAULT_FEATURES))
    split: SplitConfig = SplitConfig()
    ranker: RankerConfig = RankerConfig()
    stages: StagesConfig = StagesConfig()
    mlflow: MlflowConfig = MlflowConfig()
    interest: dict[str, Any] = field(default_factory=dict)  # models.interest.config.InterestConfig
    blurbs: dict[str, Any] = field(default_factory=dict)  # models.blurbs.config.BlurbConfig

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


SECTIONS: dict[str, type] = {"split": SplitConfig, "ranker": RankerConfig, "stages": StagesConfig, "mlflow": MlflowConfig}


# bounds of values that would otherwise fail deep inside a stage (LightGBM, the split), minutes in:
# key -> (lowest, highest, whether each bound itself is allowed)
LIMITS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "num_leaves": (2, None, True, True), "learning_rate": (0, None, False, True), "n_estimators": (1, None, True, True),
    "early_stopping_rounds": (1, None, True, True), "min_data_in_leaf": (1, None, True, True),
    "feature_fraction": (0, 1, False, True), "cutoffs": (1, None, True, True), "max_users_per_cutoff": (1, None, True, True),
    "max_items_per_group": (1, None, True, True), "valid_fraction": (0, 1, True, False), "test_fraction": (0, 1, False, False),
    "stop_fraction": (0, 1, True, False),
}
CHECKED = (RankerConfig, SplitConfig)  # the classes LIMITS is about (other sections check themselves)


def _expected(value: Any, hint: Any) -> str | None:
    """None when a TOML value fits the field's type; else what the field expects, in words."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return None
    if origin is Literal:
        return None if value in args else f"one of {list(args)}"
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        wants = [_expected(value, a) for a in args if a is not type(None)]
        return None if any(w is None for w in wants) else " or ".join(w for w in wants if w)
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if hint is float:
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "a number"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    if hint in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return "a list"
        element = args[0] if args and (origin is list or (len(args) == 2 and args[1] is Ellipsis)) else None
        wrong = [_expected(v, element) for v in value] if element is not None else []
        return next((f"a list of {w.removeprefix('an ').removeprefix('a ')}s" for w in wrong if w), None)
    if hint is dict or origin is dict:
        return None if isinstance(value, dict) else "a table"
    return None  # a type this check does not know: the class itself decides


def _check_values(cls: type, values: dict[str, Any], where: str) -> None:
    try:
        hints = get_type_hints(cls)
    except Exception:  # an annotation that does not resolve here: leave the values to the class
        hints = {}
    for key, value in values.items():
        wanted = _expected(value, hints[key]) if key in hints else None
        if wanted:
            raise RecsysInputError(f"{where}: {key} = {value!r}; expected {wanted}")
        low, high, low_ok, high_ok = LIMITS.get(key, (None, None, True, True)) if cls in CHECKED else (None, None, True, True)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if (low is not None and (value < low or (value == low and not low_ok))) or (
                high is not None and (value > high or (value == high and not high_ok))):
            bound = " and ".join(b for b in (None if low is None else f"{'>=' if low_ok else '>'} {low}",
                                             None if high is None else f"{'<=' if high_ok else '<'} {high}") if b)
            raise RecsysInputError(f"{where}: {key} = {value!r}; expected {bound}")


def build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise RecsysInputError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    _check_values(cls, values, where)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a class's own check of its values
        raise RecsysInputError(f"{where}: {err}") from None


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`section.key=value` (TOML value syntax; bare words are strings) onto the raw dict."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise RecsysInputError(f"--set {item!r}: expected section.key=value, e.g. ranker.num_leaves=63")
        path, value = item.split("=", 1)
        parts = path.strip().split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = _parse_value(value.strip())
    return out


def from_dict(raw: dict[str, Any], where: str = "config") -> RunConfig:
    top = {f.name for f in fields(RunConfig)}
    unknown = [k for k in raw if k not in top]
    if unknown:
        raise RecsysInputError(f"{where}: unknown section(s) {unknown}; known: {sorted(top)}")
    values: dict[str, Any] = {k: v for k, v in raw.items() if k in ("name", "description", "data", "features", "interest", "blurbs")}
    for name, cls in SECTIONS.items():
        if name in raw:
            values[name] = build_section(cls, raw[name], f"{where} [{name}]")
    return RunConfig(**values)
