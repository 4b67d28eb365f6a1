"""Quality of a blurb run: diversity, faithfulness, fallbacks by reason, lengths and a sample table."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.blurbs.safety import FAITHFULNESS_REASONS, Rules, faithfulness_issues, pii_found, profanity_scores, repeats_title, words


def distinct_n(texts: list[str], n: int) -> float:
    """Unique n-grams / all n-grams over the texts (0 when there are none)."""
    grams = [tuple(g) for t in texts for g in zip(*[[w.lower() for w in words(t)][i:] for i in range(n)])]
    return len(set(grams)) / len(grams) if grams else 0.0


def length_stats(texts: list[str]) -> dict[str, Any]:
    lengths = np.array([len(words(t)) for t in texts]) if texts else np.zeros(0)
    if lengths.size == 0:
        return {"n": 0}
    edges = [0, 5, 10, 15, 20, 25, 30, 40, 1000]
    hist, _ = np.histogram(lengths, bins=edges)
    return {"n": int(lengths.size), "mean": float(lengths.mean()), "min": int(lengths.min()),
            "p10": float(np.percentile(lengths, 10)), "p50": float(np.percentile(lengths, 50)),
            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max()),
            "histogram": {f"{a}-{b - 1}": int(c) for a, b, c in zip(edges, edges[1:], hist)}}


def audit(reviewed: pl.DataFrame, rules: Rules) -> dict[str, Any]:
    """What was shown, checked again from scratch: PII (scrubadub + rules), blocklist and profanity
    hits over every shown blurb; title repeats and faithfulness over the generated ones."""
    shown = reviewed["blurb"].fill_null("").to_list()
    gen = reviewed.filter(pl.col("source") == "generated")
    pattern = rules.blocklist_pattern()
    profane = profanity_scores(shown) if shown else []
    unfaithful = [b for b, t, x in zip(gen["blurb"], gen["title"], gen["text"])
                  if faithfulness_issues(b, f"{t}. {x}", rules.brands, rules.attribute_vocab)]
    repeats = [b for b, t in zip(gen["blurb"], gen["title"]) if repeats_title(b, t or "", rules.min_new_words)]
    return {
        "pii_hits_shown": sum(bool(pii_found(b)) for b in shown),
        "blocklist_hits_shown": sum(bool(pattern and pattern.search(b)) for b in shown),
        "profanity_hits_shown": sum(p >= rules.profanity_threshold for p in profane),
        "faithfulness_generated": 1 - len(unfaithful) / gen.height if gen.height else None,
        "title_repeat_rate": len(repeats) / gen.height if gen.height else 0.0,
    }


def _reason_counts(reasons: pl.Series) -> dict[str, int]:
    """How many rows name each check in a list[str] column, by check name."""
    return dict(sorted(Counter(r for row in reasons.to_list() for r in row).items()))


def quality(reviewed: pl.DataFrame, rules: Rules | None = None) -> dict[str, Any]:
    """Metrics of reviewed blurbs: columns blurb, source, flag_reason, reasons (list[str]), attempted
    (bool), optionally first_reasons (the round-0 candidate's failing checks) and candidates."""
    n = reviewed.height
    attempted = reviewed.filter(pl.col("attempted"))
    col = "first_reasons" if "first_reasons" in reviewed.columns else "reasons"
    # the model's own faithfulness: its first candidate, before checks and retries
    faithful = attempted.filter(
        ~pl.col(col).list.eval(pl.element().is_in(list(FAITHFULNESS_REASONS))).list.any())
    first_pass = attempted.filter(pl.col(col).list.len() == 0)
    generated = reviewed.filter(pl.col("source") == "generated")["blurb"].to_list()
    shown = reviewed["blurb"].to_list()
    by_reason = dict(reviewed.filter(pl.col("flag_reason").is_not_null()).group_by("flag_reason").len().iter_rows())
    return {
        "items": n,
        "generated": len(generated),
        "attempted": attempted.height,
        "generated_rate": len(generated) / n if n else 0.0,
        "fallback_rate": 1 - len(generated) / n if n else 0.0,
        "fallback_rate_by_reason": {k: v / n for k, v in sorted(by_reason.items())},
        "fallback_count_by_reason": dict(sorted(by_reason.items())),
        "failed_checks_any": _reason_counts(attempted["reasons"]),  # every failing check, not only the first
        "failed_checks_first_candidate": _reason_counts(attempted[col]),  # what sends items to a retry round
        "faithfulness_rate": faithful.height / attempted.height if attempted.height else None,
        "first_candidate_pass_rate": first_pass.height / attempted.height if attempted.height else None,
        "mean_candidates": float(attempted["candidates"].mean() or 0) if "candidates" in attempted.columns and attempted.height else None,
        "distinct_1": distinct_n(generated, 1),
        "distinct_2": distinct_n(generated, 2),
        "distinct_1_shown": distinct_n(shown, 1),
        "distinct_2_shown": distinct_n(shown, 2),
        "length_generated": length_stats(generated),
        "length_shown": length_stats(shown),
    } | (audit(reviewed, rules) if rules is not None and "title" in reviewed.columns else {})


def sample_table(reviewed: pl.DataFrame, k: int, seed: int = 0) -> pl.DataFrame:
    """Up to k rows (item_id, title, text, raw, blurb, source, flag_reason), generated and fallback mixed."""
    cols = ["item_id", "title", "text", "raw", "blurb", "source", "flag_reason"]
    return reviewed.select(cols).sample(min(k, reviewed.height), seed=seed, shuffle=True) if reviewed.height else reviewed.select(cols)


def write_quality(reviewed: pl.DataFrame, out_dir: Path, k: int, extra: dict[str, Any],
                  rules: Rules | None = None) -> dict[str, Any]:
    metrics = quality(reviewed, rules) | extra
    (Path(out_dir) / "quality.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    sample_table(reviewed, k).write_csv(Path(out_dir) / "samples.csv")
    return metrics
