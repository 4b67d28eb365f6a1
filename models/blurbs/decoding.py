"""Batched decoding for a causal LM that drops each row from the batch as soon as it ends.

Why not `model.generate`: a batch runs until its longest row ends, and every finished row is
still computed at every step. Blurbs are short and uneven (SmolLM2 on a news catalog: 21 tokens
on average, the longest of 64 rows usually at the 36-token cap), so about 40 % of the row-steps
were spent on rows that had already finished; on CPUs a step costs about in proportion to its rows.
Decisions are the same as `generate` with greedy decoding after the same logits processors (sampling
is one of them, `sampling.TopKSampling`): a row's tokens do not depend on the rows beside it.

The prompts' shared opening (chat template and instruction, ~45 of ~100 tokens for SmolLM2's blurb
prompt) is read once and its cache copied to every row: on CPUs the prompt's prefill is compute
bound and was over half of a batch's time.
"""

from __future__ import annotations

from typing import Any

MIN_SHARED_PREFIX = 8  # tokens; below this, reading the opening once saves less than its extra call costs


def shared_prefix_length(input_ids: Any, attention_mask: Any) -> int:
    """How many opening tokens every (left-padded) prompt shares, leaving each row at least one token
    of its own (the last prompt token's logits start decoding)."""
    import torch

    lengths = attention_mask.long().sum(-1)
    width, n = input_ids.shape[1], int(lengths.min()) - 1
    if n <= 0 or input_ids.shape[0] < 2:
        return 0
    starts = width - lengths
    opening = input_ids.gather(1, starts[:, None] + torch.arange(n)[None, :])
    differs = torch.nonzero(~(opening == opening[:1]).all(0)).flatten()
    return int(differs[0]) if differs.numel() else n


def _read_prompts(model: Any, input_ids: Any, attention_mask: Any, cache: Any,
                  share_prefix: bool) -> tuple[Any, Any, Any]:
    """Fill `cache` with the prompts, reading their shared opening once when it is long enough; returns
    (last-token logits, the model's attention mask, each row's last position)."""
    import torch

    prefix = shared_prefix_length(input_ids, attention_mask) if share_prefix else 0
    if prefix < MIN_SHARED_PREFIX:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding: each prompt starts at 0
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache, use_cache=True,
                       logits_to_keep=1).logits
        return logits, attention_mask, positions[:, -1:]
    rows, width = input_ids.shape
    lengths = attention_mask.long().sum(-1)
    opening = input_ids[0, width - int(lengths[0]):][:prefix]
    model(input_ids=opening[None], position_ids=torch.arange(prefix)[None], cache=cache, use_cache=True, logits_to_keep=1)
    cache.batch_repeat_interleave(rows)
    # each row's rest, left padded; the masked columns hold pads or opening tokens that no query attends to
    rest = lengths - prefix
    rest_width = int(rest.max())
    rest_mask = (torch.arange(rest_width)[None, :] >= (rest_width - rest)[:, None]).to(attention_mask.dtype)
    positions = prefix + (rest_mask.long().cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([attention_mask.new_ones((rows, prefix)), rest_mask], dim=1)
    logits = model(input_ids=input_ids[:, width - rest_width:], attention_mask=mask, position_ids=positions, cache=cache,
                   use_cache=True, logits_to_keep=1).logits
    return logits, mask, positions[:, -1:]


def decode_pruned(model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, processors: list[Any],
                  stop_ids: list[int], *, share_prefix: bool = True) -> list[list[int]]:
    """New tokens of each row (its stop token included, as `generate` returns it), for left-padded
    prompts. A processor with a `select(rows)` method is told which rows remain after each pruning;
    processors see the prompts as given (`input_ids`) followed by the tokens written so far."""
    import torch
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(rows)]
    live = list(range(rows))  # batch row -> input row
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
    cache = DynamicCache(config=model.config)
    logits, mask, positions = _read_prompts(model, input_ids, attention_mask, cache, share_prefix)
    seen = input_ids
    for step in range(max_new_tokens):
        scores = logits[:, -1, :].float()
        for processor in processors:
            scores = processor(seen, scores)
        tokens = scores.argmax(-1)
        for r, token in zip(live, tokens.tolist()):
            out[r].append(token)
        seen = torch.cat([seen, tokens[:, None]], dim=1)
        done = torch.isin(tokens, stops)
        if bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            cache.batch_select_indices(keep)
            kept = keep.tolist()
            live = [live[k] for k in kept]
            seen, tokens, mask, positions = seen[keep], tokens[keep], mask[keep], positions[keep]
            for processor in processors:
                if hasattr(processor, "select"):
                    processor.select(kept)
        if step + 1 == max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        positions = positions + 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                       logits_to_keep=1).logits
    return out
