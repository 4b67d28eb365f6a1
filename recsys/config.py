"""One config object per run, resolved from TOML + `--set section.key=value` overrides.

Saved as config.json in the run directory and logged to MLflow, so every artefact says how it
was made. Unknown sections, keys and feature group names fail here, at load, not mid-training.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from recsys.errors import RecsysInputError
from recsys.splits import SplitConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "experiments" / "default.toml"
BEHAVIOURAL_GROUPS = ["item_popularity", "user_activity", "user_affinity"]


@dataclass(frozen=True)
class RankerConfig:
    # "impressions": one LambdaMART group per logged request (re-rank what the shop showed);
    # "catalog": one group per (user, cutoff) over every item the user has not seen, labels =
    # clicks in the following horizon, replayed at several cutoffs (CONTRACT.md's lesson).
    task: Literal["impressions", "catalog"] = "catalog"
    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 400
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.9
    cutoffs: int = 4
    horizon_fraction: float = 0.1
    max_users_per_cutoff: int = 300
    max_items_per_group: int = 3000
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
    features: list[str] = field(default_factory=lambda: [*BEHAVIOURAL_GROUPS, "interest", "blurb"])
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


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise RecsysInputError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


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
            values[name] = _build(cls, raw[name], f"{where} [{name}]")
    cfg = RunConfig(**values)
    check(cfg, where)
    return cfg


def check(cfg: RunConfig, where: str) -> None:
    """Feature names exist, their stages are enabled, and stage sections are well-formed."""
    from features.registry import resolve

    groups = resolve(cfg.features)
    for group in groups:
        for need in group.requires:
            stage = {"interest": "interest", "blurbs": "blurbs"}.get(need, need)
            if not getattr(cfg.stages, stage, False):
                raise RecsysInputError(
                    f"{where}: feature group '{group.name}' needs stage '{stage}', which [stages] disables"
                )
    if cfg.stages.interest:
        interest_config(cfg)
    if cfg.stages.blurbs:
        blurb_config(cfg)


def interest_config(cfg: RunConfig) -> Any:
    from models.interest.config import InterestConfig

    return _build(InterestConfig, cfg.interest, "config [interest]")


def blurb_config(cfg: RunConfig) -> Any:
    from models.blurbs.config import BlurbConfig

    return _build(BlurbConfig, cfg.blurbs, "config [blurbs]")


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise RecsysInputError(f"config file not found: {path} (see experiments/*.toml)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise RecsysInputError(f"{path}: not valid TOML ({err})") from None
    return from_dict(apply_overrides(raw, overrides or []), str(path))

