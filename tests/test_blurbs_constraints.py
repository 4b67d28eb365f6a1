"""Faithful decoding: a tiny byte-level BPE tokenizer and a random tiny Llama, built here, stand in
for SmolLM2; the random model is the adversary (it writes any token), the processor must keep what
it writes within what the checks accept."""

from __future__ import annotations

import re
from typing import Any

import pytest

from models.blurbs.constraints import FaithfulDecoding
from models.blurbs.safety import Rules, faithfulness_issues

SOURCE = "Tidewater Red Mug. A red ceramic mug by Tidewater that holds 350 ml, for slow mornings with tea."
CORPUS = [SOURCE] * 20 + [
    "A red mug for slow mornings, a red ceramic mug that holds tea, for the mug and the tea.",
    "Nolan directed a blue drama in 1995 with Kevin and Michael. I love my organic cotton shirt, we said.",
    "The Kestrel lamp is green and costs 72 dollars. Great for reading, perfect for a gift.",
    "Tidewinkle and Tideworks are not words. Visit www.shop.com or write to a@b.co for two offers.",
    "Read it in The Times, in The Sun, in The Post.",
] * 20


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=1200, min_frequency=1, special_tokens=["<eos>", "<pad>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<eos>", pad_token="<pad>")
    tok.padding_side = "left"
    return tok


def _scores_after(tok: Any, written: str, source: str = SOURCE, rules: Rules = Rules(min_words=4),
                  tokens_left: int | None = None) -> Any:
    """Feed `written` to a fresh processor token by token (flat model scores); the next token's scores.
    tokens_left: the budget (max_new_tokens) leaves this many tokens, the next one included."""
    import torch

    prompt = tok("Facts:", add_special_tokens=False)["input_ids"]
    ids = tok(written, add_special_tokens=False)["input_ids"] if written else []
    budget = None if tokens_left is None else len(ids) + tokens_left
    proc = FaithfulDecoding(tok, [source], rules, prompt_length=len(prompt), max_new_tokens=budget)
    scores = torch.zeros((1, len(tok)))
    for k in range(len(ids) + 1):
        scores = proc(torch.tensor([prompt + ids[:k]]), torch.zeros((1, len(tok))))
    return scores[0]


def _allowed_after(tok: Any, written: str, source: str = SOURCE, rules: Rules = Rules(min_words=4)) -> set[str]:
    """The decoded tokens still allowed after `written`."""
    import torch

    scores = _scores_after(tok, written, source, rules)
    return {tok.decode([i]) for i in torch.nonzero(scores > float("-inf")).flatten().tolist()}


def test_capitalised_words_inside_a_sentence_must_begin_a_source_word(tokenizer: Any) -> None:
    allowed = _allowed_after(tokenizer, "A mug by")
    assert " Nolan" not in allowed and " Kevin" not in allowed and " Michael" not in allowed
    assert any(t.startswith(" T") for t in allowed)  # " Tidewater" (or its first piece) stays possible
    assert " The" in allowed  # a function word
    # after a name, a capitalised function word is a name part ("The Who"): only if the source has it
    after_name = _allowed_after(tokenizer, "A mug by Tidewater", "Tidewater Red Mug. A red mug by Tidewater.")
    assert " The" not in after_name and " Red" in after_name
    assert " The" in _allowed_after(tokenizer, "A mug by Tidewater", "The Tidewater Red Mug. A red mug by Tidewater.")


def test_a_name_once_begun_must_go_on_as_the_source_spells_it(tokenizer: Any) -> None:
    source = "Quillmere Red Mug. A red mug by Quillmere."  # a brand the tokenizer never saw: it comes in pieces
    pieces = tokenizer.tokenize(" Quillmere")
    assert len(pieces) > 2
    k = next(k for k in range(1, len(pieces)) if tokenizer.convert_tokens_to_string(pieces[:k]).strip())
    first = tokenizer.convert_tokens_to_string(pieces[:k])  # " Q" (a lone space, then "Q", in this vocabulary)
    allowed = _allowed_after(tokenizer, "A mug by" + first, source)
    rest = "Quillmere"[len(first.strip()):]
    assert allowed and all(rest.startswith(t) for t in allowed)  # no other word, no space before the name ends


def test_digits_must_continue_a_source_number(tokenizer: Any) -> None:
    start = _allowed_after(tokenizer, "It holds ")
    assert "3" in start and not {"1", "7", "9"} & start
    assert _allowed_after(tokenizer, "It holds 35") & set("0123456789") == {"0"}
    assert "3" not in _allowed_after(tokenizer, "It holds 350 ml, ")  # the same number again within three words


def test_list_words_first_person_and_contact_details_are_masked(tokenizer: Any) -> None:
    allowed = _allowed_after(tokenizer, "A mug for")
    assert " red" in allowed  # in the source
    assert " blue" not in allowed and " green" not in allowed and " organic" not in allowed
    assert " I" not in allowed and " my" not in allowed and " we" not in allowed
    assert not any("@" in t or "www" in t for t in allowed)
    assert " two" not in allowed  # a number word the source lacks


def test_the_text_ends_only_after_a_finished_sentence(tokenizer: Any) -> None:
    assert "<eos>" not in _allowed_after(tokenizer, "A red mug for tea")
    assert "<eos>" not in _allowed_after(tokenizer, "A mug.")  # under min_words
    assert "<eos>" in _allowed_after(tokenizer, "A red mug for slow mornings.")
    assert "." not in _allowed_after(tokenizer, "A red ceramic mug for slow mornings with")  # cut off, not ended
    assert not {t for t in _allowed_after(tokenizer, "A red ceramic mug for slow mornings") if t.strip() == "."} - {"."}


def test_the_last_tokens_of_the_budget_push_the_sentence_to_its_end(tokenizer: Any) -> None:
    """A row the budget cuts off fails `truncated` and costs a retry: near the budget's end the
    sentence end gains, and once the sentence has ended, the end of the text does."""
    dot, eos = tokenizer.convert_tokens_to_ids(".") , tokenizer.eos_token_id
    written = "A red ceramic mug for slow mornings"
    free, roomy, last = (_scores_after(tokenizer, written, tokens_left=n) for n in (None, 20, 1))
    assert roomy[dot] == free[dot] and last[dot] > free[dot] + 4
    ended = "A red ceramic mug for slow mornings."
    assert _scores_after(tokenizer, ended, tokens_left=1)[eos] > _scores_after(tokenizer, ended)[eos] + 4


def test_no_content_word_again_within_three_words(tokenizer: Any) -> None:
    assert " mug" not in _allowed_after(tokenizer, "A red mug for a")
    assert " mug" in _allowed_after(tokenizer, "A red mug for slow mornings and tea, a")


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_a_random_model_writes_nothing_the_faithfulness_check_rejects(tokenizer: Any, seed: int) -> None:
    """The adversary: sampled text from random weights invents numbers, names and colours freely;
    through the processor, none of it gets out (and without it, it does: the test can fail)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    enc = tokenizer(["Facts: " + SOURCE] * 8, return_tensors="pt", padding=True)
    rules = Rules(min_words=4)

    def sample(constrained: bool) -> list[str]:
        torch.manual_seed(seed)
        extra = {"logits_processor": [FaithfulDecoding(tokenizer, [SOURCE] * 8, rules, enc["input_ids"].shape[1])]} if constrained else {}
        out = model.generate(**enc, max_new_tokens=30, do_sample=True, top_k=0, pad_token_id=tokenizer.pad_token_id, **extra)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        # the token budget may end a word midway (such a blurb fails the `truncated` check anyway)
        return [re.sub(r"[A-Za-z0-9]+$", "", t) for t in texts]

    free = [faithfulness_issues(t, SOURCE) for t in sample(False)]
    held = [faithfulness_issues(t, SOURCE) for t in sample(True)]
    assert any(free), "the random model should invent something unconstrained"
    assert not any(held), [(h, t) for h, t in zip(held, sample(True)) if h]


@pytest.mark.parametrize("seed", [1, 2])
def test_pruned_decoding_keeps_each_rows_constraints(tokenizer: Any, seed: int) -> None:
    """decoding.decode_pruned drops finished rows and tells the processor (`select`): each remaining
    row must keep its own source's state, so the texts equal greedy `generate` over the full batch."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from models.blurbs.constraints import token_table
    from models.blurbs.decoding import decode_pruned

    sources = sorted(set(CORPUS))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).eval()
    enc = tokenizer(["Facts: " + s for s in sources], return_tensors="pt", padding=True)
    stops = [tokenizer.eos_token_id] + token_table(tokenizer).ends.tolist()  # a row ends at its first sentence

    def processors() -> list[Any]:
        return [FaithfulDecoding(tokenizer, sources, Rules(min_words=4), enc["input_ids"].shape[1])]

    with torch.inference_mode():
        full = model.generate(**enc, max_new_tokens=30, do_sample=False, logits_processor=processors(),
                              eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        pruned = decode_pruned(model, enc["input_ids"], enc["attention_mask"], 30, processors(), stops)
    expected = []
    for tokens in full[:, enc["input_ids"].shape[1]:].tolist():
        end = min((tokens.index(s) for s in stops if s in tokens), default=len(tokens) - 1)
        expected.append(tokens[:end + 1])
    assert pruned == expected
    assert min(map(len, pruned)) < 30, "some rows must leave the batch early"
