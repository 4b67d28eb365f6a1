"""The interest training job runs unchanged on a Ray cluster: two local nodes, joined via
RAY_ADDRESS, two Train workers (DDP over gloo), validation all-reduced across workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.interest.config import InterestConfig


@pytest.mark.slow
@pytest.mark.ray
def test_trains_on_two_node_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from models.interest.train import run
    from recsys.core.dataset import load_dataset
    from recsys.core.splits import time_split
    from recsys.data.synth import SynthConfig, synth

    synth(SynthConfig(users=60, items=40, days=6), tmp_path / "shop")
    data = load_dataset(tmp_path / "shop")
    split = time_split(data.events)
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    cluster.add_node(num_cpus=2)
    try:
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        cfg = InterestConfig(encoder="tiny", max_steps=6, batch_size=4, checkpoint_every=3, num_workers=2,
                             cpus_per_worker=1.0, torch_threads=1, max_valid_requests=40)
        out = run(cfg, data, split.train, split.valid, tmp_path / "run")
        assert ray.is_initialized() and len(ray.nodes()) == 2  # run joined the cluster, not a new Ray
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["steps"] == 6 and metrics["train_samples"] == 6 * 4 * 2  # both workers trained
        assert 0.0 <= metrics["valid_auc"] <= 1.0
        assert (out / "item_embeddings.parquet").exists()
    finally:
        ray.shutdown()
        cluster.shutdown()
