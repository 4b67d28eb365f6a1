from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from recsys.core.dataset import load_dataset, validate_dataset
from recsys.data.synth import SynthConfig, synth
from recsys.pipeline.evaluate import evaluate_baselines


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = SynthConfig(users=50, items=30, days=5, seed=11)
    a = synth(cfg, tmp_path / "a")
    b = synth(cfg, tmp_path / "b")
    c = synth(SynthConfig(users=50, items=30, days=5, seed=12), tmp_path / "c")
    assert a["files"] == b["files"]
    assert a["files"]["events.parquet"] != c["files"]["events.parquet"]


def test_shop_is_valid_and_text_carries_the_attributes(tiny_shop: Path) -> None:
    assert validate_dataset(tiny_shop) == []
    data = load_dataset(tiny_shop)
    for row in data.items.head(20).iter_rows(named=True):
        attrs = json.loads(row["attributes"])
        for key in ("colour", "style", "material", "brand"):
            assert attrs[key].lower() in row["text"].lower(), (key, row["text"])
    start = data.events["ts"].min()
    assert data.items.filter(pl.col("created_at") > start).height > 0, "new items must arrive during the period"
    # no item is shown before it exists
    shown = data.events.join(data.items.select("item_id", "created_at"), on="item_id")
    assert shown.filter(pl.col("ts") < pl.col("created_at")).height == 0


def test_clicks_follow_the_ground_truth_and_position_bias(tmp_path: Path) -> None:
    synth(SynthConfig(users=400, items=100, days=10, seed=5), tmp_path / "s")
    data = load_dataset(tmp_path / "s")
    assert data.ground_truth is not None
    joined = data.events.join(data.ground_truth, on=["request_id", "item_id"])
    # observed click rate matches the model's mean probability within sampling noise
    assert abs(joined["clicked"].mean() - joined["click_prob"].mean()) < 0.01  # type: ignore[operator]
    by_pos = joined.group_by("position").agg(pl.col("clicked").mean()).sort("position")["clicked"]
    assert by_pos[0] > by_pos[-1] * 1.5


def test_oracle_beats_popularity_beats_random(tmp_path: Path) -> None:
    synth(SynthConfig(users=800, items=200, days=14, seed=9), tmp_path / "s")
    _, table = evaluate_baselines(load_dataset(tmp_path / "s"), resamples=200)
    ndcg = dict(zip(table["model"], table["ndcg@10"]))
    assert ndcg["oracle"] > ndcg["popularity"] + 0.1
    assert ndcg["popularity"] > ndcg["random"]
