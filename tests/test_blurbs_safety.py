"""The safety filter catches every listed case, falls back to an extractive summary and says why."""

from __future__ import annotations

import pytest

from models.blurbs.safety import Rules, extractive_summary, normalise, problems, review, words

TITLE = "Northwind Minimalist Red Ceramic Mug"
TEXT = ("Meet the minimalist mug in red ceramic by Northwind. Made for tea, it holds 350 ml and is "
        "dishwasher safe. Priced at $14.50. A shop favourite.")
RULES = Rules(blocklist=("cocaine", "hate"), min_words=4, max_words=30, brands=frozenset({"northwind", "kestrel"}))
GOOD = "A minimalist red ceramic mug by Northwind that holds 350 ml."


def test_a_faithful_blurb_passes_unchanged() -> None:
    verdict = review(GOOD, TITLE, TEXT, RULES)
    assert (verdict.source, verdict.reason, verdict.blurb) == ("generated", None, GOOD)


def test_a_capitalised_hyphenated_source_word_is_not_an_invented_brand() -> None:
    # The title's casing "T-Shirt" used to flag "Shirt" as a made-up brand (found by benchmarks/blurbs_eval.py).
    title, text = "Northwind Minimalist Green Merino T-Shirt", "The minimalist t-shirt in green merino by Northwind."
    verdict = review("Northwind Minimalist Green Merino T-Shirt, made for summer days.", title, text, RULES)
    assert (verdict.source, verdict.reason) == ("generated", None)
    assert review("A green merino T-Shirt by Northwind-Zephyr for summer.", title, text, RULES).reason == "invented_brand"


@pytest.mark.parametrize(
    ("blurb", "reason"),
    [
        ("A minimalist red mug by Northwind, pairs well with cocaine.", "blocklist"),
        ("A red ceramic mug by Northwind. Ask sales@northwind.example for more.", "pii_email"),
        ("A red ceramic mug by Northwind. Call +1 415 555 0132 today.", "pii_phone"),
        ("A red ceramic mug by Northwind. See https://northwind.example/mug now.", "pii_url"),
        ("A red ceramic mug by Northwind. See www.northwind.com for more.", "pii_url"),
        ("A minimalist red ceramic mug by Northwind that holds 500 ml.", "invented_number"),
        ("A minimalist red ceramic mug by Northwind, two for the price of one.", "invented_number"),
        ("A minimalist blue ceramic mug by Northwind that holds 350 ml.", "invented_colour"),
        ("A minimalist red glass mug by Northwind that holds 350 ml.", "invented_material"),
        ("A minimalist red ceramic mug by Kestrel that holds 350 ml.", "invented_brand"),
        ("A minimalist red ceramic mug from Zephyrco that holds 350 ml.", "invented_brand"),
        ("A large minimalist red ceramic mug by Northwind for tea.", "invented_size"),
        ("A red mug red mug red mug by Northwind for tea.", "repetition"),
        ("The red mug is the red mug by Northwind for tea.", "repetition"),
        ("A minimalist red ceramic mug by Northwind, made for tea at home, holds 350 ml, is dishwasher safe, "
         "costs $14.50 and is a shop favourite that friends and family will enjoy every single morning", "too_long"),
        ("Red mug.", "too_short"),
        ("", "empty"),
        ("A minimalist red ceramic mug by Northwind that holds", "truncated"),
    ],
)
def test_each_failing_case_falls_back_with_its_reason(blurb: str, reason: str) -> None:
    verdict = review(blurb, TITLE, TEXT, RULES)
    assert verdict.reason == reason, verdict
    assert reason in verdict.reasons
    assert verdict.source == "fallback"
    assert verdict.blurb == extractive_summary(TITLE, TEXT, RULES)
    assert problems(verdict.blurb, f"{TITLE}. {TEXT}", RULES) == []  # the fallback itself is clean


def test_item_not_generated_falls_back_flagged() -> None:
    verdict = review(None, TITLE, TEXT, RULES)
    assert (verdict.source, verdict.reason) == ("fallback", "not_generated")


def test_normalise_whitespace_lead_in_and_trailing_junk() -> None:
    assert normalise('  Blurb:  "A red   mug\tby Northwind."\n\n#tags #more') == "A red mug by Northwind."


def test_overlong_output_keeps_whole_sentences_within_the_bound() -> None:
    long_tail = " It " + "really " * 40 + "is great."
    verdict = review(GOOD + long_tail, TITLE, TEXT, RULES)
    assert (verdict.source, verdict.blurb) == ("generated", GOOD)


def test_fallback_drops_source_sentences_with_pii_or_blocked_terms() -> None:
    text = "Call 415 555 0132 to order. A red ceramic mug by Northwind. We hate chipped mugs. Holds 350 ml."
    summary = extractive_summary("Red Mug", text, RULES)
    assert summary == "A red ceramic mug by Northwind. Holds 350 ml."
    assert len(words(summary)) <= RULES.max_words


def test_fallback_of_a_long_single_sentence_respects_max_words() -> None:
    text = "A mug " + "that is very nice " * 20 + "."
    assert len(words(extractive_summary("Mug", text, RULES))) <= RULES.max_words


def test_uncased_output_gets_source_casing_back() -> None:
    verdict = review("a minimalist red ceramic mug by northwind that holds 350 ml.", TITLE, TEXT, RULES, uncased=True)
    assert verdict.blurb == GOOD
