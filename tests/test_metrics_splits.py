from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import ndcg_score, roc_auc_score

from recsys.core.errors import RecsysInputError
from recsys.core.metrics import mean_with_ci, per_request
from recsys.core.splits import SplitConfig, time_split


def frame(labels: list[int], scores: list[float], request: str = "r") -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": [request] * len(labels),
        "item_id": [f"i{n}" for n in range(len(labels))],
        "label": labels,
        "score": scores,
    })


def test_known_answers() -> None:
    # clicked items at ranks 2 and 4 of 5
    m = per_request(frame([0, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5])).row(0, named=True)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert m["mrr@10"] == pytest.approx(0.5)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["auc"] == pytest.approx(3 / 6)  # positives beat 2 of 3 and 1 of 3 negatives
    dcg = 1 / np.log2(3) + 1 / np.log2(5)
    assert m["ndcg@5"] == pytest.approx(dcg / (1 + 1 / np.log2(3)))


def test_requests_without_clicks_are_left_out() -> None:
    df = pl.concat([frame([0, 0], [1, 2], "none"), frame([1, 0], [2, 1], "some")])
    assert per_request(df)["request_id"].to_list() == ["some"]


def test_agrees_with_scikit_learn_on_random_requests() -> None:
    rng = np.random.default_rng(0)
    parts = []
    for r in range(60):
        n = int(rng.integers(2, 30))
        labels = (rng.random(n) < 0.3).astype(int)
        labels[rng.integers(n)] = 1  # every request has a click, so none is left out
        parts.append(frame(labels.tolist(), rng.random(n).tolist(), f"r{r:03d}"))
    got = per_request(pl.concat(parts))
    assert got.height == len(parts)
    for part, row in zip(parts, got.iter_rows(named=True)):
        assert row["request_id"] == part["request_id"][0]
        y, s = part["label"].to_numpy(), part["score"].to_numpy()
        assert row["ndcg@10"] == pytest.approx(ndcg_score([y], [s], k=10))
        if 0 < y.sum() < len(y):
            assert row["auc"] == pytest.approx(roc_auc_score(y, s))
        top = np.argsort(-s)[:10]
        assert row["recall@10"] == pytest.approx(y[top].sum() / y.sum())


def test_auc_counts_ties_as_half() -> None:
    m = per_request(frame([1, 0, 0], [0.5, 0.5, 0.1])).row(0, named=True)
    assert m["auc"] == pytest.approx(roc_auc_score([1, 0, 0], [0.5, 0.5, 0.1]))


def test_bootstrap_interval_contains_the_mean() -> None:
    est = mean_with_ci(np.random.default_rng(1).random(500))
    assert est.low < est.mean < est.high and est.high - est.low < 0.1


def events(n_requests: int) -> pl.DataFrame:
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = []
    for r in range(n_requests):
        for k in range(3):  # a request's rows span a few seconds
            rows.append((f"r{r}", "u", f"i{k}", t0 + timedelta(hours=r, seconds=k), k % 2))
    return pl.DataFrame(rows, schema=["request_id", "user_id", "item_id", "ts", "clicked"], orient="row")


def test_time_split_leaks_nothing_from_the_future_and_never_splits_a_request() -> None:
    split = time_split(events(50), SplitConfig(valid_fraction=0.2, test_fraction=0.2))
    assert split.train["ts"].max() < split.valid_start <= split.valid["ts"].min()  # type: ignore[operator]
    assert split.valid["ts"].max() < split.test_start <= split.test["ts"].min()  # type: ignore[operator]
    sets = [set(s["request_id"]) for s in (split.train, split.valid, split.test)]
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2]) and not (sets[0] & sets[2])
    assert sum(len(s) for s in sets) == 50
    assert split.test["request_id"].n_unique() == 10


def test_bad_split_config_is_a_clear_error() -> None:
    with pytest.raises(RecsysInputError, match="valid \\+ test < 1"):
        time_split(events(10), SplitConfig(valid_fraction=0.6, test_fraction=0.5))
