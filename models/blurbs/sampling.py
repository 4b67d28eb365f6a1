"""Seeded top-k / top-p sampling as the last logits processor, so greedy decoding picks the sample.

Why not `generate(do_sample=True)`: on these CPUs `torch.multinomial` over SmolLM2's whole 49k
vocabulary costs ~35 ms a step for 32 rows and the top-p warper sorts all of it (~17 ms), a third
of the decoding time (profiled in the blurb stage); the same distribution drawn among the top k
(temperature, then top-p, over k sorted scores) costs ~1.5 ms. It draws from the same distribution
as transformers' temperature -> top-k -> top-p chain; the random stream differs, so the cache key
names the sampler.
"""

from __future__ import annotations

from typing import Any

SAMPLER = "topk-processor-1"  # goes into the generation settings' digest (the cache key)


class TopKSampling:
    """A transformers logits processor: returns scores with one finite entry per row, the drawn token."""

    def __init__(self, temperature: float, top_p: float, top_k: int, seed: int) -> None:
        import torch

        if temperature <= 0 or not 0 < top_p <= 1 or top_k < 1:
            raise ValueError(f"temperature={temperature}, top_p={top_p}, top_k={top_k}; expected > 0, (0, 1], >= 1")
        self.torch = torch
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        k = min(self.top_k, scores.shape[-1])
        values, ids = torch.topk(scores.float(), k, dim=-1)  # sorted, best first
        probs = torch.softmax(values / self.temperature, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (the best token always stays)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= self.top_p, 0.0)
        probs = torch.nan_to_num(probs, nan=0.0)
        empty = probs.sum(-1) <= 0  # every score was -inf: take the best index, as greedy would
        probs[empty, 0] = 1.0
        pick = ids.gather(1, torch.multinomial(probs, 1, generator=self.generator))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, pick, 0.0)
