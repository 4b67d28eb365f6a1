"""Batch scoring runs unchanged on a Ray cluster: two local nodes of one CPU each, joined via
RAY_ADDRESS, two scoring workers (so one per node), same scores as one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.pipeline.configure import load_config
from recsys.pipeline.train import train
from tests.shops import colour_shop

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.ray
def test_batch_scoring_on_two_node_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from serving.batch import score_file
    from serving.scorer import Scorer

    shop = colour_shop(tmp_path, users=12, days=6)
    train(load_config(ROOT / "experiments" / "behavioural.toml", ["ranker.task=impressions", "ranker.min_data_in_leaf=5"]),
          shop, tmp_path / "run", track=False)
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        users = [f"user{u}" for u in range(12)] + ["stranger"]
        items = [f"red{n}" for n in range(12)] + [f"blue{n}" for n in range(12)] + ["unknown-item"]
        candidates = pl.DataFrame({"user_id": users}).join(pl.DataFrame({"item_id": items}), how="cross")
        candidates.write_parquet(tmp_path / "cand.parquet")
        out = score_file(tmp_path / "run", tmp_path / "cand.parquet", tmp_path / "scores.parquet", shard_rows=50,
                         workers=2)
        # joined the cluster (not a new local Ray); two one-CPU workers fit only one per node
        assert ray.is_initialized() and len([n for n in ray.nodes() if n["Alive"]]) == 2
        scores = pl.read_parquet(out)
        assert scores.select("user_id", "item_id").equals(candidates)
        assert np.array_equal(scores["score"].to_numpy(), Scorer(tmp_path / "run").score(candidates))
    finally:
        ray.shutdown()
        cluster.shutdown()
