"""Faithful decoding: the generator cannot write, token by token, what the checks would reject.

A small generator invents names, years and claims ("directed by Christopher Nolan", "a 1995
American drama", "a cult classic"), repeats itself, or stops after the title; checking afterwards
throws those blurbs away. This logits processor masks, per item and per step, the tokens that
would start such a text, so the same model writes a blurb that can pass:
- a capitalised word inside a sentence (after a space or punctuation) unless it begins a word of
  the item's own source or is a function word ("The"); once a capitalised word begins a source
  word, its next pieces must keep it one ("Tide" may go on to "Tidewater", not "Tidewinkle");
- a digit that does not continue one of the source's numbers (invented years, prices, sizes), a
  number word ("two", "first") whose number the source lacks, digits mixed with letters;
- the checks' own vocabularies (safety.COLOURS, MATERIALS, SIZES, CLAIMS, the catalog's attribute
  words and brands) when the item's source lacks the word; first-person words (the shop's voice,
  not a customer's); the deployment's blocklist; '@', '://', 'www' (contact details); the prompt's
  labels ("Title:") when the source lacks them; non-ASCII characters when the source has none;
- a content word or trigram the row already wrote within the last three words (`repetition`);
  more than COPY_RUN source words in a row (`copied_source`: a headline or first sentence copied);
- the end of the text (end of sequence, line break) before a finished sentence of min_words, and
  the end of a sentence before the blurb has min_new_words content words its title lacks
  (`title_repeat`).
Past LONG_WORDS words, "." and "!" gain END_PUSH logits per word, and in the last FINISH_TOKENS
tokens of the budget FINISH_PUSH per token, so a sentence ends before the token budget does (a
title of years, parentheses and names costs several tokens a word; a row cut off by the budget
fails `truncated` and costs a retry). Only whole-word tokens can be masked for a word list; a word split into pieces
is left to the checks, which still run on every blurb (safety.review).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from models.blurbs.safety import (
    AFTER_NAME,
    CLAIMS,
    COLOURS,
    CUT_OFF_WORDS,
    FIRST_PERSON_FORMS,
    FUNCTION_WORDS,
    MATERIALS,
    NUMBER_WORDS,
    SENTENCE_ENDS,
    SIZES,
    STOP_WORDS,
    Rules,
    _numbers,
    _tokens,
)

FIRST_PERSON_WORDS = frozenset(w.lower() for w in FIRST_PERSON_FORMS)
PROMPT_LABELS = frozenset({"title", "facts", "blurb"})  # the prompt's own labels, echoed back by a small model
CONTACT = ("@", "://", "www")
LETTERS = re.compile(r"[A-Za-z]+")
WRITTEN_WORDS = re.compile(r"[a-z][a-z'-]*|\d+")
TRAILING_WORD = re.compile(r"[A-Za-z]+$")
NUMBER_RUN = re.compile(r"\d+(?:[.,]\d+)*")
NUMBER_TAIL = re.compile(r"\d+(?:[.,]\d+)*[.,]?$")
LONG_WORDS, END_PUSH = 18, 0.7
FINISH_TOKENS, FINISH_PUSH = 8, 1.0
COPY_RUN = 6  # a blurb may repeat this many source words in a row, not more (`copied_source`, headlines)


def _ids(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass(frozen=True)
class TokenTable:
    """What each vocabulary entry looks like once decoded, for masking by word."""

    texts: tuple[str, ...]  # every token, decoded
    spaced_capitals: tuple[np.ndarray, tuple[str, ...]]  # " Xyz" tokens and their words (lower case)
    bare_capitals: tuple[np.ndarray, tuple[str, ...]]  # "Xyz" without a space: a word after "(", "-", '"'
    pieces: np.ndarray  # letters without a leading space: they continue the word being written
    lower_pieces: dict[str, list[int]]  # "water" -> tokens; a name goes on in lower case ...
    upper_pieces: dict[str, list[int]]  # "NT" (keyed "nt") -> tokens; ... unless it is written in capitals
    word_ids: dict[str, list[int]]  # a whole word (lower case) -> its tokens, any case, with or without a space
    digits: dict[int, str]  # tokens that are digits only -> their text (" 19" keeps its space)
    mixed_digits: np.ndarray  # digits with letters ("1st", "x2")
    contact: np.ndarray
    ends: np.ndarray  # "." and "!"
    spaced_ends: np.ndarray  # " ." and " !": a mark after a space, never a sentence's end
    marks: dict[str, list[int]]  # "." and "," alone: inside a number ("16.61", "1,000")
    spaces: np.ndarray  # a lone space: this tokenizer writes " 1995" as " " then digits
    line_breaks: np.ndarray
    non_ascii: np.ndarray  # other scripts, emoji, and byte pieces of them ("\ufffd" alone)


def suits(tokenizer: Any) -> bool:
    """The masks read words off single tokens, so a token must decode with its leading space
    (byte-level BPE such as SmolLM2's); a word-piece vocabulary does not, and goes unmasked."""
    ids = tokenizer(" a b", add_special_tokens=False)["input_ids"]
    return bool(ids) and tokenizer.decode(ids[-1:]) == " b"


@lru_cache(maxsize=4)
def token_table(tokenizer: Any) -> TokenTable:
    texts = tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))]))
    spaced: tuple[list[int], list[str]] = ([], [])
    bare: tuple[list[int], list[str]] = ([], [])
    pieces, mixed, contact, ends, spaced_ends, spaces, breaks, non_ascii = [], [], [], [], [], [], [], []
    lower_pieces: dict[str, list[int]] = {}
    upper_pieces: dict[str, list[int]] = {}
    word_ids: dict[str, list[int]] = {}
    digits: dict[int, str] = {}
    marks: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        stripped = text.strip()
        if not text.isascii():
            non_ascii.append(i)
        if "\n" in text:
            breaks.append(i)
        if not stripped:
            if text and set(text) == {" "}:
                spaces.append(i)
            continue
        if any(c in text for c in CONTACT):
            contact.append(i)
        if stripped in (".", "!"):
            ends.append(i)
            if text[0].isspace():
                spaced_ends.append(i)
        if text in (".", ","):
            marks.setdefault(text, []).append(i)
        if any(c.isdigit() for c in stripped):
            if stripped.isdigit():
                digits[i] = text.rstrip()
            else:
                mixed.append(i)
            continue
        if not LETTERS.fullmatch(stripped):
            continue
        lower = stripped.lower()
        word_ids.setdefault(lower, []).append(i)
        if text[0].isspace():
            if stripped[0].isupper():
                spaced[0].append(i)
                spaced[1].append(lower)
            continue
        pieces.append(i)
        if stripped.islower():
            lower_pieces.setdefault(lower, []).append(i)
        elif stripped.isupper():
            upper_pieces.setdefault(lower, []).append(i)
        if stripped[0].isupper():
            bare[0].append(i)
            bare[1].append(lower)
    return TokenTable(texts, (_ids(spaced[0]), tuple(spaced[1])), (_ids(bare[0]), tuple(bare[1])), _ids(pieces),
                      lower_pieces, upper_pieces, word_ids, digits, _ids(mixed), _ids(contact), _ids(ends), _ids(spaced_ends), marks,
                      _ids(spaces), _ids(breaks), _ids(non_ascii))


def _prefixes(words: set[str]) -> set[str]:
    return {w[:k] for w in words for k in range(1, len(w) + 1)}


def _foreign_capitals(capitals: tuple[np.ndarray, tuple[str, ...]], prefixes: set[str], *, function_words: bool) -> np.ndarray:
    """Capitalised tokens that begin no source word: the function words among them ("The" of "The
    Who" after a name) or, with function_words=False, the rest (a name the source lacks)."""
    ids, words = capitals
    if not ids.size:
        return ids
    return ids[np.array([w not in prefixes and (w in FUNCTION_WORDS) == function_words for w in words], dtype=bool)]


def banned_ids(table: TokenTable, source: str, rules: Rules) -> np.ndarray:
    """Tokens this item's blurb may never use (the step rules of FaithfulDecoding come on top)."""
    src = _tokens(source)
    ids: list[int] = _foreign_capitals(table.spaced_capitals, _prefixes(src), function_words=False).tolist()
    listed = COLOURS | MATERIALS | {w for w in SIZES if len(w) > 1} | CLAIMS | rules.attribute_vocab | rules.brands
    for w in listed:
        if w not in src and w.rstrip("s") not in src:
            ids += table.word_ids.get(w, [])
    src_numbers = _numbers(source)
    for w, n in NUMBER_WORDS.items():
        if n not in src_numbers:
            ids += table.word_ids.get(w, [])
    for w in FIRST_PERSON_WORDS | (PROMPT_LABELS - src):
        ids += table.word_ids.get(w, [])
    for term in rules.blocklist:
        ids += table.word_ids.get(term.strip().lower(), [])
    ids += table.contact.tolist() + table.mixed_digits.tolist()
    if source.isascii():  # no character the source does not use: no invented script, emoji or digit form
        ids += table.non_ascii.tolist()
    return np.unique(_ids(ids))


def _copy_index(words: list[str]) -> dict[tuple[str, ...], set[str]]:
    """COPY_RUN source words in a row -> the words that follow them in the source."""
    out: dict[tuple[str, ...], set[str]] = {}
    for i in range(len(words) - COPY_RUN):
        out.setdefault(tuple(words[i:i + COPY_RUN]), set()).add(words[i + COPY_RUN])
    return out


class FaithfulDecoding:
    """A transformers logits processor for one batch; sources[i] is row i's item text (title + text).

    It keeps each row's generated text, for the rules that depend on what was written so far.
    """

    def __init__(self, tokenizer: Any, sources: list[str], rules: Rules, prompt_length: int,
                 titles: list[str] | None = None, max_new_tokens: int | None = None) -> None:
        import torch

        self.torch = torch
        self.table = token_table(tokenizer)
        self.prompt_length, self.max_new_tokens = prompt_length, max_new_tokens
        self.finish_push = 0.0  # this step's push towards a sentence end from the token budget
        self.min_words, self.min_new_words = rules.min_words, rules.min_new_words
        self.title_words = [_tokens(t) for t in titles] if titles else [set() for _ in sources]
        self.copy_next = [_copy_index(WRITTEN_WORDS.findall(s.lower())) for s in sources]
        eos = tokenizer.eos_token_id
        self.stops = np.unique(np.concatenate([self.table.line_breaks, _ids([] if eos is None else [eos])]))
        self.numbers = [frozenset(NUMBER_RUN.findall(s)) for s in sources]  # "$16.61" -> "16.61"
        self.words = [sorted(_tokens(s)) for s in sources]
        self.prefixes = [_prefixes(set(w)) for w in self.words]
        self.banned_rows = [banned_ids(self.table, s, rules) for s in sources]
        self.bare_capitals = [_foreign_capitals(self.table.bare_capitals, p, function_words=False) for p in self.prefixes]
        self.function_capitals = [np.concatenate([_foreign_capitals(self.table.spaced_capitals, p, function_words=True),
                                                  _foreign_capitals(self.table.bare_capitals, p, function_words=True)])
                                  for p in self.prefixes]
        self.written = [""] * len(sources)
        self.banned: Any = None
        self.tokenizer = tokenizer
        self.first_piece: dict[str, list[int]] = {}

    def select(self, rows: list[int]) -> None:
        """Keep only these rows' state (decoding.decode_pruned drops finished rows from the batch)."""
        for name in ("title_words", "copy_next", "numbers", "words", "prefixes", "banned_rows", "bare_capitals",
                     "function_capitals", "written"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])
        if self.banned is not None:
            self.banned = self.banned[rows]

    def _static_mask(self, scores: Any) -> Any:
        mask = self.torch.zeros(scores.shape, dtype=self.torch.bool)
        for r, ids in enumerate(self.banned_rows):
            mask[r, self.torch.from_numpy(ids[ids < scores.shape[1]])] = True
        return mask

    def _number_moves(self, r: int, recent: list[str]) -> tuple[list[int], list[int] | None]:
        """(tokens banned, tokens the row must pick from or None). A digit starts one of the source's
        numbers (not one written within the last three words) or continues the number being
        written, and a number that is not yet one of the source's must go on ("35" of "350")."""
        current = NUMBER_TAIL.search(self.written[r])
        so_far = current.group(0) if current else ""
        numbers = [w for w in recent if w[0].isdigit()]
        bans, continuing, can_start = [], [], False
        for token, digits in self.table.digits.items():
            starts = not so_far or digits[0].isspace()
            run = digits.strip() if starts else so_far + digits
            if not any(n.startswith(run) for n in self.numbers[r]) or (starts and any(w.startswith(run) for w in numbers)):
                bans.append(token)
            elif starts:
                can_start = True
            else:
                continuing.append(token)
        if not can_start and not so_far:
            bans += self.table.spaces.tolist()  # a space that could only be followed by a banned number
        if so_far and not so_far.endswith((".", ",")) and so_far not in self.numbers[r]:
            marks = [i for m, ids in self.table.marks.items() if any(n.startswith(so_far + m) for n in self.numbers[r])
                     for i in ids]
            return bans, continuing + marks
        return bans, None

    def _first_pieces(self, word: str) -> list[int]:
        """The first token of the word as a new word (" Sne" of " Sneaker"), in its usual casings."""
        if word not in self.first_piece:
            forms = (" " + word, " " + word.capitalize())
            self.first_piece[word] = [ids[0] for ids in self.tokenizer(list(forms), add_special_tokens=False)["input_ids"]
                                      if len(ids) > 1]
        return self.first_piece[word]

    def _repeat_bans(self, r: int, seen: list[str]) -> list[int]:
        """No content word again within three words, no trigram twice."""
        bans: list[int] = []
        for w in seen[-3:]:
            if len(w) > 2 and w not in STOP_WORDS and not w[0].isdigit():
                bans += self.table.word_ids.get(w, []) + self._first_pieces(w)
        if len(seen) >= 2:
            last = (seen[-2], seen[-1])
            for a, b, c in zip(seen, seen[1:], seen[2:]):
                if (a, b) == last:
                    bans += self.table.word_ids.get(c, [])
        return bans

    def _name_pieces(self, r: int) -> tuple[list[int], bool] | None:
        """Inside a capitalised word: the pieces that keep it the beginning of a source word (or,
        inside a sentence, of a function word such as "The"), and whether it may end here. None
        when the word is free (a sentence's first word that no source word begins)."""
        text = self.written[r]
        m = TRAILING_WORD.search(text)
        if not m or not m.group(0)[0].isupper():
            return None
        so_far = m.group(0).lower()
        if so_far in self.prefixes[r]:
            words: Iterable[str] = self.words[r]
        elif text[: m.start()].rstrip() == "" or text[: m.start()].rstrip().endswith(SENTENCE_ENDS):
            return None
        elif AFTER_NAME.search(text[: m.start()]):
            words = ()  # "Who" of "The Who": inside a name, a function word is a name part (safety.invented_entities)
        else:
            words = FUNCTION_WORDS
        pieces = self.table.upper_pieces if m.group(0).isupper() and len(so_far) > 1 else self.table.lower_pieces
        allowed: list[int] = []
        complete = False
        for w in words:
            if w == so_far:
                complete = True
            elif w.startswith(so_far):
                rest = w[len(so_far):]
                for k in range(1, len(rest) + 1):
                    allowed += pieces.get(rest[:k], [])
        return allowed, complete

    def _step(self, r: int, scores: Any) -> None:
        inf = float("-inf")
        text = self.written[r]
        seen = WRITTEN_WORDS.findall(text.lower())
        bans, only = self._number_moves(r, seen[-3:])
        bans += self._repeat_bans(r, seen)
        for w in self.copy_next[r].get(tuple(seen[-COPY_RUN:]), ()):
            bans += self.table.word_ids.get(w, [])
        if text and not text[-1].isalnum():
            bans += self.bare_capitals[r].tolist()  # a new word after "(", "-", a quote or a lone space
        if AFTER_NAME.search(text):
            bans += self.function_capitals[r].tolist()
        ended = text.rstrip().endswith((".", "!", "?"))
        if not ended or len(seen) < self.min_words:
            bans += self.stops.tolist()
        bans += self.table.spaced_ends.tolist()  # "of ." or ". . .": a cut-off, not an end (`truncated`)
        if text[-1:].isalpha() and seen and seen[-1] in CUT_OFF_WORDS:
            bans += self.table.ends.tolist()  # "a tale of faith and."
        if bans:
            scores[r, bans] = inf
        if only is not None:  # inside a number the source has not finished: only its next characters
            keep = scores[r, only].clone()
            scores[r, :] = inf
            scores[r, only] = keep
            return
        new = {w for w in seen if w not in STOP_WORDS and not w[0].isdigit() and w not in self.title_words[r]}
        if len(new) < self.min_new_words:  # no end before the blurb says something its title does not
            scores[r, self.table.ends] = inf
            scores[r, self.stops] = inf
        name = self._name_pieces(r)
        if name is not None:
            allowed, complete = name
            keep = scores[r, allowed].clone()
            if complete:
                scores[r, self.table.pieces] = inf
            else:
                scores[r, :] = inf
            scores[r, allowed] = keep
        if ended:  # in the budget's last tokens, a finished sentence ends the blurb rather than start another
            if self.finish_push:
                scores[r, self.stops] += self.finish_push
        elif text[-1:].isalnum():
            push = END_PUSH * max(len(seen) - LONG_WORDS, 0) + self.finish_push
            if push:
                scores[r, self.table.ends] += push

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.banned is None:
            self.banned = self._static_mask(scores)
        elif input_ids.shape[1] > self.prompt_length:
            for r, token in enumerate(input_ids[:, -1].tolist()):
                self.written[r] += self.table.texts[token] if token < len(self.table.texts) else ""
        scores = scores.masked_fill(self.banned.to(scores.device), float("-inf"))
        if self.max_new_tokens is not None:
            left = self.max_new_tokens - (input_ids.shape[1] - self.prompt_length)  # this token included
            self.finish_push = FINISH_PUSH * max(FINISH_TOKENS - left + 1, 0)
        for r in range(scores.shape[0]):
            self._step(r, scores)
        stuck = self.torch.isinf(scores).all(dim=1)
        if stuck.any():  # nothing left to write (or a finished row): let it end; the checks judge it
            for r in self.torch.nonzero(stuck).flatten().tolist():
                scores[r, self.stops] = 0.0
        return scores
