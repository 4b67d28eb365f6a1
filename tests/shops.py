"""Small shops with a known answer, built in the test (shared by pipeline and serving tests)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.importers.events import import_events

HOSTILE_TITLE = '<img src=x onerror="window.__pwned=1">Red mug red0'


def colour_shop(tmp: Path, users: int = 40, days: int = 12, seed: int = 0, hostile: bool = False) -> Path:
    """Half the users click only red items, half only blue: a known answer for the ranker.
    `hostile`: red0's title and text carry HTML/script, as a malicious catalog feed might."""
    rng = np.random.default_rng(seed)
    reds, blues = [f"red{n}" for n in range(12)], [f"blue{n}" for n in range(12)]
    items = [(i, f"{i[:-1].title()} mug {i}", f"A {i.rstrip('0123456789')} ceramic mug") for i in reds + blues]
    if hostile:
        items[0] = ("red0", HOSTILE_TITLE, "A red ceramic mug. <script>window.__pwned = 2</script>")
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = []
    for u in range(users):
        liked = "red" if u % 2 == 0 else "blue"
        for day in range(days):
            ts = t0 + timedelta(days=day, hours=int(rng.integers(0, 20)), minutes=u)
            shown = list(rng.choice(reds, 3, replace=False)) + list(rng.choice(blues, 3, replace=False))
            for item in shown:
                click = int(rng.random() < (0.7 if item.startswith(liked) else 0.03))
                rows.append((f"user{u}", item, ts.isoformat(), click))
    pl.DataFrame(items, schema=["item_id", "title", "text"], orient="row").with_columns(
        category=pl.col("item_id").str.replace(r"\d+$", "")
    ).write_csv(tmp / "items.csv")
    pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "clicked"], orient="row").write_csv(tmp / "events.csv")
    import_events(tmp / "events.csv", tmp / "items.csv", tmp / "shop")
    return tmp / "shop"
