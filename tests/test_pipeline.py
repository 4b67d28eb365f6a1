"""The pipeline end to end on tiny data (Ray tasks, MLflow registry, batch scoring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.core.errors import RecsysInputError
from recsys.pipeline.configure import load_config
from recsys.pipeline.train import train
from tests.shops import colour_shop

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parent.parent
BEHAVIOURAL = ROOT / "experiments" / "behavioural.toml"


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def test_ranker_learns_a_users_colour_and_stages_are_cached(tmp_path: Path) -> None:
    shop = colour_shop(tmp_path)
    cfg = load_config(BEHAVIOURAL, ["ranker.task=impressions", "ranker.min_data_in_leaf=5"])
    metrics = train(cfg, shop, tmp_path / "run", track=False)
    assert metrics["comparison"]["ranker"]["auc"]["mean"] > 0.8
    assert metrics["comparison"]["ranker"]["ndcg@10"]["mean"] > metrics["comparison"]["popularity"]["ndcg@10"]["mean"]

    from serving.scorer import Scorer

    scorer = Scorer(tmp_path / "run")
    pairs = pl.DataFrame({"user_id": ["user0", "user0", "user1", "user1"], "item_id": ["red3", "blue3", "red3", "blue3"]})
    s = scorer.score(pairs)
    assert s[0] > s[1] and s[3] > s[2]  # user0 likes red, user1 likes blue

    again = train(cfg, shop, tmp_path / "run", track=False)
    assert "features_seconds" not in again["stages"] and "ranker_full_seconds" not in again["stages"]
    keys = json.loads((tmp_path / "run" / "stages.json").read_text())
    changed = train(load_config(BEHAVIOURAL, ["ranker.task=impressions", "ranker.min_data_in_leaf=5", "ranker.num_leaves=15"]),
                    shop, tmp_path / "run", track=False)
    # a training knob of the ranker reruns the ranker, not the features (their key is unchanged)
    assert "ranker_full_seconds" in changed["stages"] and "features_seconds" not in changed["stages"]
    assert json.loads((tmp_path / "run" / "stages.json").read_text())["features"] == keys["features"]


def test_each_stage_key_changes_with_what_that_stage_reads_and_nothing_else() -> None:
    """The stage cache's promise, for every stage: a config change reruns the stages that read it
    (and the ones downstream of them), never the others."""
    from datetime import datetime, timedelta

    from recsys.pipeline.stages import Periods
    from recsys.pipeline.train import stage_keys

    day = datetime(2026, 1, 1)
    periods = Periods(day, [day + timedelta(days=k) for k in range(1, 4)], timedelta(days=2), day + timedelta(days=8),
                      day + timedelta(days=10), day + timedelta(days=12))
    base = stage_keys(load_config(), "data-hash", periods)
    assert set(base) == {"state", "interest", "topics", "blurbs", "features"}  # the default config runs every stage

    def changed(*overrides: str, data_hash: str = "data-hash", at: Periods = periods) -> set[str]:
        keys = stage_keys(load_config(None, list(overrides)), data_hash, at)
        assert set(keys) == set(base)
        return {stage for stage in base if keys[stage] != base[stage]}

    assert changed("ranker.num_leaves=63", "ranker.learning_rate=0.1", "ranker.objective=lambdarank") == set()
    assert changed("ranker.max_users_per_cutoff=10") == {"features"}
    assert changed("interest.epochs=1") == {"interest", "topics", "features"}
    assert changed("blurbs.train_items=8") == {"blurbs", "features"}
    assert changed("features=['item_popularity', 'interest', 'user_topic', 'blurb']") == {"features"}
    assert changed("split.test_fraction=0.3") == set(base)
    assert changed(data_hash="other-data") == set(base)
    assert changed(at=Periods(*[getattr(periods, f) for f in ("interest_end", "cutoffs", "horizon", "valid_start")],
                              periods.test_start, periods.data_end + timedelta(days=1))) == set(base)
    off = stage_keys(load_config(None, ["stages.blurbs=false", "features=['item_popularity', 'interest']"]), "data-hash", periods)
    assert set(off) == {"state", "interest", "features"}


def test_contract_cli_import_train_score(tmp_path: Path) -> None:
    """The three commands of ../shared/CONTRACT.md, as a user runs them."""
    import subprocess
    import sys

    colour_shop(tmp_path)  # writes events.csv and items.csv in the contract format
    env_cmd = [sys.executable, "-m", "recsys.cli"]
    run = lambda *a: subprocess.run([*env_cmd, *map(str, a)], capture_output=True, text=True, timeout=600)  # noqa: E731
    r = run("data", "import", "events", "--events", tmp_path / "events.csv", "--items", tmp_path / "items.csv", "--out", tmp_path / "data")
    assert r.returncode == 0, r.stderr
    r = run("train", "--data", tmp_path / "data", "--run-dir", tmp_path / "run", "-c", BEHAVIOURAL, "--set", "ranker.min_data_in_leaf=5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ranker" in r.stdout and "MLflow run" in r.stdout
    candidates = pl.DataFrame({"user_id": ["user0"] * 3 + ["stranger"], "item_id": ["red1", "blue1", "never-seen", "red1"]})
    candidates.write_parquet(tmp_path / "cand.parquet")
    r = run("score", "--run", tmp_path / "run", "--candidates", tmp_path / "cand.parquet", "--out", tmp_path / "scores.parquet")
    assert r.returncode == 0, r.stderr[-3000:]
    scores = pl.read_parquet(tmp_path / "scores.parquet")
    assert scores.select("user_id", "item_id").equals(candidates)
    assert scores["score"].dtype == pl.Float64 and scores["score"].is_finite().all()


def test_mlflow_registry_aliases(tmp_path: Path) -> None:
    import mlflow

    shop = colour_shop(tmp_path)
    cfg = load_config(BEHAVIOURAL, ["ranker.task=impressions", "ranker.min_data_in_leaf=5"])
    first = train(cfg, shop, tmp_path / "a")
    assert set(first["mlflow"]["aliases"]) == {"challenger", "champion"}
    worse = load_config(BEHAVIOURAL, ["ranker.task=impressions", "ranker.min_data_in_leaf=5", "ranker.n_estimators=1",
                                      "features=['item_popularity']"])
    second = train(worse, shop, tmp_path / "b")
    assert second["mlflow"]["aliases"] == ["challenger"]  # champion stays with the better model
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("recsys-ranker", "champion").version) == first["mlflow"]["version"]
    run = client.get_run(first["mlflow"]["run_id"])
    assert "test_ndcg_at_10" in run.data.metrics and run.data.params["ranker.task"] == "impressions"
    artefacts = {a.path for a in client.list_artifacts(first["mlflow"]["run_id"], "ranker")}
    assert {"ranker/curves.png", "ranker/importance.png"} <= artefacts


def test_compare_and_ablate(tmp_path: Path) -> None:
    from recsys.pipeline.ablate import ablate
    from recsys.pipeline.compare import compare_runs

    shop = colour_shop(tmp_path)
    base = ["ranker.task=impressions", "ranker.min_data_in_leaf=5"]
    train(load_config(BEHAVIOURAL, base), shop, tmp_path / "full", track=False)
    train(load_config(BEHAVIOURAL, [*base, "features=['item_popularity']"]), shop, tmp_path / "pop", track=False)
    table = compare_runs([tmp_path / "full", tmp_path / "pop"])
    row = table.filter((pl.col("metric") == "auc") & (pl.col("run") == str(tmp_path / "pop"))).row(0, named=True)
    assert row["delta"] < 0 and row["delta_high"] < 0  # popularity alone cannot learn a user's colour
    ablations = ablate(tmp_path / "full", track=True)
    assert set(ablations["variant"]) == {"(all groups)", "without item_popularity", "without user_activity", "without user_affinity"}
    no_taste = ablations.filter(pl.col("variant") == "without user_affinity")["auc"].item()
    assert no_taste < ablations.filter(pl.col("variant") == "(all groups)")["auc"].item()


def test_config_errors_are_caught_at_load(tmp_path: Path) -> None:
    with pytest.raises(RecsysInputError, match="unknown key"):
        load_config(BEHAVIOURAL, ["ranker.num_leafs=3"])
    with pytest.raises(RecsysInputError, match="unknown feature group"):
        load_config(BEHAVIOURAL, ["features=['item_popularity', 'colour_magic']"])
    with pytest.raises(RecsysInputError, match="needs stage 'interest'"):
        load_config(BEHAVIOURAL, ["features=['interest']"])
    assert json.loads(load_config(BEHAVIOURAL).to_json())["ranker"]["task"] == "catalog"


def test_batch_scoring_resumes_from_finished_shards_and_matches_online_scorer(tmp_path: Path) -> None:
    from serving.batch import score_file
    from serving.scorer import Scorer

    shop = colour_shop(tmp_path, users=16, days=8)
    train(load_config(BEHAVIOURAL, ["ranker.task=impressions", "ranker.min_data_in_leaf=5"]), shop, tmp_path / "run", track=False)
    users = [f"user{u}" for u in range(16)] + ["stranger"]
    items = [f"red{n}" for n in range(12)] + [f"blue{n}" for n in range(12)] + ["unknown-item"]
    candidates = pl.DataFrame({"user_id": users}).join(pl.DataFrame({"item_id": items}), how="cross")
    candidates.write_parquet(tmp_path / "cand.parquet")
    clean = score_file(tmp_path / "run", tmp_path / "cand.parquet", tmp_path / "clean.parquet", shard_rows=100)
    clean_scores = pl.read_parquet(clean)
    assert clean_scores.select("user_id", "item_id").equals(candidates)
    # parity: the batch path and the online Scorer give identical scores for identical inputs
    scorer = Scorer(tmp_path / "run")
    assert np.array_equal(clean_scores["score"].to_numpy(), scorer.score(candidates))
    # scoring reads the log's counters; the point-in-time groups training uses agree exactly
    assert_frame_equal(scorer.features(candidates), scorer.features(candidates, log=scorer.log))

    # shards hold whole users (a user's candidates are compared with each other), about 100 rows each
    from serving.batch import user_shards

    by_user = clean_scores.with_row_index("orig").sort("user_id", maintain_order=True)
    shards = user_shards(by_user["user_id"], 100)
    assert len(shards) > 2 and sum(n for _, n in shards) == candidates.height
    for offset, _ in shards:
        assert by_user["user_id"][offset] != (by_user["user_id"][offset - 1] if offset else None)
    # a kill after two shards: their parts exist, the output does not; mark them to prove reuse
    parts = tmp_path / "resumed.parquet.parts"
    parts.mkdir()
    marked = []
    for k in (0, 1):
        part = by_user.slice(*shards[k]).with_columns(pl.col("score") + 1000.0)
        part.select("orig", "user_id", "item_id", "score").write_parquet(parts / f"part-{k:05d}.parquet")
        marked += part["orig"].to_list()
    resumed = pl.read_parquet(score_file(tmp_path / "run", tmp_path / "cand.parquet", tmp_path / "resumed.parquet", shard_rows=100))
    assert resumed.select("user_id", "item_id").equals(candidates)
    was_marked = pl.Series(np.isin(np.arange(candidates.height), marked))
    delta = resumed["score"] - clean_scores["score"]
    assert delta.filter(was_marked).abs().min() == pytest.approx(1000.0)
    assert delta.filter(~was_marked).abs().max() == 0.0
    assert not parts.exists()

    # shards left by another job (here: another shard size) are cleared, never mixed in
    from serving.batch import _job_key

    stale = tmp_path / "other.parquet.parts"
    stale.mkdir()

    (stale / "job.json").write_text(json.dumps(_job_key(tmp_path / "run", tmp_path / "cand.parquet", 50)))
    by_user.slice(*shards[0]).with_columns(pl.col("score") + 1000.0).select("orig", "user_id", "item_id", "score").write_parquet(
        stale / "part-00000.parquet")
    again = pl.read_parquet(score_file(tmp_path / "run", tmp_path / "cand.parquet", tmp_path / "other.parquet", shard_rows=100))
    assert again.equals(clean_scores)


@pytest.mark.timeout(900)  # the whole default pipeline: two interest fits, blurbs, three rankers
def test_default_config_runs_every_stage_end_to_end(tmp_path: Path) -> None:
    """`recsys train --data DIR` with the default experiment: interest model (pretrained MiniLM,
    Ray Train), blurbs (SmolLM2), features, ranker; then `recsys score` on cold pairs. The blurb
    features (off by default) are added, so the gate's ranker without them is built and weighed."""
    from recsys.core.config import DEFAULT_FEATURES
    from serving.batch import score_file

    shop = colour_shop(tmp_path, users=24, days=10)
    with_blurbs = [*DEFAULT_FEATURES[:-1], "blurb", DEFAULT_FEATURES[-1]]  # request_context reads the others: last
    cfg = load_config(None, ["interest.max_train_samples=64", "interest.max_valid_requests=50", "blurbs.steps=2",
                             "blurbs.limit=6", "ranker.min_data_in_leaf=5", f"features={with_blurbs!r}"])
    metrics = train(cfg, shop, tmp_path / "run", track=False, cache_dir=tmp_path / "cache")
    assert {"interest_alone", "ranker", "ranker_no_text", "ranker_no_blurbs", "popularity"} <= set(metrics["comparison"])
    no_blurbs = json.loads((tmp_path / "run" / "ranker_no_blurbs" / "result.json").read_text())["features"]
    assert no_blurbs and not {"blurb_interest", "blurb_words", "blurb_fallback"} & set(no_blurbs)
    assert "ranker_no_blurbs" in metrics["gate"]["valid_ndcg@10"]  # the gate weighs it like any candidate
    leads = metrics["gate"]["lead"]  # each job's pick, with its paired lead on the valid requests
    assert leads and all(text.startswith("lead ") and text.endswith(("clear", "within noise")) for text in leads.values())
    for part in ("interest", "interest/replay"):  # the served model and the ranker's replay twin
        interest = json.loads((tmp_path / "run" / part / "metrics.json").read_text())
        start = next(e for e in interest["epochs"] if e["model"] == "pretrained")
        # the saved weights are the pretrained start, or a validation that beat it
        if interest["kept"] == "fine-tuned":
            assert interest["valid_auc"] > start["valid_auc"], interest["epochs"]
        else:
            assert interest["kept"] == "pretrained" and interest["valid_auc"] == start["valid_auc"]
    blurbs = pl.read_parquet(tmp_path / "run" / "blurbs" / "blurbs.parquet")
    assert blurbs.height == 24 and blurbs["blurb"].null_count() == 0
    features = pl.read_parquet(tmp_path / "run" / "features" / "test.parquet")
    assert features["interest_score"].is_not_null().all() and "blurb_interest" in features.columns
    pl.DataFrame({"user_id": ["user0", "stranger"], "item_id": ["red1", "no-such-item"]}).write_parquet(tmp_path / "c.parquet")
    scores = pl.read_parquet(score_file(tmp_path / "run", tmp_path / "c.parquet", tmp_path / "s.parquet"))
    assert scores.height == 2 and scores["score"].is_finite().all()
