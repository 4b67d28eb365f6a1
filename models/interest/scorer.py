"""InterestScorer: the one inference interface (features, batch scoring and serving use it).

Scores are the cosine of a user vector and an item vector, plus the model's text prior of the
item (`InterestModel.user_offset`, added to every user vector; 0 for a model without one). Item vectors come from
item_embeddings.parquet (cached); texts of items the cache lacks are encoded on demand with the
lazily loaded encoder. Fallbacks, so nothing raises on unknown ids:
- an item id not in the cache -> a zero vector (score 0 = no opinion) unless its text was
  registered with `add_items` (cold items new to the catalog are scored from their text);
- a history with no known item (unknown or new user) -> the "unknown user" vector: the unit
  click-weighted mean of the items clicked in training, i.e. the typical taste.
No Ray, no gradients; CPU numpy + torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from features.vectors import paired_scores
from models.interest.config import InterestConfig
from models.interest.embed import EMBEDDINGS_FILE, read_embeddings
from models.interest.model import CONFIG_FILE, HEAD_FILE, InterestModel, NumpyUserTower, UserTower, encode_texts
from models.interest.train import MODEL_DIR, UNKNOWN_USER_FILE


class InterestScorer:
    def __init__(self, model_dir: Path, item_ids: list[str], vectors: np.ndarray, unknown_user: np.ndarray,
                 quantize: bool = False) -> None:
        import json

        self.model_dir = Path(model_dir)
        self.cfg = InterestConfig.from_dict(json.loads((self.model_dir / CONFIG_FILE).read_text()))
        self.row = {i: n for n, i in enumerate(item_ids)}
        self.vectors = vectors
        self.dim = vectors.shape[1] if vectors.size else unknown_user.shape[0]
        self.unknown_user = unknown_user.astype(np.float32)
        self.quantize = quantize
        self._model: InterestModel | None = None
        self._tokenizer = None
        self._pool: NumpyUserTower | None = None
        self._offset: np.ndarray | None = None

    @property
    def history_len(self) -> int:
        """Recent clicks that make a user (features/text.py reads it for every history)."""
        return self.cfg.history_len

    @classmethod
    def load(cls, out_dir: Path, quantize: bool = False) -> InterestScorer:
        """From a `run` output folder: model/ and item_embeddings.parquet."""
        out_dir = Path(out_dir)
        model_dir, emb = out_dir / MODEL_DIR, out_dir / EMBEDDINGS_FILE
        for needed in (model_dir / CONFIG_FILE, emb):
            if not needed.exists():
                raise FileNotFoundError(f"InterestScorer: {needed} is missing; run models.interest.train.run first")
        ids, vectors = read_embeddings(emb)
        unknown_file = model_dir / UNKNOWN_USER_FILE
        unknown = np.load(unknown_file) if unknown_file.exists() else np.zeros(vectors.shape[1], np.float32)
        return cls(model_dir, ids, vectors, unknown, quantize)

    # -- lazily loaded parts -------------------------------------------------------------------
    def _load_model(self) -> InterestModel:
        if self._model is None:
            model, self._tokenizer = InterestModel.load(self.model_dir)
            if self.quantize:
                # int8 weights for the Linear layers of the encoder: faster CPU matmuls, see benchmark
                model.encoder = torch.ao.quantization.quantize_dynamic(model.encoder, {torch.nn.Linear}, dtype=torch.qint8)
            self._model = model
        return self._model

    # -- the interface -------------------------------------------------------------------------
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(n, d) candidate-side unit vectors for arbitrary texts (cold items, generated blurbs)."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        model = self._load_model()
        return encode_texts(model, self._tokenizer, list(texts), self.cfg.max_len, self.cfg.embed_batch_size).numpy()

    def add_items(self, item_ids: list[str], texts: list[str]) -> None:
        """Encode and cache items (e.g. new to the catalog); later lookups reuse the vectors."""
        if len(item_ids) != len(texts):
            raise ValueError(f"add_items: {len(item_ids)} ids but {len(texts)} texts")
        vecs = self.encode_texts(texts)
        base = self.vectors.shape[0]
        self.vectors = np.vstack([self.vectors.reshape(base, self.dim), vecs]) if base else vecs
        for n, i in enumerate(item_ids):
            self.row[i] = base + n

    def item_vectors(self, item_ids: list[str]) -> np.ndarray:
        """(n, d) cached vectors; ids not in the cache get a zero row."""
        rows = np.array([self.row.get(i, -1) for i in item_ids], dtype=np.int64)
        if not len(self.vectors):
            return np.zeros((len(item_ids), self.dim), np.float32)
        out = self.vectors[np.maximum(rows, 0)].astype(np.float32, copy=False)  # one gather; unknown rows zeroed below
        out[rows < 0] = 0.0
        return out

    def user_vectors(self, histories: list[list[str]]) -> np.ndarray:
        """(n, d) unit user vectors from clicked item ids (most recent last; the last
        history_len count). Ids without a cached vector are skipped; nothing left -> unknown user."""
        h = self.cfg.history_len
        rows = np.full((len(histories), h), -1, dtype=np.int64)
        for r, hist in enumerate(histories):
            ids = [self.row[i] for i in hist if i in self.row][-h:]
            if ids:
                rows[r, -len(ids):] = ids
        mask = rows >= 0
        out = np.tile(self.unknown_user, (len(histories), 1))
        has = mask.any(1)
        if has.any():
            out[has] = self._tower()(self.vectors[np.maximum(rows[has], 0)], mask[has])
        return out + self._prior_offset()

    def score(self, histories: list[list[str]], item_ids: list[str]) -> np.ndarray:
        """(n,) score of user i (histories[i]) and item_ids[i] (cosine + text prior); each distinct history once."""
        if len(histories) != len(item_ids):
            raise ValueError(f"score: {len(histories)} histories but {len(item_ids)} item ids")
        keys = [tuple(h[-self.cfg.history_len:]) for h in histories]
        distinct: dict[tuple[str, ...], int] = {}
        which = np.array([distinct.setdefault(k, len(distinct)) for k in keys], dtype=np.int64)
        users = self.user_vectors([list(k) for k in distinct])
        return paired_scores(users, which, self.item_vectors, item_ids)

    def _tower(self) -> NumpyUserTower:
        """The user tower alone (pooling weights from head.pt), without loading the encoder."""
        if self._pool is None:
            self._load_head()
        assert self._pool is not None
        return self._pool

    def _prior_offset(self) -> np.ndarray:
        """(d,) the text prior as an offset of every user vector (`InterestModel.user_offset`);
        zeros without a prior."""
        if self._offset is None:
            self._load_head()
        assert self._offset is not None
        return self._offset

    def _load_head(self) -> None:
        """The user tower and the text prior's offset from head.pt (one read, no encoder)."""
        head = torch.load(self.model_dir / HEAD_FILE, weights_only=True)
        self._pool = NumpyUserTower(UserTower.from_head(head, self.dim, self.cfg.pooling))
        self._offset = np.zeros(self.dim, np.float32)
        if self.cfg.item_prior:
            self._offset = (head["item_prior.weight"][0] / head["log_scale"].exp()).numpy().astype(np.float32)
