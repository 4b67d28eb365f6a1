"""Post-processing and checks: nothing generated reaches a user unchecked.

`review(raw, title, text, rules)` normalises a generated blurb and runs every check; a blurb that
fails is replaced by an extractive summary of the source and flagged with the first reason found
(safety reasons before faithfulness before form).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

COLOURS = frozenset("""red blue green black white yellow pink grey gray orange purple brown beige navy
gold silver teal maroon ivory cream turquoise violet magenta cyan olive tan charcoal burgundy lavender
indigo coral mint khaki lilac crimson scarlet""".split())
MATERIALS = frozenset("""ceramic stoneware enamel glass canvas leather suede mesh nylon polyester brass oak
steel aluminium aluminum plastic cotton linen bamboo merino paper kraft tritan wool silk denim wood
wooden bamboo porcelain titanium rubber velvet""".split())
SIZE_WORDS = frozenset("""xxs xs xl xxl xxxl small medium large mini oversized petite king queen twin compact
ml litre liter litres liters oz ounce ounces cm mm inch inches kg lb lbs gallon""".split())
NUMBER_WORDS = {"one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
                "eight": "8", "nine": "9", "ten": "10", "twelve": "12", "twenty": "20", "hundred": "100"}

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"\b(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|net|org|io|co|shop|store|info|biz)\b", re.I)
PHONE = re.compile(r"(?<![\w.$])\+?\(?\d[\d\s().-]{6,}\d(?![\w.])")
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:[.,]\d+)?")
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
LEAD_IN = re.compile(r"^\s*(?:blurb|answer|description)\s*:\s*", re.I)
# Generic marketing openers dropped from extractive text ("Meet the X" -> "The X").
OPENER = re.compile(r"^(?:meet|introducing|say hello to|this is|discover)\s+the\s+", re.I)

SAFETY_ORDER = ("empty", "blocklist", "pii_email", "pii_phone", "pii_url", "invented_number", "invented_colour",
                "invented_material", "invented_brand", "invented_size", "repetition", "too_long", "too_short",
                "truncated")
FAITHFULNESS_REASONS = frozenset(r for r in SAFETY_ORDER if r.startswith("invented_"))


@dataclass(frozen=True)
class Rules:
    blocklist: tuple[str, ...] = ()
    min_words: int = 4
    max_words: int = 30
    brands: frozenset[str] = field(default_factory=frozenset)  # known brand names, lower case

    def blocklist_pattern(self) -> re.Pattern[str] | None:
        if not self.blocklist:
            return None
        terms = sorted((re.escape(t.strip()) for t in self.blocklist if t.strip()), key=len, reverse=True)
        return re.compile(r"\b(?:" + "|".join(terms) + r")\b", re.I)


@dataclass(frozen=True)
class Verdict:
    blurb: str  # what may be shown: the generated text if it passed, else the fallback
    source: str  # "generated" | "fallback"
    reason: str | None  # first failing check, None when the generated blurb passed
    reasons: tuple[str, ...] = ()  # every failing check


def words(text: str) -> list[str]:
    return WORD.findall(text)


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


def _numbers(text: str) -> set[str]:
    found = {n.replace(",", "") for n in NUMBER.findall(text)}
    found |= {n.rstrip("0").rstrip(".") if "." in n else n for n in found}
    found |= {NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in NUMBER_WORDS}
    return found


def _vocab_hits(text: str, vocab: frozenset[str]) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w in vocab}


def _invented_proper_nouns(blurb: str, source: str) -> set[str]:
    """Capitalised words not at a sentence start and absent from the source (a made-up brand)."""
    src = {w.lower() for w in words(source)}
    src |= {part for w in src for part in re.split(r"['-]", w) if part}  # "T-Shirt" matches as "Shirt"
    found = set()
    for m in re.finditer(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z]+\b", blurb):
        if m.start() > 0 and m.group(0).lower() not in src and m.group(0) != "I":
            found.add(m.group(0))
    return found


def faithfulness_issues(blurb: str, source: str, brands: frozenset[str] = frozenset()) -> list[str]:
    """Attributes the blurb states that the source does not: numbers, colours, materials, brands, sizes."""
    issues = []
    src_low = source.lower()
    if _numbers(blurb) - _numbers(source):
        issues.append("invented_number")
    if _vocab_hits(blurb, COLOURS) - _vocab_hits(source, COLOURS):
        issues.append("invented_colour")
    if _vocab_hits(blurb, MATERIALS) - _vocab_hits(source, MATERIALS):
        issues.append("invented_material")
    blurb_low = blurb.lower()
    other_brand = any(re.search(rf"\b{re.escape(b)}\b", blurb_low) and b not in src_low for b in brands)
    if other_brand or _invented_proper_nouns(blurb, source):
        issues.append("invented_brand")
    if _vocab_hits(blurb, SIZE_WORDS) - _vocab_hits(source, SIZE_WORDS):
        issues.append("invented_size")
    return issues


def is_repetitive(text: str) -> bool:
    toks = [w.lower() for w in words(text)]
    trigrams = list(zip(toks, toks[1:], toks[2:]))
    if len(trigrams) != len(set(trigrams)):
        return True
    return any(a == b for a, b in zip(toks, toks[1:]) if len(a) > 2)


def problems(blurb: str, source: str, rules: Rules) -> list[str]:
    """Every failing check of an already normalised blurb, in SAFETY_ORDER."""
    found: list[str] = []
    n = len(words(blurb))
    if n == 0:
        return ["empty"]
    pattern = rules.blocklist_pattern()
    if pattern is not None and pattern.search(blurb):
        found.append("blocklist")
    if EMAIL.search(blurb):
        found.append("pii_email")
    if PHONE.search(blurb) and sum(c.isdigit() for c in PHONE.search(blurb).group(0)) >= 7:  # type: ignore[union-attr]
        found.append("pii_phone")
    if URL.search(blurb):
        found.append("pii_url")
    found += faithfulness_issues(blurb, source, rules.brands)
    if is_repetitive(blurb):
        found.append("repetition")
    if n > rules.max_words:
        found.append("too_long")
    if n < rules.min_words:
        found.append("too_short")
    if not blurb.rstrip().endswith((".", "!", "?")):
        found.append("truncated")
    return sorted(found, key=SAFETY_ORDER.index)


def _safe_sentence(sentence: str, rules: Rules) -> bool:
    pattern = rules.blocklist_pattern()
    unsafe = pattern is not None and pattern.search(sentence)
    return not (unsafe or EMAIL.search(sentence) or URL.search(sentence) or PHONE.search(sentence))


def extractive_summary(title: str, text: str, rules: Rules) -> str:
    """The source's leading safe sentences within max_words (opener dropped); the title if none is safe."""
    sentences = [s.strip() for s in SENTENCE_END.split(re.sub(r"\s+", " ", text or "").strip()) if s.strip()]
    safe = [s for s in sentences if _safe_sentence(s, rules)]
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


def review(raw: str | None, title: str, text: str, rules: Rules, *, uncased: bool = False) -> Verdict:
    """Normalise a generated blurb, check it, fall back to the extractive summary when it fails."""
    source = f"{title}. {text}"
    if raw is None:
        return Verdict(extractive_summary(title, text, rules), "fallback", "not_generated", ("not_generated",))
    blurb = normalise(raw)
    if uncased:
        blurb = restore_case(blurb, source)
    blurb = fit_length(blurb, rules.max_words)
    found = problems(blurb, source, rules)
    if not found:
        return Verdict(blurb, "generated", None, ())
    return Verdict(extractive_summary(title, text, rules), "fallback", found[0], tuple(found))
