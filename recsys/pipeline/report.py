"""One line per pipeline stage: what it decided and how long it took, read from the files the
stage wrote in the run directory (so a finished run can be summarised again: `run_summary`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys.core.logs import seconds_text

# the order `recsys train` runs its stages in (candidates of the release gate after "features")
STAGE_ORDER = ("state", "interest", "topics", "blurbs", "features", "ranker_full", "ranker_mixed", "ranker_no_text", "ranker_no_blurbs")


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _rows(path: Path) -> int | None:
    if not path.exists():
        return None
    import polars as pl

    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _selection(row: dict[str, Any], how: str) -> float:
    auc, ndcg = row.get("valid_auc"), row.get("valid_ndcg@10")
    value = {"auc": auc, "ndcg@10": ndcg}.get(how, None if auc is None or ndcg is None else (auc + ndcg) / 2)
    return float("-inf") if value is None or value != value else float(value)


def interest_outcome(metrics: dict[str, Any]) -> str:
    """Which weights the interest stage kept, and the validation figures that decided it."""
    rows = metrics.get("epochs") or []
    start = next((r for r in rows if r.get("model") == "pretrained"), None)
    tuned = [r for r in rows if r.get("model", "fine-tuned") == "fine-tuned"]
    how = metrics.get("select_metric", "mean")
    best = max(tuned, key=lambda r: _selection(r, how)) if tuned else None
    pre_auc = start.get("valid_auc") if start else None
    if metrics.get("kept") == "pretrained":
        if best is None or pre_auc is None:
            auc = metrics.get("valid_auc")
            return "pretrained weights, not fine-tuned" + (f" (valid AUC {auc:.3f})" if auc is not None else "")
        auc = best["valid_auc"]
        text = f"kept pretrained weights (fine-tuned valid AUC {auc:.3f} {'<' if auc < pre_auc else '≥'} {pre_auc:.3f} pretrained"
        low = best.get("gain_low")
        if auc >= pre_auc:
            text += f"; gain not significant, lower bound {low:+.3f}" if low is not None and low <= 0 else "; gain below min_gain"
        return text + ")"
    auc = metrics.get("valid_auc")
    if auc is None:
        return "fine-tuned weights kept"
    text = f"fine-tuned weights kept (valid AUC {auc:.3f}"
    if pre_auc is not None:
        text += f" {'>' if auc > pre_auc else '≤'} {pre_auc:.3f} pretrained"
    kept_row = next((r for r in reversed(tuned) if r.get("valid_auc") == auc), None)
    if kept_row is not None and kept_row.get("gain_low") is not None:
        text += f"; gain lower bound {kept_row['gain_low']:+.3f}"
    return text + ")"


def _blurbs_outcome(q: dict[str, Any]) -> str:
    n, generated = q.get("items", 0), q.get("generated", 0)
    text = f"{generated:,} of {n:,} generated (the rest extractive, flagged)"
    if q.get("faithfulness_rate") is not None:
        text += f", {q['faithfulness_rate']:.0%} of attempts faithful"
    return text


def _ranker_outcome(result: dict[str, Any], name: str) -> str:
    from recsys.pipeline.stages import shape_mean

    valid = shape_mean(result.get("valid", {}))
    features = result.get("features", [])
    if name.startswith("baseline_"):
        what = f"{name[9:]} as a model ({features[0] if features else '?'} alone)"
    elif isinstance(result.get("best_iteration"), dict):  # one ranker per job
        jobs = result["best_iteration"]
        what = f"LightGBM on {len(features)} features, one per job, best iterations " + ", ".join(f"{j} {i}" for j, i in jobs.items())
        figures = {j: result.get("valid", {}).get(f"shape:{j}", {}).get("ndcg@10", {}).get("mean") for j in jobs}
        return what + "; valid nDCG@10 " + ", ".join(f"{j} {v:.4f}" for j, v in figures.items() if v is not None)
    else:
        what = f"LightGBM on {len(features)} features, best iteration {result.get('best_iteration')}"
    return f"{what}; valid nDCG@10 {valid:.4f}"


def stage_outcome(name: str, run_dir: Path) -> str:
    run_dir = Path(run_dir)
    if name == "state":
        events, items = _rows(run_dir / "state" / "log.parquet"), _rows(run_dir / "state" / "items.parquet")
        return f"{events or 0:,} events and {items or 0:,} items saved for scoring"
    if name == "interest":
        return interest_outcome(_json(run_dir / "interest" / "metrics.json"))
    if name == "topics":
        path = run_dir / "topics" / "topics.parquet"
        if path.exists():
            import polars as pl

            return f"{pl.read_parquet(path)['topic'].n_unique()} text topics (k-means over the item vectors)"
        return "text topics"
    if name == "blurbs":
        return _blurbs_outcome(_json(run_dir / "blurbs" / "quality.json"))
    if name == "features":
        sizes = {s: _rows(run_dir / "features" / f"{s}.parquet") for s in ("train", "valid", "test")}
        return "ranking rows " + " / ".join(f"{s} {n:,}" for s, n in sizes.items() if n is not None)
    if (run_dir / name / "result.json").exists():
        return _ranker_outcome(_json(run_dir / name / "result.json"), name)
    return "done"


def stage_line(name: str, run_dir: Path, seconds: float | None) -> str:
    """"interest: kept pretrained weights (…) — 146 s"; `seconds` None: the stage was unchanged."""
    try:
        outcome = stage_outcome(name, run_dir)
    except Exception as err:  # a report must never fail the run
        outcome = f"done (no summary: {type(err).__name__})"
    return f"{name}: {outcome} — {'unchanged, reused' if seconds is None else seconds_text(seconds)}"


def run_summary(run_dir: Path) -> list[str]:
    """The stage lines of a finished run from its files and metrics.json, in the order they ran,
    then the release gate's line."""
    run_dir = Path(run_dir)
    metrics = _json(run_dir / "metrics.json")
    seconds = {k[: -len("_seconds")]: v for k, v in metrics.get("stages", {}).items() if k.endswith("_seconds")}
    ran = [*_json(run_dir / "stages.json")]
    names = [n for n in STAGE_ORDER if n in ran] + sorted(n for n in ran if n not in STAGE_ORDER)
    lines = [stage_line(n, run_dir, seconds.get(n)) for n in names]
    if "gate" in metrics:
        lines += [f"ranker: {line}" for line in gate_lines(metrics["gate"])]
    return lines


def gate_lines(gate: dict[str, Any]) -> list[str]:
    """The release gate's line, then one line per job with its pick's lead and whether the valid
    requests can tell it from its rival (a line each keeps the console narrow)."""
    leads = gate.get("lead", {})
    return [gate["line"], *(f"{'' if job == 'all' else job + ' pick, '}{text}" for job, text in leads.items())]


def mlflow_line(m: dict[str, Any]) -> str:
    aliases = ", ".join(m.get("aliases", [])) or "none"
    took = f" — {seconds_text(m['seconds'])}" if m.get("seconds") is not None else ""
    return f"MLflow run {m['run_id']}: {m['model']} v{m['version']}, aliases {aliases}{took}"
