"""Load the trained stage outputs a run's feature groups need (inference only, no training code)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.history import rows_by_history
from features.vectors import paired_scores
from recsys.core.config import RunConfig
from recsys.core.stopwatch import stage

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


class UserVectorCache:
    """The interest scorer with user vectors memoised by click history. A user's vector changes
    only with their clicks, and a new click makes a new history (key), so an entry is good until
    the user's next click; the interest and blurb groups of one request, and the next requests,
    reuse it instead of running the user tower again. Each missing history is computed alone, so
    a vector never depends on what else was asked with it (online and batch get the same bits).
    `score` is InterestScorer.score over these vectors (the same `paired_scores`;
    tests/test_serving_speed.py compares the two)."""

    def __init__(self, scorer: Any, size: int = 20_000) -> None:
        self.scorer = scorer
        self.size = size
        self._known: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def user_vectors(self, histories: list[list[str]]) -> np.ndarray:
        with stage("features/user_vectors"):
            rows = []
            for history in histories:
                key = tuple(history)
                with self._lock:
                    vector = self._known.get(key)
                    if vector is not None:
                        self._known.move_to_end(key)
                if vector is None:
                    vector = np.asarray(self.scorer.user_vectors([list(key)]))[0]
                    with self._lock:
                        self._known[key] = vector
                        if len(self._known) > self.size:
                            self._known.popitem(last=False)
                rows.append(vector)
            return np.stack(rows) if rows else np.asarray(self.scorer.user_vectors([]))

    def score(self, histories: list[list[str]], item_ids: list[str]) -> np.ndarray:
        if len(histories) != len(item_ids):
            raise ValueError(f"score: {len(histories)} histories but {len(item_ids)} item ids")
        length = self.scorer.cfg.history_len
        distinct = rows_by_history(histories, lambda h: tuple(h[-length:]))
        which = np.empty(len(histories), dtype=np.int64)
        for n, rows in enumerate(distinct.values()):
            which[rows] = n
        return paired_scores(self.user_vectors([list(k) for k in distinct]), which, self.item_vectors, item_ids)

    def __getattr__(self, name: str) -> Any:  # item_vectors, encode_texts, cfg, ...
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


CF_FILE = Path("state") / "cf_weights.npz"


def _item_item(run_dir: Path) -> Any:
    """The EASE item-item weights of the whole training log (what scoring sees): fitted once and
    saved beside the log, keyed by the log file's digest, instead of refitted at every load (a
    dense inverse: seconds of every replica's start-up). Fits are deterministic, so a saved fit
    equals a refit."""
    from features.collaborative import ItemItem, fit_ease
    from recsys.core.dataset import file_sha256

    log_file, path = run_dir / "state" / "log.parquet", run_dir / CF_FILE
    digest = file_sha256(log_file)
    if path.exists():
        try:
            saved = np.load(path, allow_pickle=False)
            if str(saved["digest"]) == digest:
                return ItemItem({item: k for k, item in enumerate(saved["items"].tolist())}, saved["weights"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable or of another log: refit below
    model = fit_ease(pl.read_parquet(log_file))
    items = sorted(model.index, key=model.index.__getitem__)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez(tmp, digest=np.array(digest), items=np.array(items, dtype=str), weights=model.weights)
        tmp.rename(path)
    except OSError:  # a read-only run directory: serve the fit anyway
        tmp.unlink(missing_ok=True)
    return model


TIME_SCALE_FILE = Path("state") / "time_scale.json"
TOPICS = Path("topics") / "topics.parquet"


def load_artefacts(run_dir: Path, cfg: RunConfig) -> dict[str, Any]:
    artefacts: dict[str, Any] = {}
    if (run_dir / TIME_SCALE_FILE).exists():
        artefacts["time_scale"] = json.loads((run_dir / TIME_SCALE_FILE).read_text())
    if "collaborative" in cfg.features and (run_dir / "state" / "log.parquet").exists():
        artefacts["cf"] = _item_item(run_dir)
    if (run_dir / TOPICS).exists():
        artefacts["topics"] = pl.read_parquet(run_dir / TOPICS)
    if cfg.stages.interest and (run_dir / "interest").exists():
        from models.interest.scorer import InterestScorer

        artefacts["interest"] = InterestScorer.load(run_dir / "interest")
    if cfg.stages.blurbs and (run_dir / BLURBS_FILE).exists():
        artefacts["blurbs"] = pl.read_parquet(run_dir / BLURBS_FILE)
        if "interest" in artefacts:
            artefacts["interest"] = _blurb_vectors(run_dir, artefacts["interest"], artefacts["blurbs"])
    if "interest" in artefacts:
        artefacts["interest"] = UserVectorCache(artefacts["interest"])
    return artefacts
