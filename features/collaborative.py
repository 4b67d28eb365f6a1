"""Collaborative filtering as a ranker feature: EASE (Steck 2019), a closed-form item-item model.

`cf_score` of (user, item) = sum of the item-item weights from every item the user clicked before
the moment of ranking. The weights come from the clicks of the log strictly before a refit
moment (training replays a few of them; serving uses the fit of the whole training log, saved as
the `cf` artefact), so no feature sees the future. Items outside the fitted vocabulary (new items,
or the tail past MAX_ITEMS) and users without clicks score 0: no collaborative evidence, which the
ranker tells apart from a low score through `item_is_new` and `user_clicks_all`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from features.history import rows_by_history
from features.registry import KEYS, FeatureContext, FeatureSpec, MomentContext, MomentValues, at_moment, register

MAX_ITEMS = 2500  # the most-clicked items get weights: a dense n x n inverse, ~1 s at 2.5k items on 2 cores
L2 = 100.0  # EASE's ridge strength (λ)
MAX_REFITS = 4  # training targets at many moments share at most this many fits
CHUNK = 2048  # (user, moment) rows scored per dense block


@dataclass(frozen=True)
class ItemItem:
    index: dict[str, int]  # item_id -> row/column of `weights`
    weights: np.ndarray  # float32 (n, n), zero diagonal

    @property
    def size(self) -> int:
        return len(self.index)


def fit_ease(log: pl.DataFrame, l2: float = L2, max_items: int = MAX_ITEMS) -> ItemItem:
    """EASE weights from the clicks of `log` (each (user, item) clicked at least once counts once)."""
    clicks = log.filter(pl.col("clicked") == 1).select("user_id", "item_id").unique()
    top = (clicks.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False]).head(max_items))
    if top.height == 0:
        return ItemItem({}, np.zeros((0, 0), np.float32))
    index = {item: k for k, item in enumerate(top["item_id"].to_list())}
    kept = clicks.join(top.select("item_id"), on="item_id", how="semi")
    users = {u: k for k, u in enumerate(kept["user_id"].unique().sort().to_list())}
    rows = np.array([users[u] for u in kept["user_id"].to_list()], dtype=np.int64)
    cols = np.array([index[i] for i in kept["item_id"].to_list()], dtype=np.int64)
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), len(index)))
    gram = (x.T @ x).toarray() + l2 * np.eye(len(index))
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)
    np.fill_diagonal(weights, 0.0)
    return ItemItem(index, weights.astype(np.float32))


def cf_scores(model: ItemItem, histories: list[list[str]], items: list[str]) -> np.ndarray:
    """Row-wise score of items[k] for a user who clicked histories[k] (float64; 0 without evidence).

    Per distinct history, the weight rows of its clicked items summed for the wanted columns
    only, one after another in ascending row order in float32, from 0: the very sums (and bits)
    of the sparse product `clicks @ weights` this replaced, without a (users x catalog) product
    (tests/test_moment.py compares the two)."""
    out = np.zeros(len(items), dtype=np.float64)
    if model.size == 0 or not items:
        return out
    item_col = np.array([model.index.get(i, -1) for i in items], dtype=np.int64)
    for key, rows in rows_by_history(histories, lambda h: tuple(sorted(set(h)))).items():
        clicked = sorted(j for j in (model.index.get(i) for i in key) if j is not None)
        mine = np.array(rows, dtype=np.int64)
        mine = mine[item_col[mine] >= 0]
        if clicked and len(mine):
            block = model.weights[np.ix_(clicked, item_col[mine])]
            # cumsum adds in order (np.add.reduce may sum pairwise); + 0 as the product's start
            total = np.cumsum(block, axis=0, dtype=np.result_type(np.float32, block.dtype))[-1]
            out[mine] = total + total.dtype.type(0.0)
    return out


def cf_scores_sparse(model: ItemItem, histories: list[list[str]], items: list[str]) -> np.ndarray:
    """The sparse-product form of `cf_scores` (what it replaced), kept as its reference in tests."""
    out = np.zeros(len(items), dtype=np.float64)
    if model.size == 0 or not items:
        return out
    keys = {tuple(sorted(set(h))): None for h in histories}
    key_at = {k: n for n, k in enumerate(keys)}
    rows, cols = [], []
    for n, key in enumerate(keys):
        for item in key:
            j = model.index.get(item)
            if j is not None:
                rows.append(n)
                cols.append(j)
    x = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(keys), model.size))
    hist_row = np.array([key_at[tuple(sorted(set(h)))] for h in histories], dtype=np.int64)
    item_col = np.array([model.index.get(i, -1) for i in items], dtype=np.int64)
    for start in range(0, len(keys), CHUNK):
        block = np.asarray((x[start:start + CHUNK] @ model.weights), dtype=np.float64)
        mine = (hist_row >= start) & (hist_row < start + CHUNK) & (item_col >= 0)
        out[mine] = block[hist_row[mine] - start, item_col[mine]]
    return out


def _refit_moments(ts: pl.Series) -> list[datetime]:
    """The moments to fit at: every distinct target moment when there are few, else quantiles."""
    distinct = ts.unique().sort()
    if distinct.len() <= MAX_REFITS:
        return distinct.to_list()
    return sorted({distinct.quantile(q, "lower") for q in np.linspace(0.0, 1.0, MAX_REFITS)})  # type: ignore[misc]


def _clicked_before(log: pl.DataFrame, targets: pl.DataFrame) -> list[list[str]]:
    """Per target row, every item its user clicked strictly before the row's ts."""
    keys = targets.select("user_id", "ts").unique()
    clicks = log.filter(pl.col("clicked") == 1).select("user_id", "item_id", _at="ts")
    found = (keys.join(clicks, on="user_id").filter(pl.col("_at") < pl.col("ts"))
             .group_by("user_id", "ts").agg(history=pl.col("item_id").unique()))
    rows = targets.select("user_id", "ts").join(found, on=["user_id", "ts"], how="left", maintain_order="left")
    return [h if h is not None else [] for h in rows["history"].to_list()]


@register(
    "collaborative",
    [FeatureSpec("cf_score", pl.Float32, "EASE item-item score from the items the user clicked (0: new item or no clicks)")],
)
def collaborative(ctx: FeatureContext) -> pl.DataFrame:
    targets = ctx.targets.select(*KEYS, "user_id", "ts").with_row_index("_row")
    moments = _refit_moments(targets["ts"])
    # each target uses the latest fit at or before its moment (the earliest fit for any before it)
    fit_at = targets.sort("ts").join_asof(
        pl.DataFrame({"ts": moments}, schema={"ts": targets.schema["ts"]}).with_columns(_fit=pl.col("ts")),
        on="ts", strategy="backward", check_sortedness=False,
    ).with_columns(pl.col("_fit").fill_null(moments[0] if moments else None)).sort("_row")
    scores = np.zeros(targets.height, dtype=np.float64)
    for moment in moments:
        mine = fit_at.filter(pl.col("_fit") == moment)
        if mine.height == 0:
            continue
        model = fit_ease(ctx.log.filter(pl.col("ts") < moment))
        scores[mine["_row"].to_numpy()] = cf_scores(model, _clicked_before(ctx.log, mine), mine["item_id"].to_list())
    return targets.select(*KEYS, cf_score=pl.Series(scores))


@at_moment("collaborative")
def collaborative_at(ctx: MomentContext) -> MomentValues:
    model: ItemItem = ctx.artefacts.get("cf") or ItemItem({}, np.zeros((0, 0), np.float32))
    users = ctx.state.users
    histories = [users[u].clicked_items() if u in users else [] for u in ctx.user_ids]
    return {"cf_score": cf_scores(model, histories, ctx.item_ids)}
