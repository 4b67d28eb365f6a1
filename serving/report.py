"""Reading the service's logs back: CTR per A/B arm, and the served feature rows with labels.

feedback.jsonl holds the events the frontend reported (each with the arm of its user);
served.jsonl holds, per /v1/rank call, every candidate's feature values and score, rotated by size
into served.<n>.jsonl (`JsonlLog.read_all` reads the rotated files, oldest first, then the current
one). Joined on (request_id, item_id), they are training rows with exactly the features that were
served.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
from scipy.stats import binomtest, chi2_contingency

from recsys.core.errors import RecsysInputError
from serving.eventlog import JsonlLog
from serving.online import FEEDBACK_FILE, read_feedback
from serving.service import SERVED_FILE


def _rows(state_dir: Path, name: str) -> list[dict]:
    path = Path(state_dir) / name
    if not path.exists():
        raise RecsysInputError(f"{path} not found: is {state_dir} the --state-dir of a `recsys serve`?")
    return JsonlLog(path).read_all()


def feedback_frame(state_dir: Path) -> pl.DataFrame:
    if not (Path(state_dir) / FEEDBACK_FILE).exists():
        _rows(state_dir, FEEDBACK_FILE)  # raises the clear error for a wrong directory
    rows = read_feedback(state_dir)  # the compacted snapshot, then the current file
    schema = {"request_id": pl.String, "user_id": pl.String, "item_id": pl.String, "clicked": pl.Int8, "arm": pl.String}
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def arm_ctr(state_dir: Path, confidence: float = 0.95) -> tuple[pl.DataFrame, float | None]:
    """Per arm: served requests, impressions, clicks, CTR with a Wilson interval; and the
    chi-squared p-value that the arms' CTRs differ (None with fewer than two arms)."""
    feedback = feedback_frame(state_dir)
    served = pl.DataFrame([{"arm": r.get("arm")} for r in _rows(state_dir, SERVED_FILE)], schema={"arm": pl.String})
    requests = served.group_by("arm").agg(requests=pl.len())
    per_arm = feedback.group_by("arm").agg(impressions=pl.len(), clicks=pl.col("clicked").cast(pl.Int64).sum())
    table = requests.join(per_arm, on="arm", how="full", coalesce=True).fill_null(0).sort("arm")
    lows, highs, ctrs = [], [], []
    for n, k in zip(table["impressions"].to_list(), table["clicks"].to_list()):
        if n:
            ci = binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson")
            ctrs.append(k / n), lows.append(ci.low), highs.append(ci.high)
        else:
            ctrs.append(None), lows.append(None), highs.append(None)
    table = table.with_columns(ctr=pl.Series(ctrs, dtype=pl.Float64), ci_low=pl.Series(lows, dtype=pl.Float64),
                               ci_high=pl.Series(highs, dtype=pl.Float64))
    counted = table.filter(pl.col("impressions") > 0)
    p_value = None
    if counted.height >= 2 and counted["clicks"].sum() > 0 and (counted["impressions"] - counted["clicks"]).sum() > 0:
        grid = [[k, n - k] for k, n in zip(counted["clicks"].to_list(), counted["impressions"].to_list())]
        p_value = float(chi2_contingency(grid)[1])
    return table, p_value


def served_training_rows(state_dir: Path) -> pl.DataFrame:
    """One row per served candidate: request_id, arm, model_version, ts, user_id, item_id, score,
    shown (returned in the top_k), every feature as served, and `clicked` from the feedback
    (null when the frontend reported nothing for that item)."""
    records = _rows(state_dir, SERVED_FILE)
    frames = []
    for r in records:
        n = len(r["item_ids"])
        shown = set(r["shown"])
        frames.append(pl.DataFrame({
            "request_id": [r["request_id"]] * n, "arm": [r["arm"]] * n, "model_version": [r["model_version"]] * n,
            "ts": [r["ts"]] * n, "user_id": [r["user_id"]] * n, "item_id": r["item_ids"], "score": r["scores"],
            "shown": [i in shown for i in r["item_ids"]],
            **{f"feature.{k}": pl.Series(v, dtype=pl.Float64) for k, v in r["features"].items()},
        }, schema_overrides={"model_version": pl.String}))
    if not frames:
        return pl.DataFrame()
    served = pl.concat(frames, how="diagonal_relaxed").with_columns(pl.col("ts").str.to_datetime(time_zone="UTC"))
    labels = (feedback_frame(state_dir).filter(pl.col("request_id").is_not_null())
              .group_by("request_id", "item_id").agg(clicked=pl.col("clicked").max()))
    return served.join(labels, on=["request_id", "item_id"], how="left", maintain_order="left")
