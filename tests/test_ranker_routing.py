"""One ranker per job: a routed ranker scores each request with the model of its shape (catalog or
page, by candidate count), the release gate picks each job's winner on that job's valid groups,
and boosting stops on held-out training users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.ranker import ROUTE_FEATURE, RoutedRanker, fingerprint, held_out_users, load_ranker, route_threshold, train
from recsys.core.config import RankerConfig
from recsys.pipeline.report import gate_lines
from recsys.pipeline.train import release_gate


def _groups(shape: str, requests: int, size: int, good: str, seed: int) -> pl.DataFrame:
    """Ranking groups where the clicked item is the one with the highest `good` feature (a or b)."""
    rng = np.random.default_rng(seed)
    n = requests * size
    a, b = rng.normal(size=n), rng.normal(size=n)
    request = np.repeat(np.arange(requests), size)
    key = a if good == "a" else b
    best = pl.DataFrame({"r": request, "k": key}).with_columns(top=pl.col("k") == pl.col("k").max().over("r"))["top"]
    return pl.DataFrame({
        "request_id": [f"{shape}{r}" for r in request],
        "user_id": [f"u{r % (requests // 2 + 1)}{shape}" for r in request],
        "item_id": [f"i{k}" for k in range(n)],
        "label": best.cast(pl.Int32),
        "shape": shape,
        "a": a, "b": b,
        ROUTE_FEATURE: np.full(n, float(size)),
    })


CFG = RankerConfig(n_estimators=40, min_data_in_leaf=5, early_stopping_rounds=10, stop_fraction=0.0)


@pytest.fixture(scope="module")
def routed() -> RoutedRanker:
    # the catalog job rewards feature a, the page job feature b
    catalog, page = _groups("catalog", 60, 200, "a", 0), _groups("page", 120, 10, "b", 1)
    routes = {shape: train(CFG, frame, frame, ["a", "b"], ["g"])[0] for shape, frame in (("catalog", catalog), ("page", page))}
    return RoutedRanker(routes, route_threshold(pl.concat([catalog, page])) or 0.0)


def test_threshold_lies_between_page_and_catalog_sizes() -> None:
    frame = pl.concat([_groups("catalog", 4, 500, "a", 0), _groups("page", 8, 12, "b", 1)])
    threshold = route_threshold(frame)
    assert threshold is not None and 12 < threshold < 500
    assert route_threshold(frame.filter(pl.col("shape") == "page")) is None  # one shape: nothing to route


def test_each_request_is_scored_by_its_jobs_model(routed: RoutedRanker) -> None:
    assert routed.features == ["a", "b", ROUTE_FEATURE]
    values = np.array([[4.0, -4.0, 1000.0], [-4.0, 4.0, 1000.0], [4.0, -4.0, 10.0], [-4.0, 4.0, 10.0]])
    scores = routed.predict(values)
    assert scores[0] > scores[1]  # a catalog request: feature a wins
    assert scores[3] > scores[2]  # a page request: feature b wins
    assert np.allclose(scores[:2], routed.routes["catalog"].predict(values[:2][:, [0, 1]]))
    contrib = routed.contributions(values)
    assert contrib.shape == (4, len(routed.features) + 1)
    assert np.allclose(contrib.sum(axis=1), scores)  # contributions add up to each row's own route's score
    assert np.all(contrib[:, routed.features.index(ROUTE_FEATURE)] == 0)  # routing is not a feature either route read


def test_a_routed_ranker_saves_and_loads_with_a_fingerprint_of_every_route(routed: RoutedRanker, tmp_path: Path) -> None:
    routed.save(tmp_path / "ranker")
    loaded = load_ranker(tmp_path / "ranker")
    assert isinstance(loaded, RoutedRanker) and loaded.threshold == routed.threshold
    values = np.random.default_rng(3).normal(size=(50, len(routed.features)))
    values[:, routed.features.index(ROUTE_FEATURE)] = np.where(np.arange(50) % 2, 5000.0, 5.0)
    assert np.array_equal(loaded.predict(values), routed.predict(values))
    before = fingerprint(tmp_path / "ranker")
    routed.routes["catalog"].save(tmp_path / "ranker" / "page")  # a different page route
    assert fingerprint(tmp_path / "ranker") != before


def _metrics(catalog: float, page: float) -> dict:
    def est(v: float) -> dict:
        return {"ndcg@10": {"mean": v, "low": v, "high": v, "n": 10}}

    return {**est((catalog + page) / 2), "shape:catalog": est(catalog), "shape:page": est(page)}


def test_the_gate_ships_each_jobs_winner_and_says_which_job_the_ranker_lost() -> None:
    results = {"ranker_full": {"valid": _metrics(0.20, 0.70)}, "ranker_no_text": {"valid": _metrics(0.21, 0.60)},
               "baseline_recent_popularity": {"valid": _metrics(0.25, 0.50)}}
    baselines = {"recent_popularity": _metrics(0.25, 0.50), "interest_alone": _metrics(0.05, 0.65)}
    gate = release_gate(results, baselines, ("catalog", "page"))
    assert gate["routes"] == {"catalog": "baseline_recent_popularity", "page": "ranker_full"}
    assert "catalog requests: the ranker (valid nDCG@10 0.2000) loses to baseline_recent_popularity" in gate["line"]
    assert "page requests: shipping the ranker (valid nDCG@10 0.7000; best baseline interest_alone 0.6500)" in gate["line"]
    one = release_gate(results, baselines)  # no routing: the mean over shapes decides
    assert one["shipped"] == "ranker_full" and "routes" not in one


def test_boosting_stops_on_held_out_users_not_on_valid() -> None:
    frame = _groups("page", 200, 10, "b", 2)
    fit, stop = held_out_users(frame, 0.2, seed=13)
    assert set(fit["user_id"]).isdisjoint(stop["user_id"]) and fit.height + stop.height == frame.height
    assert 0.1 < stop["user_id"].n_unique() / frame["user_id"].n_unique() < 0.3
    assert held_out_users(frame, 0.2, seed=13)[1].equals(stop)  # the same users every run
    empty_valid = frame.head(0)  # train() never touches valid when held-out users can stop it
    _, info = train(RankerConfig(n_estimators=30, min_data_in_leaf=5, stop_fraction=0.2), frame, empty_valid, ["a", "b"], ["g"])
    assert info["stopped_on"] == "held-out users" and "held-out users" in info["curves"]


def test_the_gate_says_whether_the_shipped_lead_is_clear_or_within_noise() -> None:
    results = {"ranker_full": {"valid": _metrics(0.30, 0.70)}, "baseline_recent_popularity": {"valid": _metrics(0.28, 0.50)}}
    baselines = {"recent_popularity": _metrics(0.28, 0.50)}
    rng = np.random.default_rng(0)
    n = 40
    catalog_rival = rng.uniform(0.1, 0.5, n)
    page_rival = rng.uniform(0.3, 0.6, n)
    per_req = pl.DataFrame({
        "request_id": [f"c{k}" for k in range(n)] + [f"p{k}" for k in range(n)],
        "shape": ["catalog"] * n + ["page"] * n,
        # catalog: the ranker leads by 0.02 on average, but by +-0.2 request to request; page: by 0.2 on every request
        "ranker_full": np.concatenate([catalog_rival + 0.02 + rng.choice([-0.2, 0.2], n), page_rival + 0.2]),
        "baseline:recent_popularity": np.concatenate([catalog_rival, page_rival]),
    })
    gate = release_gate(results, baselines, ("catalog", "page"), per_req)
    assert gate["routes"] == {"catalog": "ranker_full", "page": "ranker_full"}
    assert gate["lead"]["catalog"].endswith(f"over recent_popularity on {n} valid requests: within noise")
    assert gate["lead"]["page"].startswith("lead +0.200 [+0.200, +0.200]") and gate["lead"]["page"].endswith("clear")
    lines = gate_lines(gate)
    assert lines[0] == gate["line"] and "lead" not in gate["line"]
    assert lines[1:] == [f"catalog pick, {gate['lead']['catalog']}", f"page pick, {gate['lead']['page']}"]
    assert all(len(line) <= 120 for line in lines[1:])  # one short line each
    assert gate_lines(release_gate(results, baselines, ("catalog", "page"))) == [gate["line"]]  # no per-request table: no claim
