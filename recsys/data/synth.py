"""The synthetic shop: the embedded default dataset, with a known click model.

Items have a category, colour, style, material, brand and price; their title and description are
written from those attributes, so the text carries the signal. Users hold latent preferences over
the same attributes that drift slowly (a daily random walk). Each session shows a slate of items
picked by the shop's old logic (half by appeal, half at random) and clicks are drawn from
    relevance = sigmoid(base + taste(user, item, day) + appeal(item) + novelty(item, day))
    click_prob = relevance * examination(position)
Items keep arriving during the period (cold start is real). The exact probabilities go to
ground_truth.parquet so an oracle ranking can be scored. Same seed, same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from recsys.core.dataset import write_dataset
from recsys.core.schemas import GROUND_TRUTH_SCHEMA, REJECTS_SCHEMA

CATEGORIES: dict[str, dict[str, Any]] = {
    "mug": {"materials": ["ceramic", "stoneware", "enamel", "glass"], "price": 14,
            "uses": ["morning coffee", "tea", "hot chocolate"], "detail": "holds 350 ml and is dishwasher safe"},
    "sneaker": {"materials": ["canvas", "leather", "suede", "mesh"], "price": 85,
                "uses": ["city walks", "running errands", "weekend trips"], "detail": "has a cushioned sole"},
    "backpack": {"materials": ["nylon", "canvas", "leather", "recycled polyester"], "price": 60,
                 "uses": ["commuting", "hiking", "travel"], "detail": "has a padded laptop sleeve"},
    "lamp": {"materials": ["brass", "ceramic", "oak", "steel"], "price": 45,
             "uses": ["reading", "the bedside", "a home office"], "detail": "takes a warm LED bulb"},
    "headphones": {"materials": ["aluminium", "plastic", "leather", "steel"], "price": 120,
                   "uses": ["commuting", "focus work", "workouts"], "detail": "has 30 hours of battery"},
    "t-shirt": {"materials": ["organic cotton", "linen", "bamboo", "merino"], "price": 25,
                "uses": ["everyday wear", "layering", "summer days"], "detail": "has a relaxed fit"},
    "notebook": {"materials": ["recycled paper", "leather", "linen", "kraft"], "price": 12,
                 "uses": ["journaling", "sketching", "meeting notes"], "detail": "has 192 dotted pages"},
    "water bottle": {"materials": ["steel", "glass", "aluminium", "tritan"], "price": 22,
                     "uses": ["the gym", "hiking", "the office"], "detail": "keeps drinks cold for 24 hours"},
}
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "pink", "grey", "orange", "purple"]
STYLES = ["minimalist", "vintage", "sporty", "rustic", "modern", "playful"]
BRANDS = ["Northwind", "Alder & Co", "Kestrel", "Lumen", "Tidewater", "Oakridge",
          "Brightside", "Fernhill", "Cobalt", "Marlow", "Juniper", "Halcyon"]
OPENERS = ["Meet the", "Say hello to the", "Introducing the", "This is the", "Discover the"]
CLOSERS = ["A shop favourite.", "Made to last.", "Ships in recycled packaging.", "Easy to care for.",
           "A thoughtful gift.", ""]


@dataclass(frozen=True)
class SynthConfig:
    users: int = 2000
    items: int = 1000
    days: int = 30
    seed: int = 7
    slate_size: int = 10
    sessions_per_user: float = 5.0
    new_item_share: float = 0.3
    start: str = "2026-01-01T00:00:00+00:00"
    base_logit: float = -2.6
    taste_scale: float = 1.0
    drift_per_day: float = 0.08
    position_decay: float = 0.6


def _make_items(cfg: SynthConfig, rng: np.random.Generator, start: datetime) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    n = cfg.items
    cat_names = list(CATEGORIES)
    cat = rng.integers(len(cat_names), size=n)
    colour = rng.integers(len(COLOURS), size=n)
    style = rng.integers(len(STYLES), size=n)
    brand = rng.integers(len(BRANDS), size=n)
    material = rng.integers(4, size=n)
    appeal = rng.normal(0.0, 0.5, size=n)
    price = np.array([CATEGORIES[cat_names[c]]["price"] for c in cat]) * rng.lognormal(0, 0.3, size=n)
    is_new = rng.random(n) < cfg.new_item_share
    created_day = np.where(is_new, rng.uniform(0, cfg.days, size=n), -rng.uniform(1, 60, size=n))
    rows = []
    for i in range(n):
        spec = CATEGORIES[cat_names[cat[i]]]
        mat = spec["materials"][material[i]]
        noun = cat_names[cat[i]]
        title = f"{BRANDS[brand[i]]} {STYLES[style[i]].title()} {COLOURS[colour[i]].title()} {mat.title()} {noun.title()}"
        use = spec["uses"][rng.integers(3)]
        text = (
            f"{OPENERS[rng.integers(len(OPENERS))]} {STYLES[style[i]]} {noun} in {COLOURS[colour[i]]} {mat} by "
            f"{BRANDS[brand[i]]}. Made for {use}, it {spec['detail']}. Priced at ${price[i]:.2f}. "
            f"{CLOSERS[rng.integers(len(CLOSERS))]}"
        ).strip()
        attributes = {"colour": COLOURS[colour[i]], "style": STYLES[style[i]], "material": mat,
                      "brand": BRANDS[brand[i]], "price": f"{price[i]:.2f}"}
        rows.append((f"i{i:05d}", title, text, noun, json.dumps(attributes, sort_keys=True),
                     start + timedelta(days=float(created_day[i]))))
    items = pl.DataFrame(rows, schema=["item_id", "title", "text", "category", "attributes", "created_at"], orient="row")
    items = items.with_columns(pl.col("created_at").dt.cast_time_unit("us").dt.replace_time_zone("UTC"))
    arrays = {"cat": cat, "colour": colour, "style": style, "brand": brand, "appeal": appeal, "created_day": created_day}
    return items, arrays


def _make_tastes(cfg: SynthConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per user and day, a taste score for every value of each attribute (drifting slowly)."""
    sizes = {"cat": len(CATEGORIES), "colour": len(COLOURS), "style": len(STYLES), "brand": len(BRANDS)}
    scales = {"cat": 1.4, "colour": 1.0, "style": 0.8, "brand": 0.5}
    tastes = {}
    for name, k in sizes.items():
        start = rng.normal(0, scales[name] * cfg.taste_scale, size=(cfg.users, 1, k))
        walk = np.cumsum(rng.normal(0, cfg.drift_per_day, size=(cfg.users, cfg.days, k)), axis=1)
        tastes[name] = start + walk
    return tastes


def generate(cfg: SynthConfig) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(items, events, ground_truth) in the contract's schemas."""
    rng = np.random.default_rng(cfg.seed)
    start = datetime.fromisoformat(cfg.start).astimezone(timezone.utc)
    items, it = _make_items(cfg, rng, start)
    tastes = _make_tastes(cfg, rng)
    activity = rng.lognormal(0, 0.6, size=cfg.users)
    sessions = rng.poisson(cfg.sessions_per_user * activity / activity.mean())
    user_of = np.repeat(np.arange(cfg.users), sessions)
    when = np.sort(rng.uniform(0, cfg.days, size=user_of.size))
    user_of = rng.permutation(user_of)  # each session its own time, users interleaved
    examine = 1.0 / np.arange(1, cfg.slate_size + 1) ** cfg.position_decay
    shop_weight = np.exp(it["appeal"])
    rows_u, rows_i, rows_t, rows_p = [], [], [], []
    for s in tqdm(range(user_of.size), desc="synth sessions", unit="session", mininterval=1.0, disable=None):
        available = np.flatnonzero(it["created_day"] <= when[s])
        k = min(cfg.slate_size, available.size)
        by_appeal = rng.random() < 0.5
        p = shop_weight[available] / shop_weight[available].sum() if by_appeal else None
        shown = rng.choice(available, size=k, replace=False, p=p)
        rows_u.append(np.full(k, user_of[s]))
        rows_i.append(shown)
        rows_t.append(np.full(k, when[s]))
        rows_p.append(np.arange(1, k + 1))
    u, i, t, pos = (np.concatenate(x) for x in (rows_u, rows_i, rows_t, rows_p))
    day = np.minimum(t.astype(int), cfg.days - 1)
    taste = sum(tastes[a][u, day, it[a][i]] for a in ("cat", "colour", "style", "brand"))
    age = t - it["created_day"][i]
    novelty = 0.6 * np.exp(-np.maximum(age, 0) / 3.0)  # new arrivals get a short-lived boost
    relevance = 1.0 / (1.0 + np.exp(-(cfg.base_logit + taste + it["appeal"][i] + novelty)))
    click_prob = relevance * examine[pos - 1]
    clicked = (rng.random(click_prob.size) < click_prob).astype(np.int8)
    request_no = np.repeat(np.arange(user_of.size), [r.size for r in rows_u])
    ts_us = (np.datetime64(start.replace(tzinfo=None), "us") + (t * 86_400e6).astype("timedelta64[us]"))
    events = pl.DataFrame({
        "request_id": [f"r{n:07d}" for n in request_no],
        "user_id": [f"u{x:05d}" for x in u],
        "item_id": items["item_id"].gather(i),
        "ts": pl.Series(ts_us).dt.replace_time_zone("UTC"),
        "position": pos.astype(np.int32),
        "clicked": clicked,
        "rating": pl.Series([None] * u.size, dtype=pl.Float32),
    })
    truth = pl.DataFrame({"request_id": events["request_id"], "item_id": events["item_id"],
                          "relevance": relevance, "click_prob": click_prob}, schema=GROUND_TRUTH_SCHEMA)
    return items, events, truth


def synth(cfg: SynthConfig, out: Path) -> dict[str, Any]:
    items, events, truth = generate(cfg)
    return write_dataset(
        out,
        items=items,
        events=events,
        rejects=[REJECTS_SCHEMA.to_frame().lazy()],
        rows_in={"items": items.height, "events": events.height},
        source={"kind": "synth", **asdict(cfg)},
        ground_truth=truth,
        extra={"placeholder_items": 0},
    )
