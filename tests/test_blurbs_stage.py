"""Generation through the cache, the stage's outputs, retries and fine-tuning, with a tiny generator
built here.

The tiny generator is a 2-layer Llama with random weights and the MiniLM word-piece tokenizer (so
it writes noise: every blurb is checked and falls back); test doubles write known blurbs where the
test needs generated text to pass (or to leak PII).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from models.blurbs import BLURBS_SCHEMA, BlurbConfig, run
from models.blurbs.batch import generate_cached, read_cache, with_text_hash
from models.blurbs.generator import GeneratorSpec
from models.weights import minilm_dir
from recsys.core.dataset import load_dataset
from recsys.core.splits import time_split


def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama with random weights and the MiniLM tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def _items(n: int = 6) -> pl.DataFrame:
    return with_text_hash(pl.DataFrame({
        "item_id": [f"i{k}" for k in range(n)],
        "title": [f"Kestrel Red Mug {k}" for k in range(n)],
        "text": [f"A red ceramic mug by Kestrel, number {k}. Made for tea." for k in range(n)],
    }))


def _spec(folder: Path, **kw: object) -> GeneratorSpec:
    return GeneratorSpec(kind="causal", base_dir=str(folder), version="tiny-test-v1", max_new_tokens=6, threads=1, **kw)  # type: ignore[arg-type]


def test_cache_skips_unchanged_items_and_regenerates_changed_ones(tiny_llama: Path, tmp_path: Path) -> None:
    items = _items()
    first, stats = generate_cached(items, _spec(tiny_llama), tmp_path, batch_size=4, use_ray=False)
    assert stats["cache_misses"] == 6 and stats["cache_hits"] == 0
    assert set(first["text_hash"]) == set(items["text_hash"])

    again, stats = generate_cached(items, _spec(tiny_llama), tmp_path, batch_size=4, use_ray=False)
    assert stats["cache_misses"] == 0 and stats["cache_hits"] == 6
    assert again.sort("text_hash").equals(first.sort("text_hash"))

    changed = with_text_hash(items.drop("text_hash").with_columns(
        pl.when(pl.col("item_id") == "i2").then(pl.lit("A blue enamel mug by Kestrel.")).otherwise("text").alias("text")))
    _, stats = generate_cached(changed, _spec(tiny_llama), tmp_path, batch_size=4, use_ray=False)
    assert stats["cache_misses"] == 1 and stats["cache_hits"] == 5
    assert read_cache(tmp_path, "tiny-test-v1").height == 7  # old text of i2 stays cached, harmlessly

    # A different model version shares nothing with the first one.
    other = GeneratorSpec(kind="causal", base_dir=str(tiny_llama), version="tiny-test-v2", max_new_tokens=6, threads=1)
    _, stats = generate_cached(items, other, tmp_path, batch_size=4, use_ray=False)
    assert stats["cache_misses"] == 6


def test_a_stage_stopped_midway_keeps_what_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Generations reach the cache as they finish (every `save_every` items): a run that fails
    in its third batch resumes with only the items it had not written."""
    from models.blurbs import batch

    items, written = _items(6), []

    class Failing:
        def __init__(self, spec: GeneratorSpec) -> None:
            pass

        def __call__(self, block: dict) -> dict:
            if len(written) == 2:
                raise RuntimeError("killed")
            written.append(len(block["text_hash"]))
            return {"text_hash": block["text_hash"], "model_version": ["tiny-test-v1"] * len(block["text_hash"]),
                    "raw": [f"blurb {h}" for h in block["text_hash"]]}

    monkeypatch.setattr(batch, "GenerateBatch", Failing)
    spec = GeneratorSpec(kind="causal", base_dir=str(tmp_path), version="tiny-test-v1", threads=1)
    with pytest.raises(RuntimeError, match="killed"):
        generate_cached(items, spec, tmp_path, batch_size=2, use_ray=False, save_every=2)
    assert read_cache(tmp_path, "tiny-test-v1").height == 4
    written.clear()
    again, stats = generate_cached(items, spec, tmp_path, batch_size=2, use_ray=False, save_every=2)
    assert stats["cache_misses"] == 2 and stats["cache_hits"] == 4 and again.height == 6


class EchoGenerator:
    """Test double: a faithful blurb for even items, an invented colour for odd ones; counts items."""

    calls: list[int] = []

    def generate(self, titles: list[str], texts: list[str]) -> list[str]:
        EchoGenerator.calls.append(len(titles))
        return [f"{t.split(',')[0]} for anyone who likes tea, number {title.split()[-1]}."
                if int(title.split()[-1]) % 2 == 0 else "A lovely purple mug for tea lovers."
                for title, t in zip(titles, texts)]


def _dataset(tmp_path: Path, items: pl.DataFrame) -> object:
    from recsys.data.synth import SynthConfig, synth

    synth(SynthConfig(users=40, items=8, days=4, seed=1), tmp_path / "shop")
    data = load_dataset(tmp_path / "shop")
    return data.__class__(**{**data.__dict__, "items": items.drop("text_hash").with_columns(
        category=pl.lit("mug"), attributes=pl.lit('{"brand": "Kestrel"}'), created_at=pl.lit(None))})


def test_stage_writes_every_item_with_schema_reasons_and_reports(tiny_llama: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GeneratorSpec, "load", lambda self: EchoGenerator())
    EchoGenerator.calls = []
    data = _dataset(tmp_path, _items(8))
    cfg = BlurbConfig(generator=f"causal:{tiny_llama}", finetune=False, use_ray=False, limit=6, batch_size=8, retries=2)
    out = run(cfg, data, data.events, tmp_path / "run", tmp_path / "cache")  # type: ignore[arg-type]
    assert EchoGenerator.calls == [6, 3, 3]  # retry rounds generate only the items that failed
    blurbs = pl.read_parquet(out / "blurbs.parquet")
    assert blurbs.schema == BLURBS_SCHEMA
    assert sorted(blurbs["item_id"]) == [f"i{k}" for k in range(8)]
    by_id = {r["item_id"]: r for r in blurbs.iter_rows(named=True)}
    assert by_id["i0"]["source"] == "generated" and by_id["i0"]["flag_reason"] is None
    assert by_id["i0"]["blurb"] == "A red ceramic mug by Kestrel for anyone who likes tea, number 0."
    assert (by_id["i1"]["source"], by_id["i1"]["flag_reason"]) == ("fallback", "invented_colour")
    assert by_id["i7"]["flag_reason"] == "not_generated"  # beyond limit=6
    quality = json.loads((out / "quality.json").read_text())
    assert quality["items"] == 8 and quality["generated"] == 3 and quality["attempted"] == 6
    assert quality["faithfulness_rate"] == pytest.approx(3 / 6)
    assert quality["fallback_count_by_reason"] == {"invented_colour": 3, "not_generated": 2}
    assert quality["failed_checks_first_candidate"] == {"invented_colour": 3}  # what the retries were for
    assert quality["title_repeat_rate"] == 0 and quality["pii_hits_shown"] == 0
    samples = pl.read_csv(out / "samples.csv")
    assert {"text", "blurb", "flag_reason"} <= set(samples.columns) and samples.height == 8


class LeakyGenerator:
    """Test double: copies whatever contact details the item text has into the blurb."""

    def generate(self, titles: list[str], texts: list[str]) -> list[str]:
        return [f"A sturdy everyday mug for tea drinkers; questions to {t.split('Contact ')[-1]}" for t in texts]


def test_a_catalog_seeded_with_pii_shows_none(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.blurbs.safety import pii_found

    contacts = ["jo@mugs.example.com", "+1 (415) 555-0132", "https://mugs.example.com/deal", "www.mugshop.com",
                "mugshop.com or 020 7946 0958", "@mugshop_official on Twitter"]
    items = with_text_hash(pl.DataFrame({
        "item_id": [f"i{k}" for k in range(len(contacts))], "title": [f"Kestrel Red Mug {k}" for k in range(len(contacts))],
        "text": [f"A red ceramic mug by Kestrel. Contact {c}" for c in contacts]}))
    monkeypatch.setattr(GeneratorSpec, "load", lambda self: LeakyGenerator())
    data = _dataset(tmp_path, items)
    cfg = BlurbConfig(generator=f"causal:{tiny_llama}", finetune=False, use_ray=False, retries=0)
    out = run(cfg, data, data.events, tmp_path / "run", tmp_path / "cache")  # type: ignore[arg-type]
    blurbs = pl.read_parquet(out / "blurbs.parquet")
    assert blurbs.height == len(contacts) and (blurbs["source"] == "fallback").all()
    assert [b for b in blurbs["blurb"] if pii_found(b) or "@" in b] == []
    assert json.loads((out / "quality.json").read_text())["pii_hits_shown"] == 0


class FaithfulSampler:
    """Test double for the zero-shot candidates: a faithful line that says more than the title."""

    def generate(self, titles: list[str], texts: list[str]) -> list[str]:
        return [f"A good pick for anyone who wants a {t.split()[-1].lower()} made for daily use." for t in titles]


def test_finetune_runs_locally_changes_the_version_and_is_reused(tiny_llama: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.data.synth import SynthConfig, synth

    monkeypatch.setattr(GeneratorSpec, "load", lambda self: FaithfulSampler())  # training itself uses the tiny llama
    synth(SynthConfig(users=60, items=12, days=5, seed=2), tmp_path / "shop")
    data = load_dataset(tmp_path / "shop")
    train = time_split(data.events).train
    base = dict(generator=f"causal:{tiny_llama}", use_ray=False, steps=3, train_batch_size=4, max_new_tokens=4,
                batch_size=8, train_items=8, target_rounds=2, min_targets=4)
    zero = run(BlurbConfig(**base, finetune=False), data, train, tmp_path / "zs", tmp_path / "cache")
    tuned = run(BlurbConfig(**base, finetune=True), data, train, tmp_path / "ft", tmp_path / "cache")
    q_zero, q_tuned = (json.loads((p / "quality.json").read_text()) for p in (zero, tuned))
    assert "+zeroshot" in q_zero["model_version"] and "+ft-" in q_tuned["model_version"]
    assert q_tuned["finetune_examples"] == 8 and q_tuned["finetune_steps"] == 3
    assert q_tuned["target_generations"] == 16  # 8 items x 2 sampled rounds
    again = run(BlurbConfig(**base, finetune=True), data, train, tmp_path / "ft2", tmp_path / "cache")
    q_again = json.loads((again / "quality.json").read_text())
    assert q_again["model_version"] == q_tuned["model_version"]
    assert q_again["cache_misses"] == 0 and q_again["cache_hits"] == 12  # adapter and blurbs both reused


def test_click_weighting_shapes_the_examples(tmp_path: Path) -> None:
    from models.blurbs.finetune import build_examples
    from models.blurbs.safety import Rules
    from recsys.data.synth import SynthConfig, synth

    synth(SynthConfig(users=80, items=20, days=5, seed=4), tmp_path / "shop")
    data = load_dataset(tmp_path / "shop")
    good = {i: f"A good pick for anyone who wants a {t.split()[-1].lower()} made for daily use."
            for i, t in zip(data.items["item_id"], data.items["title"])}
    cands = {i: ["Red mug.", good[i]] for i in data.items["item_id"]}  # the first fails (too short): the second is kept
    weighted = build_examples(data.items, data.events, BlurbConfig(click_weighting="ctr_weight", train_items=10), Rules(), cands)
    token = build_examples(data.items, data.events, BlurbConfig(click_weighting="ctr_token", train_items=10), Rules(), cands)
    plain = build_examples(data.items, data.events, BlurbConfig(click_weighting="none", train_items=10), Rules(), cands)
    assert weighted["weight"].mean() == pytest.approx(1.0) and weighted["weight"].std() > 0
    assert set(token["ctr_bucket"]) == {"low", "mid", "high"} and (token["weight"] == 1.0).all()
    assert plain["ctr_bucket"].is_null().all() and (plain["weight"] == 1.0).all()
    assert weighted.height == 10 and all(t == good[i] for i, t in zip(weighted["item_id"], weighted["target"]))


def test_targets_are_candidates_that_pass_not_copies_of_the_source() -> None:
    from models.blurbs.finetune import best_candidate
    from models.blurbs.safety import Rules

    title, text = "Kestrel Red Mug", "A red ceramic mug by Kestrel. Made for tea, it holds 350 ml."
    copy, title_again = "Made for tea, it holds 350 ml.", "The Kestrel Red Mug."
    better = "A red ceramic Kestrel mug that holds 350 ml, for anyone who takes tea seriously."
    assert best_candidate([copy, title_again, "A blue mug by Kestrel for tea lovers.", better], title, text, Rules()) == better
    assert best_candidate([copy, title_again], title, text, Rules()) is None


def test_unknown_generator_or_weighting_is_a_clear_error() -> None:
    from recsys.core.errors import RecsysInputError

    with pytest.raises(RecsysInputError, match="blurbs.generator"):
        BlurbConfig(generator="gpt-5")
    with pytest.raises(RecsysInputError, match="click_weighting"):
        BlurbConfig(click_weighting="sometimes")
