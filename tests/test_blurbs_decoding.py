"""The blurb generator's own decoding loop and sampler, against transformers' `generate` on a random
tiny Llama built here."""

from __future__ import annotations

from typing import Any

import pytest

from models.blurbs.decoding import MIN_SHARED_PREFIX, decode_pruned, shared_prefix_length
from models.blurbs.sampling import TopKSampling

VOCAB, PAD, STOP = 64, 0, 1


class EndAfter:
    """Row r must write STOP as its lengths[r]-th new token. Its state is per row, so decode_pruned
    must tell it (`select`) which rows remain, or later rows would end at another row's length."""

    def __init__(self, lengths: list[int], prompt_length: int) -> None:
        self.lengths, self.prompt_length = list(lengths), prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        written = input_ids.shape[1] - self.prompt_length
        for row, length in enumerate(self.lengths[:scores.shape[0]]):
            if written + 1 >= length:
                scores[row] = float("-inf")
                scores[row, STOP] = 0.0
        return scores

    def select(self, rows: list[int]) -> None:
        self.lengths = [self.lengths[r] for r in rows]


@pytest.fixture(scope="module")
def model() -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         bos_token_id=2, eos_token_id=STOP, pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def _left_padded(lengths: list[int], seed: int = 0) -> tuple[Any, Any]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = torch.randint(3, VOCAB, (n,), generator=gen)
        mask[row, width - n:] = 1
    return ids, mask


def _generate(model: Any, ids: Any, mask: Any, new: int, processors: list[Any]) -> list[list[int]]:
    """transformers' greedy generate, each row cut after its first STOP (generate pads the rest)."""
    import torch

    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                             logits_processor=processors, eos_token_id=STOP, pad_token_id=PAD)
    rows = []
    for tokens in out[:, ids.shape[1]:].tolist():
        rows.append(tokens[:tokens.index(STOP) + 1] if STOP in tokens else tokens)
    return rows


def test_pruned_decoding_writes_what_greedy_generate_writes(model: Any) -> None:
    """Prompts of different lengths (left padded), rows ending at different steps and one at the token
    budget: every row's tokens equal generate's, although finished rows leave the batch."""
    import torch

    prompts, ends = [3, 9, 5, 12, 7, 4], [2, 11, 5, 1, 30, 8]  # 30 > the budget: that row runs to the cap
    ids, mask = _left_padded(prompts)
    expected = _generate(model, ids, mask, 12, [EndAfter(ends, ids.shape[1])])
    with torch.inference_mode():
        got = decode_pruned(model, ids, mask, 12, [EndAfter(ends, ids.shape[1])], [STOP])
    assert got == expected
    assert [len(row) for row in got] == [2, 11, 5, 1, 12, 8]  # the test reaches pruning at several steps


def test_pruned_decoding_needs_the_processors_row_state(model: Any) -> None:
    """Without `select`, a per-row processor is applied to the wrong rows once a row has left: the
    equality above is a real check of the pruning bookkeeping."""
    import torch

    class Unselected(EndAfter):
        def select(self, rows: list[int]) -> None:  # forgets to follow the rows
            pass

    prompts, ends = [3, 9, 5, 12], [1, 6, 3, 9]
    ids, mask = _left_padded(prompts, seed=1)
    with torch.inference_mode():
        right = decode_pruned(model, ids, mask, 10, [EndAfter(ends, ids.shape[1])], [STOP])
        wrong = decode_pruned(model, ids, mask, 10, [Unselected(ends, ids.shape[1])], [STOP])
    assert [len(r) for r in right] == ends and [len(r) for r in wrong] != ends


class Scores:
    """Records the logits of every step (a processor that changes nothing)."""

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self.steps.append(scores.clone())
        return scores


def _with_opening(opening: int, rests: list[int], seed: int = 2) -> tuple[Any, Any]:
    """Left-padded prompts that all begin with the same `opening` tokens, then rests of their own."""
    import torch

    ids, mask = _left_padded([opening + n for n in rests], seed=seed)
    shared = torch.randint(3, VOCAB, (opening,), generator=torch.Generator().manual_seed(seed + 1))
    for row, n in enumerate(rests):
        start = ids.shape[1] - opening - n
        ids[row, start:start + opening] = shared
    return ids, mask


def test_shared_prefix_length_leaves_every_row_a_token_of_its_own() -> None:
    ids, mask = _with_opening(10, [3, 1, 6])
    assert shared_prefix_length(ids, mask) == 10
    ids[2, ids.shape[1] - 6 - 10 + 4] = 2  # row 2 parts from the others at its 5th token
    assert shared_prefix_length(ids, mask) == 4
    whole, whole_mask = _with_opening(10, [0, 2])  # row 0 is only the opening: it keeps its last token
    assert shared_prefix_length(whole, whole_mask) == 9
    assert shared_prefix_length(ids[:1], mask[:1]) == 0  # one row: nothing to share


def test_a_shared_opening_is_read_once_and_writes_what_generate_writes(model: Any) -> None:
    """Prompts with a common opening: the opening is one batch-1 call whose cache every row copies, and
    each row still writes what greedy `generate` writes from its whole prompt."""
    import torch

    opening, rests, ends = MIN_SHARED_PREFIX + 4, [3, 9, 1, 12, 6], [2, 11, 5, 1, 30]
    ids, mask = _with_opening(opening, rests)
    expected = _generate(model, ids, mask, 12, [EndAfter(ends, ids.shape[1])])
    calls: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    shared_scores, unshared_scores = Scores(), Scores()
    try:
        with torch.inference_mode():
            got = decode_pruned(model, ids, mask, 12, [shared_scores, EndAfter(ends, ids.shape[1])], [STOP])
            unshared = decode_pruned(model, ids, mask, 12, [unshared_scores, EndAfter(ends, ids.shape[1])], [STOP],
                                     share_prefix=False)
    finally:
        hook.remove()
    assert got == expected == unshared
    for a, b in zip(shared_scores.steps, unshared_scores.steps, strict=True):  # the same logits, not only the same picks
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert calls[0] == (1, opening) and calls[1] == (len(rests), max(rests))  # the opening once, then each row's rest
    assert [len(row) for row in got] == [2, 11, 5, 1, 12]


def _draws(sampler: TopKSampling, logits: list[float], rows: int) -> list[int]:
    import torch

    scores = torch.tensor([logits] * rows)
    out = sampler(None, scores)
    assert bool((torch.isfinite(out).sum(-1) == 1).all()), "one finite score per row: the drawn token"
    return out.argmax(-1).tolist()


def test_sampler_draws_from_the_top_p_set_with_its_probabilities() -> None:
    import math
    from collections import Counter

    logits = [math.log(p) for p in (0.5, 0.3, 0.15, 0.05)] + [float("-inf")] * 4
    # top_p 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it; 0.15 and 0.05 are cut
    counts = Counter(_draws(TopKSampling(temperature=1.0, top_p=0.7, top_k=50, seed=0), logits, 4000))
    assert set(counts) == {0, 1}
    assert counts[0] / 4000 == pytest.approx(0.5 / 0.8, abs=0.03)
    # top_k 1 is greedy; a low temperature concentrates the draws on the best token
    assert set(_draws(TopKSampling(temperature=1.0, top_p=1.0, top_k=1, seed=0), logits, 200)) == {0}
    cold = Counter(_draws(TopKSampling(temperature=0.1, top_p=1.0, top_k=50, seed=0), logits, 2000))
    assert cold[0] / 2000 > 0.98


def test_sampler_is_seeded_and_survives_a_fully_masked_row() -> None:
    import torch

    logits = [0.0] * 8
    first = _draws(TopKSampling(1.0, 1.0, 8, seed=3), logits, 64)
    assert first == _draws(TopKSampling(1.0, 1.0, 8, seed=3), logits, 64)
    assert first != _draws(TopKSampling(1.0, 1.0, 8, seed=4), logits, 64)
    masked = torch.full((2, 8), float("-inf"))
    out = TopKSampling(0.5, 0.9, 4, seed=0)(None, masked)
    assert bool((torch.isfinite(out).sum(-1) == 1).all())
    with pytest.raises(ValueError, match="top_k=0"):
        TopKSampling(0.5, 0.9, 0, seed=0)
