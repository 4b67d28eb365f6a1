"""The news profile of the synthetic generator: short-lived articles, topical text, taste-driven clicks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.core.dataset import load_dataset, validate_dataset
from recsys.data.synth_news import NewsConfig, articles_per_day, generate, synth_news

SMALL = NewsConfig(users=300, days=20, seed=5)


@pytest.fixture(scope="module")
def world():
    return generate(SMALL)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    cfg = NewsConfig(users=60, days=4, seed=11)
    a = synth_news(cfg, tmp_path / "a")
    b = synth_news(cfg, tmp_path / "b")
    c = synth_news(NewsConfig(users=60, days=4, seed=12), tmp_path / "c")
    assert a["files"] == b["files"]
    assert a["files"]["events.parquet"] != c["files"]["events.parquet"]
    assert a["files"]["items.parquet"] != c["files"]["items.parquet"]


def test_dataset_is_valid_with_hidden_topics_and_publication_times(tmp_path: Path) -> None:
    synth_news(NewsConfig(users=80, days=5, seed=3), tmp_path / "n")
    assert validate_dataset(tmp_path / "n") == []
    data = load_dataset(tmp_path / "n")
    assert data.ground_truth is not None and data.ground_truth.height == data.events.height
    assert data.items["category"].null_count() == data.items.height  # the topic stays hidden
    assert data.items["created_at"].null_count() == 0
    assert (data.items["text"].str.len_chars() > 60).all() and (data.items["title"].str.len_chars() > 10).all()
    shown = data.events.join(data.items.select("item_id", "created_at"), on="item_id")
    age_days = (shown["ts"] - shown["created_at"]).dt.total_seconds() / 86_400
    assert age_days.min() >= 0, "no article is shown before it is published"
    assert age_days.max() <= NewsConfig.max_age_days + 1e-6


def test_fresh_articles_every_day(world) -> None:
    start = world.events["ts"].min()
    per_day = (world.items.filter(pl.col("created_at") >= start.replace(hour=0, minute=0, second=0, microsecond=0))
               .group_by(pl.col("created_at").dt.date()).len())
    lo, hi = SMALL.articles_per_day
    assert per_day.height == SMALL.days
    assert per_day["len"].min() >= lo and per_day["len"].max() <= hi
    assert articles_per_day(1500, 27) == (40, 60)


def test_most_articles_shown_after_the_cutoff_are_new(world) -> None:
    ev = world.events
    cutoff = ev["ts"].quantile(0.8, "nearest")
    before, after = ev.filter(pl.col("ts") < cutoff), ev.filter(pl.col("ts") >= cutoff)
    seen = before.select("item_id").unique()
    new_impressions = after.join(seen, on="item_id", how="anti").height / after.height
    distinct = after.select("item_id").unique()
    new_distinct = distinct.join(seen, on="item_id", how="anti").height / distinct.height
    assert new_impressions > 0.75
    assert new_distinct > 0.5
    assert before["clicked"].sum() > 500


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z][a-z'-]+", text.lower()))


def test_text_carries_the_topic(world) -> None:
    rng = np.random.default_rng(0)
    words = [_words(f"{t} {b}") for t, b in world.items.select("title", "text").iter_rows()]
    # the template's own words (the, on, said, weekdays...) are in many articles: leave them out
    df: dict[str, int] = {}
    for w in words:
        for x in w:
            df[x] = df.get(x, 0) + 1
    common = {x for x, n in df.items() if n > 0.1 * len(words)}
    words = [w - common for w in words]
    topic = world.item_topic
    a, b = rng.integers(len(words), size=(2, 4000))
    keep = a != b
    a, b = a[keep], b[keep]
    jaccard = np.array([len(words[i] & words[j]) / len(words[i] | words[j]) for i, j in zip(a, b)])
    same = topic[a] == topic[b]
    assert same.sum() > 50
    assert jaccard[same].mean() > 3 * jaccard[~same].mean()
    # ... but noisily: articles of different topics still share words (related topics, a second topic)
    assert (jaccard[~same] > 0).mean() > 0.05
    assert (jaccard[same] == 0).mean() > 0.05


def test_clicks_follow_taste_freshness_and_the_ground_truth(world) -> None:
    ev = (world.events.join(world.ground_truth, on=["request_id", "item_id"], maintain_order="left")
          .join(world.items.select("item_id", "created_at"), on="item_id", maintain_order="left"))
    assert abs(ev["clicked"].mean() - ev["click_prob"].mean()) < 0.01  # type: ignore[operator]
    user = np.array([int(u[1:]) for u in ev["user_id"]])
    item = np.array([int(i[1:]) for i in ev["item_id"]])
    taste = world.user_taste[user, world.item_topic[item]]
    clicked = ev["clicked"].to_numpy()
    liked = taste > np.quantile(taste, 0.8)
    disliked = taste < np.quantile(taste, 0.5)
    assert clicked[liked].mean() > 2.5 * clicked[disliked].mean()
    age = ((ev["ts"] - ev["created_at"]).dt.total_seconds() / 3600).to_numpy()
    assert clicked[age < 12].mean() > 1.5 * clicked[age > 36].mean()
    # several clicks possible in one visit
    assert ev.group_by("request_id").agg(pl.col("clicked").sum())["clicked"].max() >= 2  # type: ignore[operator]


def test_cli_synth_profile_news(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    result = CliRunner().invoke(app, ["data", "synth", "--profile", "news", "--users", "50", "--items", "120",
                                      "--days", "3", "--out", str(tmp_path / "news")])
    assert result.exit_code == 0, result.output
    data = load_dataset(tmp_path / "news")
    assert 80 <= data.items.height <= 160  # about --items articles
    assert data.items["category"].null_count() == data.items.height
    assert data.ground_truth is not None
