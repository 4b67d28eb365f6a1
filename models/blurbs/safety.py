"""Post-processing and checks: nothing generated reaches a user unchecked.

`review(raw, title, text, rules)` normalises a generated blurb and runs every check; a blurb that
fails is replaced by an extractive summary of the source and flagged with the first reason found
(safety reasons before faithfulness before form).

Safety uses maintained libraries: PII by scrubadub's detectors (email, phone, URL, credentials,
card and social security numbers) plus a bare-domain rule scrubadub lacks ("shop.com"), profanity
by alt-profanity-check's model (it ships in the wheel), and the deployment's own blocklist.

Faithfulness (every number, named entity and attribute word of a blurb is in the source) does not
rely on one catalog's vocabulary: the attribute words come from the catalog's own structured
attributes (`Rules.attribute_vocab`, built per catalog by `catalog_vocab`), plus general English
colour, size/measure and material words that any product catalog may use.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# General English, not any catalog's: the words a blurb can use to state a colour, size or material.
COLOURS = frozenset("""red blue green black white yellow pink grey gray orange purple brown beige navy
gold silver teal maroon ivory cream turquoise violet magenta cyan olive tan charcoal burgundy lavender
indigo coral mint khaki lilac crimson scarlet amber aqua azure bronze copper emerald fuchsia jade
lime mauve mustard ochre peach plum rose ruby rust saffron sage salmon sapphire sienna taupe
ultramarine vermilion""".split())
MATERIALS = frozenset("""ceramic porcelain stoneware earthenware enamel glass crystal canvas leather suede
mesh nylon polyester spandex elastane lycra acrylic rayon viscose modal lyocell tencel fleece flannel
corduroy denim chambray tweed twill jersey satin chiffon velvet velour lace cashmere alpaca mohair
merino wool silk linen hemp jute cotton bamboo rattan wicker cork oak pine walnut maple teak birch
wood wooden plywood steel aluminium aluminum titanium brass copper iron chrome zinc tin plastic
silicone rubber vinyl resin acrylic marble granite concrete slate paper cardboard felt""".split())
SIZES = frozenset("""xxs xs s m l xl xxl xxxl small medium large mini tiny huge giant oversized petite
plus slim skinny wide narrow tall short compact king queen twin double single ml cl litre liter
litres liters oz ounce ounces pint gallon cm mm metre meter inch inches ft foot feet kg g gram
grams lb lbs pound pounds mah gb tb mb watt watts""".split())
# Claims about how an item is made, certified or received: facts a blurb may state only when the
# source does (general marketing vocabulary, not any one catalog's).
CLAIMS = frozenset("""organic sustainable eco-friendly eco recycled recyclable biodegradable vegan handmade
hand-made handcrafted artisan waterproof water-resistant windproof breathable hypoallergenic non-toxic
bpa-free certified patented award-winning bestselling best-selling bestseller popular luxury luxurious
premium exclusive limited authentic genuine imported fair-trade gluten-free dishwasher-safe
microwave-safe oscar-winning acclaimed classic iconic legendary cult blockbuster praised beloved renowned
celebrated famous award awards worldwide critically hit favourite favorite top-rated highly-rated
environmentally sustainability pioneer pioneering""".split())
NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "twenty": "20",
                "thirty": "30", "fifty": "50", "hundred": "100", "thousand": "1000", "dozen": "12",
                "first": "1", "second": "2", "third": "3"}
# Function words (sklearn's English stop words), for "does the blurb say anything the title doesn't".
try:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS as STOP_WORDS
except ImportError:  # pragma: no cover - scikit-learn is a dependency
    STOP_WORDS = frozenset()
# Capitalised inside a sentence, these name nothing ("The", "In"); sklearn's list also holds
# words that begin or end names ("Bill", "& Co.", "Inc.", "Top", "Fire"), which stay entities.
FUNCTION_WORDS = STOP_WORDS - {"bill", "co", "con", "de", "inc", "ltd", "mill", "fire", "top", "system", "interest",
                               "call", "cry", "un", "side", "front", "bottom", "serious", "sincere"}
FIRST_PERSON_FORMS = ("I", "I'm", "I've", "I'd", "me", "my", "mine", "we", "we're", "our", "us")
FIRST_PERSON = re.compile(r"\b(?:" + "|".join(FIRST_PERSON_FORMS) + r")\b")
# Words no finished English sentence ends on ("... a tale of faith and."): articles, conjunctions,
# prepositions, possessives and copulas; a blurb ending on one was cut off, however it is punctuated.
CUT_OFF_WORDS = frozenset("""a an the and or but nor of with to for in on at by from into as than between through
its their his your our is are was were""".split())
# Text that ends with a capitalised word (and maybe a space): a capitalised function word after it
# is part of a name ("The Who"), not a function word.
AFTER_NAME = re.compile(r"\b[A-Z][a-zA-Z'-]* ?$")
# What comes before a sentence's first word: a capital after it is not a name.
SENTENCE_ENDS = (".", "!", "?", ":", '"', "\u201c")

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"\b(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|net|org|io|co|shop|store|info|biz|uk|de|example)\b", re.I)
HANDLE = re.compile(r"(?<![\w.@])@[A-Za-z0-9_]{2,}")  # social handles (scrubadub's Twitter rule missed "@a_b")
PHONE = re.compile(r"(?<![\w.$])\+?\(?\d[\d\s().-]{6,}\d(?![\w.])")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)?")
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A label, or a chat model's preamble before its answer ("Here's a rewritten version ...:", "Sure! ...:").
LEAD_IN = re.compile(r"^\s*(?:blurb|answer|description|summary|(?:here(?:'s| is)|sure(?=[\s!,.]))[^:\"]{0,80})\s*:\s*", re.I)
# Generic marketing openers dropped from extractive text ("Meet the X" -> "The X").
OPENER = re.compile(r"^(?:meet|introducing|say hello to|this is|discover)\s+the\s+", re.I)
PII_REASONS = {"email": "pii_email", "phone": "pii_phone", "url": "pii_url", "twitter": "pii_handle",
               "credential": "pii_credential", "credit_card": "pii_number", "social_security_number": "pii_number"}

SAFETY_ORDER = ("empty", "blocklist", "profanity", "pii_email", "pii_phone", "pii_url", "pii_handle",
                "pii_credential", "pii_number", "invented_number", "invented_colour", "invented_material",
                "invented_size", "invented_claim", "invented_attribute", "invented_brand", "invented_entity", "first_person",
                "title_repeat", "vacuous", "copied_source", "repetition", "too_long", "too_short", "truncated")
FAITHFULNESS_REASONS = frozenset(r for r in SAFETY_ORDER if r.startswith("invented_"))
PII_CHECKS = frozenset(r for r in SAFETY_ORDER if r.startswith("pii_"))


@dataclass(frozen=True)
class Rules:
    blocklist: tuple[str, ...] = ()
    min_words: int = 4
    max_words: int = 30
    brands: frozenset[str] = field(default_factory=frozenset)  # known brand names, lower case
    # attribute words of this catalog (lower case, from its items' structured attributes and
    # categories): a blurb may use one only when its own item's source has it
    attribute_vocab: frozenset[str] = field(default_factory=frozenset)
    # alt-profanity-check probability at or above which text is blocked. Measured: its linear model
    # gives colour words weight ("A white merino t-shirt for everyday wear." 0.66, "White Merino" 0.70),
    # while insults and swearing score 0.95-1.0; 0.5 rejected a third of a clothing shop's blurbs.
    profanity_threshold: float = 0.8
    min_new_words: int = 3  # content words a blurb must add beyond its title

    def blocklist_pattern(self) -> re.Pattern[str] | None:
        return _blocklist_pattern(self.blocklist)

    def fingerprint(self) -> dict[str, Any]:
        """The rules as sorted lists: stable across processes (a frozenset's order is not), for cache keys."""
        return {k: sorted(v) if isinstance(v, (frozenset, tuple)) else v for k, v in self.__dict__.items()}


@lru_cache(maxsize=16)
def _blocklist_pattern(blocklist: tuple[str, ...]) -> re.Pattern[str] | None:
    terms = sorted((re.escape(t.strip()) for t in blocklist if t.strip()), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(terms) + r")\b", re.I) if terms else None


@dataclass(frozen=True)
class Verdict:
    blurb: str  # what may be shown: the generated text if it passed, else the fallback
    source: str  # "generated" | "fallback"
    reason: str | None  # first failing check, None when the generated blurb passed
    reasons: tuple[str, ...] = ()  # every failing check (of the best candidate)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def content_words(text: str) -> list[str]:
    return [w.lower() for w in words(text) if w.lower() not in STOP_WORDS and not w.isdigit()]


# --- maintained detectors (loaded once, on first use: scrubadub imports in ~4 s) ---
_lock = threading.Lock()
_scrubber: Any = None
_profanity_cache: dict[str, float] = {}


def _get_scrubber() -> Any:
    global _scrubber
    with _lock:
        if _scrubber is None:
            import scrubadub

            _scrubber = scrubadub.Scrubber(locale="en_US")
    return _scrubber


def pii_found(text: str) -> set[str]:
    """PII reasons in text: scrubadub's detectors, plus the project's rules for what they miss
    (bare domains, handles with underscores, e-mails at unusual domains)."""
    found = {PII_REASONS.get(f.detector_name, "pii_other") for f in _get_scrubber().iter_filth(text)}
    if EMAIL.search(text):
        found.add("pii_email")
    if URL.search(text):
        found.add("pii_url")
    if HANDLE.search(text):
        found.add("pii_handle")
    m = PHONE.search(text)
    if m and sum(c.isdigit() for c in m.group(0)) >= 7:
        found.add("pii_phone")
    return found


def profanity_scores(texts: list[str]) -> list[float]:
    """alt-profanity-check probabilities, batched (one call costs ~15 ms, a batch of 1,000 about the same)."""
    todo = sorted({t for t in texts if t not in _profanity_cache})
    if todo:
        from profanity_check import predict_prob

        for t, p in zip(todo, predict_prob(todo)):
            _profanity_cache[t] = float(p)
        if len(_profanity_cache) > 200_000:  # bounded: a long-lived server must not grow without end
            _profanity_cache.clear()
            return profanity_scores(texts)
    return [_profanity_cache[t] for t in texts]


# --- catalog vocabulary ---

def _attr_values(attrs: Any) -> Iterable[str]:
    if isinstance(attrs, str):
        try:
            attrs = json.loads(attrs)
        except json.JSONDecodeError:
            return []
    if not isinstance(attrs, dict):
        return []
    out = []
    for key, value in attrs.items():
        if key == "brand":
            continue  # brands are checked as entities
        values = value if isinstance(value, list) else re.split(r"[|,;/]", str(value))
        out += [str(v) for v in values]
    return out


def catalog_vocab(attributes: Iterable[Any], categories: Iterable[Any] = (), max_share: float = 0.5) -> frozenset[str]:
    """Attribute words of a catalog: the words of its items' attribute values and categories that are
    not numbers or function words and that fewer than `max_share` of the items carry (a word every
    item has, like "genres", tells no item from another)."""
    per_item: list[set[str]] = []
    for attrs, cat in zip(attributes, [*categories] or [None] * 10**9):  # type: ignore[list-item]
        found = {w.lower() for v in _attr_values(attrs) for w in words(v)}
        if isinstance(cat, str):
            found |= {w.lower() for w in words(cat)}
        per_item.append({w for w in found if not w[0].isdigit() and w not in STOP_WORDS and len(w) > 2})
    counts: dict[str, int] = {}
    for s in per_item:
        for w in s:
            counts[w] = counts.get(w, 0) + 1
    n = max(len(per_item), 1)
    return frozenset(w for w, c in counts.items() if c < max_share * n or n < 4)


# --- text helpers ---

def normalise(raw: str) -> str:
    """First non-empty line, lead-in and wrapping quotes removed, whitespace collapsed."""
    lines = [ln.strip() for ln in raw.replace("\r", "\n").split("\n") if ln.strip()]
    text = LEAD_IN.sub("", lines[0]) if lines else ""
    text = text.strip().strip('"\u201c\u201d\'').strip()
    return re.sub(r"\s+", " ", text)


def restore_case(text: str, source: str) -> str:
    """Give words the casing they have in the source (uncased generators lower-case brands)."""
    found = WORD.findall(source)
    lower = {w for w in found if w.islower()}
    casing = {w.lower(): w for w in found if not w.islower() and w.lower() not in lower}
    out = re.sub(r"[A-Za-z][A-Za-z'-]*", lambda m: casing.get(m.group(0).lower(), m.group(0)) if m.group(0).islower() else m.group(0), text)
    return out[:1].upper() + out[1:]


def fit_length(text: str, max_words: int) -> str:
    """Keep whole sentences within max_words; drop a trailing unfinished sentence when one is complete."""
    sentences = [s for s in SENTENCE_END.split(text) if s]
    kept: list[str] = []
    for s in sentences:
        if len(words(" ".join(kept + [s]))) > max_words:
            break
        kept.append(s)
    if kept and not kept[-1].rstrip().endswith((".", "!", "?")) and len(kept) > 1:
        kept.pop()
    return " ".join(kept) if kept else text


# --- faithfulness ---

def _numbers(text: str) -> set[str]:
    found = {n.replace(",", "") for n in NUMBER.findall(text)}
    found |= {n.rstrip("0").rstrip(".") if "." in n else n for n in found}
    found |= {NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in NUMBER_WORDS}
    return found


def _tokens(text: str) -> set[str]:
    """Lower-case words, with hyphenated parts ("t-shirt" -> t-shirt, t, shirt) and simple plurals."""
    out = set()
    for w in words(text.lower()):
        out.add(w)
        out |= {p for p in re.split(r"['-]", w) if p}
    out |= {w[:-1] for w in out if w.endswith("s") and len(w) > 3}
    return out


def _stem(w: str) -> str:
    # a crude stem (first 5 letters) so "romantic" counts as the attribute "romance" and "animated"
    # as "animation": a blurb stating another item's attribute in another form is still caught
    return w[:5] if len(w) >= 5 else w


def _invented_vocab(blurb_toks: set[str], source_toks: set[str], vocab: frozenset[str]) -> set[str]:
    src_stems = {_stem(w) for w in source_toks}
    vocab_stems = {_stem(w) for w in vocab}
    return {w for w in blurb_toks if (w in vocab or _stem(w) in vocab_stems) and w not in source_toks
            and _stem(w) not in src_stems}


def invented_entities(blurb: str, source: str) -> set[str]:
    """Capitalised words inside a sentence (a name, place, brand, weekday) that the source lacks."""
    src = _tokens(source)
    found = set()
    for m in re.finditer(r"\b[A-Z][a-zA-Z'-]+\b", blurb):
        before = blurb[: m.start()].rstrip()
        if not before or before.endswith(SENTENCE_ENDS):
            continue  # sentence start: capitalised anyway
        w = m.group(0)
        if w.lower() in FUNCTION_WORDS and not AFTER_NAME.search(blurb[: m.start()]):
            continue  # "The", "In": a capitalised function word names nothing; a name after it is checked,
            # and so is one inside a name ("The Who", "Out" of "She's Out of Control")
        if w == "I" or w.lower() in src or all(p in src for p in re.split(r"['-]", w.lower()) if p):
            continue
        if w.lower().endswith("'s") and w.lower()[:-2] in src:
            continue
        found.add(w)
    return found


def faithfulness_issues(blurb: str, source: str, brands: frozenset[str] = frozenset(),
                        attribute_vocab: frozenset[str] = frozenset()) -> list[str]:
    """What the blurb states that the source does not: numbers, colours, materials, sizes, the
    catalog's attribute words, brands and other named entities."""
    issues = []
    b_toks, s_toks = _tokens(blurb), _tokens(source)
    if _numbers(blurb) - _numbers(source):
        issues.append("invented_number")
    if (b_toks & COLOURS) - s_toks:
        issues.append("invented_colour")
    if (b_toks & MATERIALS) - s_toks:
        issues.append("invented_material")
    if {w for w in b_toks & SIZES if len(w) > 2 or w in words(blurb.lower())} - s_toks - {"s", "m", "l", "g"}:
        issues.append("invented_size")
    if {w for w in b_toks & CLAIMS if w in words(blurb.lower()) or "-" in w} - s_toks:
        issues.append("invented_claim")
    if attribute_vocab and _invented_vocab(b_toks, s_toks, attribute_vocab - COLOURS - MATERIALS - SIZES):
        issues.append("invented_attribute")
    src_low, blurb_low = source.lower(), blurb.lower()
    if any(re.search(rf"\b{re.escape(b)}\b", blurb_low) and b not in src_low for b in brands):
        issues.append("invented_brand")
    if invented_entities(blurb, source):
        issues.append("invented_entity")
    return issues


# --- form ---

def is_repetitive(text: str) -> bool:
    toks = [w.lower() for w in words(text)]
    trigrams = list(zip(toks, toks[1:], toks[2:]))
    if len(trigrams) != len(set(trigrams)):
        return True
    # the same content word again within three words ("made with love and love")
    return any(a == b for i, a in enumerate(toks) for b in toks[i + 1:i + 4] if len(a) > 2 and a not in STOP_WORDS)


def repeats_title(blurb: str, title: str, min_new_words: int = 3) -> bool:
    """The blurb adds fewer than min_new_words content words to its title: it says nothing new."""
    if not title:
        return False
    title_toks = _tokens(title)
    new = {w for w in content_words(blurb) if w not in title_toks and w.rstrip("s") not in title_toks}
    return len(new) < min_new_words


def is_vacuous(blurb: str, source: str) -> bool:
    """No content word of the blurb is about the item ("A great deal, just like that!"): it could
    stand under any item, so it tells a customer nothing."""
    src = _tokens(source)
    return not any(w in src or w.rstrip("s") in src for w in content_words(blurb))


def is_cut_off(blurb: str) -> bool:
    """The blurb stops mid-sentence: no final mark, a mark after a space (" . . ."), or a mark right
    after a word no sentence ends on ("a tale of faith and.")."""
    text = blurb.rstrip()
    if not text.endswith((".", "!", "?")):
        return True
    body = text.rstrip(".!?")
    if not body or body[-1].isspace():
        return True
    last = words(body)
    return bool(last) and last[-1].lower() in CUT_OFF_WORDS


def copies_source(blurb: str, source: str, title: str = "") -> bool:
    """The blurb is one run of the source's words (a sentence copied, not written), beyond the title."""
    b = [w.lower() for w in words(blurb)]
    s = " " + " ".join(w.lower() for w in words(source)) + " "
    if len(b) < 6:
        return False
    return f" {' '.join(b)} " in s or (len(b) >= 10 and f" {' '.join(b[:-1])} " in s)


def problems(blurb: str, source: str, rules: Rules, title: str = "") -> list[str]:
    """Every failing check of an already normalised blurb, in SAFETY_ORDER."""
    found: list[str] = []
    n = len(words(blurb))
    if n == 0:
        return ["empty"]
    pattern = rules.blocklist_pattern()
    if pattern is not None and pattern.search(blurb):
        found.append("blocklist")
    if rules.profanity_threshold < 1 and profanity_scores([blurb])[0] >= rules.profanity_threshold:
        found.append("profanity")
    found += sorted(pii_found(blurb))
    found += faithfulness_issues(blurb, source, rules.brands, rules.attribute_vocab)
    if FIRST_PERSON.search(blurb):
        found.append("first_person")  # a customer's voice, not the shop's
    if title and repeats_title(blurb, title, rules.min_new_words):
        found.append("title_repeat")
    if is_vacuous(blurb, source):
        found.append("vacuous")
    if copies_source(blurb, source, title):
        found.append("copied_source")
    if is_repetitive(blurb):
        found.append("repetition")
    if n > rules.max_words:
        found.append("too_long")
    if n < rules.min_words:
        found.append("too_short")
    if is_cut_off(blurb):
        found.append("truncated")
    return sorted(set(found), key=lambda r: SAFETY_ORDER.index(r) if r in SAFETY_ORDER else len(SAFETY_ORDER))


# --- fallback ---

def _safe_sentence(sentence: str, rules: Rules) -> bool:
    pattern = rules.blocklist_pattern()
    if pattern is not None and pattern.search(sentence):
        return False
    if pii_found(sentence):
        return False
    return rules.profanity_threshold >= 1 or profanity_scores([sentence])[0] < rules.profanity_threshold


def extractive_summary(title: str, text: str, rules: Rules) -> str:
    """The source's leading safe sentences within max_words (opener dropped; first-person sentences
    skipped when others exist); the title if none is safe."""
    sentences = [s.strip() for s in SENTENCE_END.split(re.sub(r"\s+", " ", text or "").strip()) if s.strip()]
    safe = [s for s in sentences if _safe_sentence(s, rules)]
    impersonal = [s for s in safe if not FIRST_PERSON.search(s)]
    safe = impersonal or safe
    if safe:
        safe[0] = OPENER.sub("The ", safe[0])
    kept: list[str] = []
    for s in safe:
        if len(words(" ".join(kept + [s]))) > rules.max_words:
            break
        kept.append(s)
    if not kept and safe:  # first sentence alone is too long: cut it at a word boundary
        kept = [" ".join(safe[0].split()[: rules.max_words]).rstrip(",;:") + "."]
    if kept:
        return " ".join(kept)
    return title if _safe_sentence(title or "", rules) else ""


def clean(raw: str, source: str, rules: Rules, uncased: bool = False) -> str:
    blurb = normalise(raw)
    if uncased:
        blurb = restore_case(blurb, source)
    return fit_length(blurb, rules.max_words)


def review(raw: str | list[str] | None, title: str, text: str, rules: Rules, *, uncased: bool = False) -> Verdict:
    """Normalise generated candidate(s), check each, keep the first that passes every check; fall
    back to the extractive summary when none does (flagged with the first candidate's reasons)."""
    source = f"{title}. {text}"
    candidates = [raw] if isinstance(raw, str) else list(raw or [])
    if not candidates:
        return Verdict(extractive_summary(title, text, rules), "fallback", "not_generated", ("not_generated",))
    first: list[str] | None = None
    for cand in candidates:
        blurb = clean(cand, source, rules, uncased)
        found = problems(blurb, source, rules, title)
        if not found:
            return Verdict(blurb, "generated", None, ())
        first = first if first is not None else found
    assert first is not None
    return Verdict(extractive_summary(title, text, rules), "fallback", first[0], tuple(first))
