"""Blurb checks: every failing case falls back to an extractive summary and says why.

The faithfulness cases use catalogs and words the synthetic shop does not have (a corduroy jacket,
a film with genres, a news story), so the checker is tested beyond the data it was built on.
"""

from __future__ import annotations

import pytest

from models.blurbs.safety import (
    Rules,
    catalog_vocab,
    extractive_summary,
    faithfulness_issues,
    invented_entities,
    normalise,
    pii_found,
    problems,
    repeats_title,
    review,
    words,
)

TITLE = "Northwind Minimalist Red Ceramic Mug"
TEXT = ("Meet the minimalist mug in red ceramic by Northwind. Made for tea, it holds 350 ml and is "
        "dishwasher safe. Priced at $14.50. A shop favourite.")
RULES = Rules(blocklist=("cocaine", "hate"), min_words=4, max_words=30, brands=frozenset({"northwind", "kestrel"}))
GOOD = "A minimalist red ceramic mug by Northwind that holds 350 ml, for slow mornings with tea."

JACKET = "Harbour Corduroy Jacket"
JACKET_TEXT = "A relaxed jacket in olive corduroy by Harbour. Size M. Two chest pockets and a cotton lining."
FILM = "The Long Riders (1980)"
FILM_TEXT = "The Long Riders (1980). Genres: Action, Western."
FILM_VOCAB = catalog_vocab(['{"genres": "Action|Western", "year": "1980"}', '{"genres": "Horror|Romance", "year": "1999"}',
                            '{"genres": "Comedy|Drama", "year": "2004"}', '{"genres": "Action|Comedy", "year": "1995"}'])


def test_a_faithful_blurb_passes_unchanged() -> None:
    verdict = review(GOOD, TITLE, TEXT, RULES)
    assert (verdict.source, verdict.reason, verdict.blurb) == ("generated", None, GOOD)


def test_a_capitalised_hyphenated_source_word_is_not_an_invented_entity() -> None:
    title, text = "Northwind Minimalist Green Merino T-Shirt", "The minimalist t-shirt in green merino by Northwind."
    verdict = review("A Northwind T-Shirt in green merino, made for warm summer days outdoors.", title, text, RULES)
    assert (verdict.source, verdict.reason) == ("generated", None)
    assert review("A green merino T-Shirt by Northwind-Zephyr for warm summer days.", title, text, RULES).reason == "invented_entity"


@pytest.mark.parametrize(
    ("blurb", "reason"),
    [
        ("A minimalist red mug by Northwind, pairs well with cocaine at breakfast.", "blocklist"),
        ("A red ceramic mug by Northwind for tea, you fucking idiot.", "profanity"),
        ("A red ceramic mug by Northwind. Ask sales@northwind.example for more.", "pii_email"),
        ("A red ceramic mug by Northwind. Call +1 415 555 0132 today.", "pii_phone"),
        ("A red ceramic mug by Northwind. See https://northwind.example/mug now.", "pii_url"),
        ("A red ceramic mug by Northwind. See www.northwind.com for more.", "pii_url"),
        ("A minimalist red ceramic mug by Northwind that holds 500 ml.", "invented_number"),
        ("A minimalist red ceramic mug by Northwind, two for the price of one.", "invented_number"),
        ("A minimalist blue ceramic mug by Northwind that holds 350 ml.", "invented_colour"),
        ("A minimalist red glass mug by Northwind that holds 350 ml.", "invented_material"),
        ("A large minimalist red ceramic mug by Northwind for tea.", "invented_size"),
        ("An organic minimalist red ceramic mug by Northwind for tea.", "invented_claim"),
        ("A minimalist red ceramic mug by Kestrel that holds 350 ml.", "invented_brand"),
        ("A minimalist red ceramic mug from Zephyrco that holds 350 ml.", "invented_entity"),
        ("I bought this red mug by Northwind for my tea and love it.", "first_person"),
        ("The Northwind Minimalist Red Ceramic Mug.", "title_repeat"),
        ("A great deal, just right for anyone at all.", "vacuous"),
        ("Made for tea, it holds 350 ml and is dishwasher safe.", "copied_source"),
        ("A red mug red mug red mug by Northwind for tea.", "repetition"),
        ("A red ceramic mug made with love and love by Northwind.", "repetition"),
        ("A minimalist red ceramic mug by Northwind, made for tea at home, holds 350 ml, is dishwasher safe, "
         "costs $14.50 and is a shop favourite that friends and family will enjoy every single morning", "too_long"),
        ("Red mug.", "too_short"),
        ("", "empty"),
        ("A minimalist red ceramic mug by Northwind that holds", "truncated"),
        ("A minimalist red ceramic mug by Northwind for slow mornings with.", "truncated"),
        ("A minimalist red ceramic mug by Northwind for slow mornings. . .", "truncated"),
    ],
)
def test_each_failing_case_falls_back_with_its_reason(blurb: str, reason: str) -> None:
    verdict = review(blurb, TITLE, TEXT, RULES)
    assert reason in verdict.reasons, verdict
    assert verdict.source == "fallback"
    assert verdict.blurb == extractive_summary(TITLE, TEXT, RULES)
    # the fallback is safe and faithful (it is the source's own sentences, so "copied" by design)
    assert set(problems(verdict.blurb, f"{TITLE}. {TEXT}", RULES)) <= {"copied_source"}


@pytest.mark.parametrize(
    ("blurb", "issue"),
    [
        ("A relaxed olive corduroy jacket by Harbour with two chest pockets.", None),
        ("A relaxed teal corduroy jacket by Harbour with two chest pockets.", "invented_colour"),
        ("A relaxed olive denim jacket by Harbour with two chest pockets.", "invented_material"),
        ("A relaxed olive corduroy jacket by Harbour, in size XXL.", "invented_size"),
        ("A relaxed olive corduroy jacket by Harbour with three chest pockets.", "invented_number"),
        ("A relaxed olive corduroy jacket by Patagonia with two pockets.", "invented_entity"),
        ("A waterproof olive corduroy jacket by Harbour with two pockets.", "invented_claim"),
    ],
)
def test_faithfulness_on_a_catalog_the_checker_was_not_built_on(blurb: str, issue: str | None) -> None:
    found = faithfulness_issues(blurb, f"{JACKET}. {JACKET_TEXT}")
    assert (found == []) if issue is None else (issue in found), found


@pytest.mark.parametrize(
    ("blurb", "issue"),
    [
        ("A 1980 Western with action for fans of outlaw stories on horseback.", None),
        ("A 1980 Western with action and romance for fans of outlaw stories.", "invented_attribute"),
        ("A romantic 1980 Western for fans of outlaw stories.", "invented_attribute"),  # another form of "romance"
        ("A 1981 Western with action for fans of outlaw stories.", "invented_number"),
        ("A 1980 Western starring Clint Eastwood for fans of outlaw stories.", "invented_entity"),
    ],
)
def test_attribute_words_come_from_the_catalog_itself(blurb: str, issue: str | None) -> None:
    found = faithfulness_issues(blurb, f"{FILM}. {FILM_TEXT}", attribute_vocab=FILM_VOCAB)
    assert (found == []) if issue is None else (issue in found), found


def test_catalog_vocab_keeps_discriminating_attribute_words_only() -> None:
    vocab = catalog_vocab(['{"genres": "Action|Western"}', '{"genres": "Action|Horror"}', '{"genres": "Action|Drama"}',
                           '{"genres": "Action|Comedy", "brand": "Acme"}', None], ["film"] * 5)
    assert {"western", "horror", "drama", "comedy"} <= vocab
    assert "action" not in vocab and "film" not in vocab  # on (nearly) every item: tells none apart
    assert "acme" not in vocab  # brands are checked as entities


def test_news_entities_and_weekdays_must_be_in_the_story() -> None:
    source = "Minister Okafor delays vote. Minister Okafor delays the budget vote on Tuesday, aides said."
    assert faithfulness_issues("A look at why Minister Okafor delayed the budget vote this week.", source) == []
    assert "invented_entity" in faithfulness_issues("Why Minister Okafor delayed the vote on Friday, explained.", source)
    assert "invented_entity" in faithfulness_issues("Why Minister Adeyemi delayed the budget vote, explained.", source)


def test_repeats_title_counts_new_content_words() -> None:
    assert repeats_title("New battery loses chip as smartphone story grows.", "New battery loses chip as smartphone story grows")
    assert not repeats_title("What the battery loss means for phone buyers and chip makers this year.",
                             "New battery loses chip as smartphone story grows")


def test_pii_found_by_the_maintained_detectors() -> None:
    assert "pii_email" in pii_found("Write to jo.bloggs@example.org today.")
    assert "pii_phone" in pii_found("Ring (415) 555-0132 after six.")
    assert "pii_url" in pii_found("Details at http://shop.example.com/a?b=1 now.")
    assert pii_found("A 350 ml mug from 1995, priced at $14.50, keeps tea hot for 24 hours.") == set()


def test_item_not_generated_falls_back_flagged() -> None:
    verdict = review(None, TITLE, TEXT, RULES)
    assert (verdict.source, verdict.reason) == ("fallback", "not_generated")


def test_the_first_passing_candidate_is_shown() -> None:
    verdict = review(["A minimalist blue ceramic mug by Northwind.", GOOD], TITLE, TEXT, RULES)
    assert (verdict.source, verdict.blurb) == ("generated", GOOD)
    failed = review(["A minimalist blue ceramic mug by Northwind.", "Red mug."], TITLE, TEXT, RULES)
    assert (failed.source, failed.reason) == ("fallback", "invented_colour")  # the first candidate's reason


def test_normalise_whitespace_lead_in_and_trailing_junk() -> None:
    assert normalise('  Blurb:  "A red   mug\tby Northwind."\n\n#tags #more') == "A red mug by Northwind."
    assert normalise('Here\'s a rewritten version with improved clarity: "A red mug by Northwind.') == "A red mug by Northwind."
    assert normalise("Sure! Here is the blurb: A red mug.") == "A red mug."
    assert normalise("Sure-footed boots: made for mud.") == "Sure-footed boots: made for mud."


def test_overlong_output_keeps_whole_sentences_within_the_bound() -> None:
    long_tail = " It " + "really " * 40 + "is great."
    verdict = review(GOOD + long_tail, TITLE, TEXT, RULES)
    assert (verdict.source, verdict.blurb) == ("generated", GOOD)


def test_fallback_drops_source_sentences_with_pii_or_blocked_terms() -> None:
    text = ("Call 415 555 0132 to order. A red ceramic mug by Northwind. We hate chipped mugs. "
            "Mail orders@northwind.example. Holds 350 ml.")
    summary = extractive_summary("Red Mug", text, RULES)
    assert summary == "A red ceramic mug by Northwind. Holds 350 ml."
    assert len(words(summary)) <= RULES.max_words


def test_fallback_prefers_sentences_not_in_a_customers_voice() -> None:
    text = "I bought a size 8 a few years back and love it. A canvas sneaker with a rubber sole."
    assert extractive_summary("Sneaker", text, RULES) == "A canvas sneaker with a rubber sole."


def test_fallback_of_a_long_single_sentence_respects_max_words() -> None:
    text = "A mug " + "that is very nice " * 20 + "."
    assert len(words(extractive_summary("Mug", text, RULES))) <= RULES.max_words


def test_uncased_output_gets_source_casing_back() -> None:
    verdict = review("a minimalist red ceramic mug by northwind that holds 350 ml, for slow mornings with tea.",
                     TITLE, TEXT, RULES, uncased=True)
    assert verdict.blurb == GOOD


@pytest.mark.parametrize("blurb", [
    "A white merino t-shirt for everyday wear, soft and easy to care for.",  # 0.66 from alt-profanity-check
    "A black and white noir about a family on the road, for fans of slow thrillers.",
])
def test_colour_words_are_not_profanity(blurb: str) -> None:
    source = "White Merino T-Shirt. A white merino t-shirt for everyday wear, easy to care for. A black and white noir."
    assert "profanity" not in problems(blurb, source + " " + blurb, Rules(min_words=4))


@pytest.mark.parametrize("blurb", ["What a piece of shit lamp, buy it.", "A damn good mug for idiots who drink tea."])
def test_swearing_and_insults_are_profanity(blurb: str) -> None:
    assert "profanity" in problems(blurb, blurb, Rules(min_words=4))


def test_a_capitalised_function_word_is_not_a_name_but_the_name_after_it_is() -> None:
    assert faithfulness_issues("A film for fans of The Long Riders.", FILM + ". " + FILM_TEXT) == []
    assert faithfulness_issues("A film for fans of The Beatles.", FILM + ". " + FILM_TEXT) == ["invented_entity"]
    assert faithfulness_issues("A song performed by The Who.", FILM + ". " + FILM_TEXT) == ["invented_entity"]
    assert invented_entities("A Western from Riders & Co., starring Bill Murray.", FILM + ". " + FILM_TEXT) == {"Co", "Bill", "Murray"}
    assert faithfulness_issues("Critic: The riders ride again, Western fans.", FILM + ". " + FILM_TEXT) == []
