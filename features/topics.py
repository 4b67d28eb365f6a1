"""Text topics: items clustered by their text vectors, so a catalog without categories (the
contract's ITEMS.csv has none) still gets a user x topic affinity, and one with categories gets a
finer, text-made one beside them. Fitted once per run on every catalog item (new ones too: they
have text), saved with the run, read by the `user_topic` feature group."""

from __future__ import annotations

import numpy as np
import polars as pl

TOPICS_FILE = "topics.parquet"
MIN_TOPICS, MAX_TOPICS = 8, 64


def topic_count(n_items: int) -> int:
    """About sqrt(n / 2) clusters: 20 for 800 items, 64 at most (a user's clicks must spread over them)."""
    return int(np.clip(round(np.sqrt(n_items / 2)), MIN_TOPICS, MAX_TOPICS))


def fit_topics(item_ids: list[str], vectors: np.ndarray, seed: int = 0) -> pl.DataFrame:
    """(item_id, topic) by k-means on L2-normalised text vectors (cosine geometry)."""
    from sklearn.cluster import KMeans

    if len(item_ids) == 0:
        return pl.DataFrame({"item_id": [], "topic": []}, schema={"item_id": pl.String, "topic": pl.String})
    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(topic_count(len(item_ids)), len(item_ids))
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(x)
    return pl.DataFrame({"item_id": item_ids, "topic": [f"t{label:02d}" for label in labels]})
