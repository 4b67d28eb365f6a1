"""The network: a BERT text encoder (item tower), history pooling (user tower), cosine match.

item vector  = L2-normalised mean of the encoder's token states (sentence-transformers recipe),
               optionally through a linear projection (identity at the start) and normalised again
user vector  = L2-normalised pooling of the history's item vectors: mean, or NRMS additive
               attention whose query starts at zero, so an untrained model pools by the mean
score        = cosine(user, item); training logits = scale * score (+ bias for BCE)

Training updates only the top `cfg.trainable_layers` transformer layers (+ the head): the frozen
lower part (word-piece embeddings + the other layers) is run once per item text (`lower_states`)
and each step runs just the top layers on those cached states (`encode_states`). The saved
encoder is still the complete BERT, so `encode` (all layers) gives the same vectors.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.interest.config import InterestConfig
from models.weights import minilm_dir

ENCODER_DIR, HEAD_FILE, CONFIG_FILE = "encoder", "head.pt", "interest_config.json"


def load_tokenizer(path: Path | None = None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path or minilm_dir()))


def new_encoder(cfg: InterestConfig) -> nn.Module:
    """The starting encoder: pretrained MiniLM, or a tiny random BERT for tests."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, BertConfig, BertModel

    if cfg.encoder == "minilm":
        return AutoModel.from_pretrained(str(minilm_dir()))
    torch.manual_seed(cfg.seed)
    vocab = load_tokenizer().vocab_size
    return BertModel(BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=128))


class AttentionPool(nn.Module):
    """NRMS additive attention: weight_j = softmax_j(q . tanh(W h_j + b))."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.query = nn.Parameter(torch.zeros(hidden))  # zero: starts as the plain mean

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = torch.tanh(self.proj(h)) @ self.query
        logits = logits.masked_fill(~mask, -1e4)
        weights = torch.softmax(logits, dim=-1) * mask
        return (weights.unsqueeze(-1) * h).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-9)


class UserTower(nn.Module):
    """(b, h, d) history vectors + (b, h) bool mask -> (b, d) unit user vectors."""

    def __init__(self, dim: int, pooling: str) -> None:
        super().__init__()
        self.pool = AttentionPool(dim) if pooling == "attention" else None

    def forward(self, hist_vecs: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            pooled = self.pool(hist_vecs, hist_mask)
        else:
            m = hist_mask.unsqueeze(-1).to(hist_vecs.dtype)
            pooled = (hist_vecs * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    @classmethod
    def from_head(cls, head: dict[str, torch.Tensor], dim: int, pooling: str) -> UserTower:
        """Just the user tower from a saved head.pt (scoring without loading the encoder)."""
        tower = cls(dim, pooling)
        prefix = "user_tower."
        tower.load_state_dict({k[len(prefix):]: v for k, v in head.items() if k.startswith(prefix)})
        return tower.eval()


class NumpyUserTower:
    """`UserTower.forward` in numpy float32, for scoring: one user at a time (serving computes
    each user alone) costs 0.04 ms here against 0.10 ms in torch, whose per-op dispatch dominates
    at this size. Equal to the torch tower within float32 rounding (tests/test_interest.py)."""

    def __init__(self, tower: UserTower) -> None:
        pool = tower.pool
        self.attention = None if pool is None else (
            pool.proj.weight.detach().numpy().T.copy(), pool.proj.bias.detach().numpy().copy(), pool.query.detach().numpy().copy())

    def __call__(self, hist_vecs: np.ndarray, hist_mask: np.ndarray) -> np.ndarray:
        vecs, mask = np.asarray(hist_vecs, np.float32), np.asarray(hist_mask, bool)
        if self.attention is not None:
            weight, bias, query = self.attention
            logits = np.where(mask, np.tanh(vecs @ weight + bias) @ query, np.float32(-1e4))
            logits = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights = logits / logits.sum(axis=1, keepdims=True) * mask
        else:
            weights = mask.astype(np.float32)
        pooled = (weights[..., None] * vecs).sum(axis=1) / np.maximum(weights.sum(axis=1, keepdims=True), np.float32(1e-9))
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), np.float32(1e-12))).astype(np.float32)


class InterestModel(nn.Module):
    def __init__(self, cfg: InterestConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        dim = encoder.config.hidden_size
        self.dim = dim
        self.user_tower = UserTower(dim, cfg.pooling)
        self.projection = nn.Linear(dim, dim, bias=False) if cfg.projection else None
        if self.projection is not None:
            nn.init.eye_(self.projection.weight)  # the start is the pretrained encoder exactly
        self.log_scale = nn.Parameter(torch.tensor(float(cfg.init_scale)).log())
        self.bias = nn.Parameter(torch.zeros(()))
        self.item_prior = nn.Linear(dim, 1, bias=False) if cfg.item_prior else None
        if self.item_prior is not None:
            nn.init.zeros_(self.item_prior.weight)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(n, len) word pieces -> (n, d) unit item vectors."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._pool(states, attention_mask)

    def _pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        vecs = F.normalize((states * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)
        return vecs if self.projection is None else F.normalize(self.projection(vecs), dim=-1)

    # -- the frozen-lower / trainable-top split ----------------------------------------------------
    def split_layer(self) -> int:
        """Index of the first trainable transformer layer (layers below it are frozen and cached)."""
        n = len(self.encoder.encoder.layer)
        return n - min(self.cfg.trainable_layers, n)

    def freeze_lower(self) -> None:
        """No gradients for what `lower_states` computes (its output is cached) nor the unused
        [CLS] pooler (mean pooling; DDP rejects parameters without gradients)."""
        k = self.split_layer()
        frozen = ["embeddings.", "pooler."] + [f"encoder.layer.{i}." for i in range(k)]
        for name, p in self.encoder.named_parameters():
            if any(name.startswith(f) for f in frozen):
                p.requires_grad_(False)

    def _mask(self, states: torch.Tensor, attention_mask: torch.Tensor):
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.encoder.config, inputs_embeds=states, attention_mask=attention_mask)

    def _layers(self, states: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if start >= stop:  # the adaptor: no layer to run
            return states
        mask = self._mask(states, attention_mask)
        for layer in self.encoder.encoder.layer[start:stop]:
            out = layer(states, mask)
            states = out[0] if isinstance(out, tuple) else out  # older transformers return tuples
        return states

    @torch.no_grad()
    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(n, len, d) token states entering the first trainable layer (frozen: cache them)."""
        emb = self.encoder.embeddings(input_ids=input_ids)
        return self._layers(emb, attention_mask, 0, self.split_layer())

    def encode_states(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Cached lower states -> (n, d) unit item vectors through the trainable top layers."""
        top = self._layers(states, attention_mask, self.split_layer(), len(self.encoder.encoder.layer))
        return self._pool(top, attention_mask)

    def users(self, hist_vecs: torch.Tensor, hist_mask: torch.Tensor) -> torch.Tensor:
        return self.user_tower(hist_vecs, hist_mask)

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor, hist_idx: torch.Tensor,
                cand_idx: torch.Tensor, hist_bank: torch.Tensor | None = None) -> torch.Tensor:
        """Training logits (b, c) from the cached lower states of the batch's distinct items
        (each encoded once); `cand_idx` (b, c) indexes into them. `hist_idx` (b, h, -1 = padding)
        indexes into them too, or, with `hist_bank` given, into that table of item vectors
        (no gradient: the history side then costs nothing per step)."""
        vecs = self.encode_states(states, attention_mask)
        hist_mask = hist_idx >= 0
        source = vecs if hist_bank is None else hist_bank
        users = self.users(source[hist_idx.clamp_min(0)], hist_mask)
        cands = vecs[cand_idx]
        cos = (users.unsqueeze(1) * cands).sum(-1)
        logits = self.log_scale.exp() * cos + self.bias
        return logits if self.item_prior is None else logits + self.item_prior(cands).squeeze(-1)

    def user_offset(self) -> torch.Tensor:
        """(d,) what the text prior adds to every user vector: scale * (u + w / scale) . v is the
        training logit (less the bias), so a score u . v + (w / scale) . v ranks as training did."""
        if self.item_prior is None:
            return torch.zeros(self.dim)
        return self.item_prior.weight[0] / self.log_scale.exp()

    def item_parameters(self) -> list[nn.Parameter]:
        """What shapes item vectors: trainable encoder layers and the projection (trained at `lr`)."""
        proj = [] if self.projection is None else list(self.projection.parameters())
        return [p for p in self.encoder.parameters() if p.requires_grad] + proj

    def head_parameters(self) -> list[nn.Parameter]:
        """User tower, scale, bias and the text prior: they start untrained and take `head_lr`."""
        return [p for n, p in self.named_parameters() if not n.startswith(("encoder.", "projection."))]

    def save(self, path: Path, tokenizer) -> None:
        """model/ = encoder/ (HF weights + tokenizer), head.pt, interest_config.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(path / ENCODER_DIR))
        tokenizer.save_pretrained(str(path / ENCODER_DIR))
        head = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        torch.save(head, path / HEAD_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(self.cfg.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: Path) -> tuple[InterestModel, object]:
        """(model in eval mode, tokenizer) from a folder written by `save`."""
        from transformers import AutoModel

        path = Path(path)
        if not (path / CONFIG_FILE).exists():
            raise FileNotFoundError(f"interest model: {path} has no {CONFIG_FILE}; train it with models.interest.train.run")
        cfg = InterestConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        encoder = AutoModel.from_pretrained(str(path / ENCODER_DIR))
        model = cls(cfg, encoder)
        result = model.load_state_dict(torch.load(path / HEAD_FILE, weights_only=True), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("encoder.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"interest model: {path / HEAD_FILE} does not match the config "
                             f"(missing {missing}, unexpected {result.unexpected_keys})")
        model.eval()
        return model, load_tokenizer(path / ENCODER_DIR)


def tokenize(tokenizer, texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@torch.no_grad()
def encode_texts(model: InterestModel, tokenizer, texts: list[str], max_len: int, batch_size: int = 64) -> torch.Tensor:
    """Unit item vectors (n, d) for any texts, batched, without gradients."""
    out = [model.encode(**tokenize(tokenizer, texts[i:i + batch_size], max_len))
           for i in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, model.dim))
