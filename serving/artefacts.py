"""Load the trained stage outputs a run's feature groups need (inference only, no training code)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.config import RunConfig

BLURBS_FILE = Path("blurbs") / "blurbs.parquet"
BLURB_VECTORS_FILE = Path("blurbs") / "blurb_vectors.parquet"


class TextVectorCache:
    """The interest scorer with `encode_texts` memoised: blurbs are encoded once per run (and
    saved next to them), not once per feature batch."""

    def __init__(self, scorer: Any, texts: list[str], vectors: np.ndarray) -> None:
        self.scorer = scorer
        self.known = {t: v for t, v in zip(texts, vectors)}

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.known})
        if missing:
            self.known.update(zip(missing, np.asarray(self.scorer.encode_texts(missing))))
        return np.stack([self.known[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def __getattr__(self, name: str) -> Any:  # item_vectors, user_vectors, score, ...
        return getattr(self.scorer, name)


def _blurb_vectors(run_dir: Path, scorer: Any, blurbs: pl.DataFrame) -> TextVectorCache:
    texts = sorted(set(blurbs["blurb"].drop_nulls().to_list()))
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = run_dir / BLURB_VECTORS_FILE
    if path.exists():
        saved = pl.read_parquet(path)
        if saved.height and saved["digest"][0] == digest:
            return TextVectorCache(scorer, saved["text"].to_list(), np.stack(saved["vector"].to_numpy()))
    vectors = np.asarray(scorer.encode_texts(texts), dtype=np.float32) if texts else np.zeros((0, 1), dtype=np.float32)
    pl.DataFrame({"text": texts, "vector": list(vectors), "digest": [digest] * len(texts)}).write_parquet(path)
    return TextVectorCache(scorer, texts, vectors)


TIME_SCALE_FILE = Path("state") / "time_scale.json"
TOPICS = Path("topics") / "topics.parquet"


def load_artefacts(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    artefacts: dict[str, Any] = {}
    if (run_dir / TIME_SCALE_FILE).exists():
        artefacts["time_scale"] = json.loads((run_dir / TIME_SCALE_FILE).read_text())
    if "collaborative" in cfg.features and (run_dir / "state" / "log.parquet").exists():
        from features.collaborative import fit_ease

        # the item-item weights of the whole training log (what scoring sees), refit at load
        artefacts["cf"] = fit_ease(pl.read_parquet(run_dir / "state" / "log.parquet"))
    if (run_dir / TOPICS).exists():
        artefacts["topics"] = pl.read_parquet(run_dir / TOPICS)
    if cfg.stages.interest and (run_dir / "interest").exists():
        from models.interest.scorer import InterestScorer

        artefacts["interest"] = InterestScorer.load(run_dir / "interest")
    if cfg.stages.blurbs and (run_dir / BLURBS_FILE).exists():
        artefacts["blurbs"] = pl.read_parquet(run_dir / BLURBS_FILE)
        if "interest" in artefacts:
            artefacts["interest"] = _blurb_vectors(run_dir, artefacts["interest"], artefacts["blurbs"])
    return artefacts
