"""Load a run's config and check it against the layers it names: every feature group exists and
its stages are enabled, and the [interest] and [blurbs] sections build (bad values fail here, at
load, as one line naming the key, not mid-training)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from features.groups import resolve
from models.blurbs.config import blurb_config
from models.interest.config import interest_config
from recsys.core.config import DEFAULT_CONFIG, RunConfig, apply_overrides, from_dict
from recsys.core.errors import RecsysInputError


def check(cfg: RunConfig, where: str) -> None:
    """Feature names exist, their stages are enabled, and stage sections are well-formed."""
    for group in resolve(cfg.features):
        for need in group.requires:
            # text topics are made from the interest model's item vectors; other artefacts come with the state
            stage = {"interest": "interest", "topics": "interest", "blurbs": "blurbs"}.get(need)
            if stage is not None and not getattr(cfg.stages, stage):
                raise RecsysInputError(
                    f"{where}: feature group '{group.name}' needs stage '{stage}', which [stages] disables"
                )
    if cfg.stages.interest:
        interest_config(cfg)
    if cfg.stages.blurbs:
        blurb_config(cfg)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise RecsysInputError(f"config file not found: {path} (see experiments/*.toml)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise RecsysInputError(f"{path}: not valid TOML ({err})") from None
    cfg = from_dict(apply_overrides(raw, overrides or []), str(path))
    check(cfg, str(path))
    return cfg
