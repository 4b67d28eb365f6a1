"""The default pipeline on the two jobs `recsys score` gets (CONTRACT.md "Two jobs, one default"),
on tiny hand-made logs where the right answer is known:
- a news-like page: fresh articles every day, readers click new ones on their topic; a new article
  whose text matches the reader must outrank an old, once-popular one;
- a catalog: a few items everyone keeps clicking, new arrivals that few click; the popular item
  must outrank a new one whose text matches the user.
Zero-shot text (interest max_steps=0) and no blurbs keep them at about a minute each."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recsys.data.importers.events import import_events
from recsys.pipeline.configure import load_config
from recsys.pipeline.train import train

pytestmark = [pytest.mark.slow, pytest.mark.ray]
T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)
TOPICS = {
    "football": ["striker scores a late goal in the derby", "the coach names his squad for the cup final",
                 "the goalkeeper saves a penalty in extra time", "the club signs a winger before the transfer deadline"],
    "cooking": ["a simple recipe for lemon pasta with garlic", "how to bake sourdough bread at home",
                "the chef shares a slow-cooked lamb stew", "five easy soups for a cold winter evening"],
}
# not in the default feature list: blurbs (slow generation) are tested elsewhere
OVERRIDES = ["stages.blurbs=false", "interest.max_steps=0", "ranker.min_data_in_leaf=5",
             'features=["item_popularity","item_trend","user_activity","user_affinity","user_topic","collaborative","interest","request_context"]']


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


def _article(topic: str, n: int, rng: np.random.Generator) -> tuple[str, str]:
    phrase = TOPICS[topic][int(rng.integers(len(TOPICS[topic])))]
    return f"{topic.title()}: {phrase} ({n})", f"{phrase.capitalize()}. More {topic} news, story {n}."


def _write(tmp: Path, items: list[tuple[str, str, str]], rows: list[tuple[str, str, datetime, int]]) -> Path:
    pl.DataFrame(items, schema=["item_id", "title", "text"], orient="row").write_csv(tmp / "items.csv")
    pl.DataFrame([(u, i, t.isoformat(), c) for u, i, t, c in rows], schema=["user_id", "item_id", "timestamp", "clicked"],
                 orient="row").write_csv(tmp / "events.csv")
    import_events(tmp / "events.csv", tmp / "items.csv", tmp / "data")
    return tmp / "data"


def news_site(tmp: Path, days: int = 16, users: int = 40, seed: int = 0) -> tuple[Path, dict[str, str]]:
    """Every day 3 new articles per topic; each reader visits daily and is shown the day's new
    articles and 4 older ones; clicks: 0.6 on a new article of the reader's topic, 0.04 otherwise.
    "hit" was day 0's article that everyone clicked; it is still shown, no longer clicked.
    Returns the data and, for the test, unseen articles: one new per topic."""
    rng = np.random.default_rng(seed)
    items, rows, by_day = [("hit", "Breaking: the big story everyone is reading", "The big story of the day.")], [], []
    for day in range(days):
        fresh = []
        for topic in TOPICS:
            for k in range(3):
                item_id = f"{topic}-{day}-{k}"
                items.append((item_id, *_article(topic, day * 3 + k, rng)))
                fresh.append(item_id)
        by_day.append(fresh)
    for u in range(users):
        topic = list(TOPICS)[u % 2]
        for day in range(days):
            ts = T0 + timedelta(days=day, hours=8 + int(rng.integers(0, 10)), minutes=u)
            older = [i for d in by_day[max(0, day - 3):day] for i in d]
            shown = by_day[day] + list(rng.choice(older, min(4, len(older)), replace=False)) + ["hit"]
            for item in shown:
                if item == "hit":
                    p = 0.9 if day == 0 else 0.0
                else:
                    p = 0.6 if item.startswith(topic) and item in by_day[day] else 0.04
                rows.append((f"reader{u}", item, ts, int(rng.random() < p)))
    unseen = {topic: f"{topic}-new" for topic in TOPICS}
    items += [(item_id, *_article(topic, 999, rng)) for topic, item_id in unseen.items()]
    return _write(tmp, items, rows), unseen


def test_a_new_article_that_matches_the_reader_outranks_an_old_popular_one(tmp_path: Path) -> None:
    data, unseen = news_site(tmp_path)
    metrics = train(load_config(None, OVERRIDES), data, tmp_path / "run", track=False)
    from serving.scorer import Scorer

    scorer = Scorer(tmp_path / "run")
    for reader, topic in (("reader0", "football"), ("reader1", "cooking")):
        other = next(t for t in TOPICS if t != topic)
        page = pl.DataFrame({"user_id": reader, "item_id": ["hit", unseen[topic], unseen[other], f"{topic}-3-0"]})
        scores = dict(zip(page["item_id"], scorer.score(page)))
        assert scores[unseen[topic]] > scores["hit"], (reader, scores, metrics["gate"]["line"])
        assert scores[unseen[topic]] > scores[unseen[other]], (reader, scores, metrics["gate"]["line"])


def catalog_shop(tmp: Path, days: int = 60, users: int = 60, seed: int = 1) -> Path:
    """Long-lived items: 4 hits that half of all users click each week they visit, 40 niche
    items of two topics clicked rarely (0.05 each view, on the user's topic); items shown are
    the 4 hits and 8 random niche ones. Late arrivals (days 45+) are clicked at 0.02."""
    rng = np.random.default_rng(seed)
    hits = [f"hit{k}" for k in range(4)]
    niche = {topic: [f"{topic}{k}" for k in range(20)] for topic in TOPICS}
    late = {topic: [f"late-{topic}{k}" for k in range(5)] for topic in TOPICS}
    items = [(h, f"Bestseller {k}", "A bestseller everyone talks about.") for k, h in enumerate(hits)]
    for topic in TOPICS:
        items += [(i, *_article(topic, k, rng)) for k, i in enumerate(niche[topic] + late[topic])]
    rows = []
    for u in range(users):
        topic = list(TOPICS)[u % 2]
        for day in range(0, days, 3):
            ts = T0 + timedelta(days=day + int(rng.integers(0, 3)), hours=int(rng.integers(0, 20)), minutes=u)
            pool = niche["football"] + niche["cooking"] + (late["football"] + late["cooking"] if day >= 45 else [])
            for item in hits + list(rng.choice(pool, 8, replace=False)):
                p = 0.5 if item in hits else (0.02 if item.startswith("late") else 0.05 if item.startswith(topic) else 0.01)
                rows.append((f"user{u}", item, ts, int(rng.random() < p)))
    for u in range(4):  # newcomers: two visits at the end, shown niche items only, on-topic clicks
        topic = list(TOPICS)[u % 2]
        for day in (days - 6, days - 3):
            for item in niche[topic][:3] + niche[list(TOPICS)[(u + 1) % 2]][:3]:
                rows.append((f"newcomer{u}", item, T0 + timedelta(days=day, hours=u), int(item.startswith(topic))))
    return _write(tmp, items, rows)


def test_on_a_catalog_the_popular_item_outranks_a_new_one_with_matching_text(tmp_path: Path) -> None:
    data = catalog_shop(tmp_path)
    metrics = train(load_config(None, OVERRIDES), data, tmp_path / "run", track=False)
    from serving.scorer import Scorer

    scorer = Scorer(tmp_path / "run")
    for user, topic in (("newcomer0", "football"), ("newcomer1", "cooking")):
        # the user's whole unseen catalog, as CONTRACT.md's protocol scores it
        catalog = pl.read_parquet(data / "items.parquet")["item_id"].to_list()
        seen = set(pl.read_parquet(data / "events.parquet").filter(pl.col("user_id") == user)["item_id"].to_list())
        page = pl.DataFrame({"user_id": user, "item_id": [i for i in catalog if i not in seen]})
        scores = dict(zip(page["item_id"], scorer.score(page)))
        assert min(scores[f"hit{k}"] for k in range(4)) > max(scores[f"late-{topic}{k}"] for k in range(5)), (
            user, scores, metrics["gate"]["line"])
