"""How much of a rationale names real things: brands, categories and item names of the catalogue.

A rationale is split into mentions (its comma-, "and"- or sentence-separated phrases); a
mention is *grounded* when it contains a catalogue term: a brand, a category (or genre),
a three-word phrase of an item title, or a whole title shorter than that.  Terms carried by more than half of the
catalogue ("Beauty" for a beauty shop) say nothing about a user and do not count.

* ``score``: the share of mentions that are grounded;
* ``vacuous``: no catalogue term at all ("The customer likes the brand, product type, and
  category.");
* ``from_history``: the share of the terms found that occur in the seed's own history.

Title phrases are kept as sorted 64-bit hashes, so a catalogue of millions of items costs
8 bytes a phrase.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, TypedDict

import numpy as np
import pandas as pd

from components.data.text import clean_text

PHRASE = 3  # words in an item-name phrase
GENERIC_SHARE = 0.5  # terms on more items than this share of the catalogue are not evidence
MAX_TERM_WORDS = 6
STOPWORDS = frozenset("a an and the of for with to in on by or & - is are be this that these those from at as it "
                      "its their they he she his her them you your i me my we our".split())
# Phrase breaks: punctuation, "and"/"or", and a full stop that ends a sentence ("e.l.f. blush" stays whole).
_SPLIT = re.compile(r"[,;!?:()\n]+|\.(?=\s+[A-Z]|\s*$)|\band\b|\bor\b")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)?")


def words(text: str) -> list[str]:
    return _WORD.findall(clean_text(text).lower())


def _hash(phrase: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(phrase).encode(), digest_size=8).digest(), "little", signed=True)


def _title_phrases(title: str) -> set[int]:
    tokens = words(title)
    return {_hash(tuple(tokens[i: i + PHRASE])) for i in range(len(tokens) - PHRASE + 1)
            if tokens[i] not in STOPWORDS and tokens[i + PHRASE - 1] not in STOPWORDS}


@dataclass(frozen=True)
class Grounding:
    score: float
    vacuous: bool
    terms: tuple[str, ...]
    from_history: float


class Catalogue:
    """The terms a rationale can be grounded in, built once from the prepared item table."""

    def __init__(self, items: pd.DataFrame):
        n = max(len(items), 1)
        names: dict[tuple[str, ...], int] = {}
        for title, brand, categories in zip(items["title"], items["brand"], items["categories"]):
            found = {tuple(words(b)) for b in [brand or ""] if words(b)}
            if 0 < len(words(title or "")) < PHRASE:  # a short title ("Jaws", "Top Gun") is a name of its own
                found.add(tuple(words(title)))
            found |= {tuple(words(c)) for c in (categories if categories is not None else []) if words(c)}
            for term in found:
                names[term] = names.get(term, 0) + 1
        self.names = {term for term, count in names.items()
                      if count <= GENERIC_SHARE * n and len(term) <= MAX_TERM_WORDS and set(term) - STOPWORDS}
        hashes = [h for title in items["title"] for h in _title_phrases(title or "")]
        values, counts = np.unique(np.asarray(hashes, np.int64), return_counts=True)
        self.phrases = values[counts <= GENERIC_SHARE * n]

    def _known_phrases(self, hashes: list[int]) -> np.ndarray:
        probe = np.asarray(hashes, np.int64)
        found = np.searchsorted(self.phrases, probe)
        return (found < len(self.phrases)) & (self.phrases[np.minimum(found, len(self.phrases) - 1)] == probe)

    def terms(self, text: str) -> set[str]:
        """Catalogue terms (brand and category names, title phrases) that occur in ``text``."""
        tokens = words(text)
        found = {" ".join(tokens[i: i + n]) for n in range(1, MAX_TERM_WORDS + 1)
                 for i in range(len(tokens) - n + 1) if tuple(tokens[i: i + n]) in self.names}
        spans = [tuple(tokens[i: i + PHRASE]) for i in range(len(tokens) - PHRASE + 1)]
        if spans and len(self.phrases):
            known = self._known_phrases([_hash(span) for span in spans])
            found |= {" ".join(span) for span, hit in zip(spans, known) if hit}
        return found

    def history_terms(self, texts: Iterable[str]) -> set[str]:
        return set().union(*(self.terms(t) for t in texts))

    def ground(self, step1: str, step2: str, history: set[str] = frozenset()) -> Grounding:
        """The grounding of one rationale; ``history`` holds the terms of the seed's own items."""
        mentions = [m for m in _SPLIT.split(f"{step1}. {step2}") if set(words(m)) - STOPWORDS]
        per_mention = [self.terms(m) for m in mentions]
        terms = set().union(*per_mention) if per_mention else set()
        grounded = sum(bool(t) for t in per_mention)
        return Grounding(round(grounded / len(mentions), 4) if mentions else 0.0, not terms, tuple(sorted(terms)),
                         round(len(terms & history) / len(terms), 4) if terms else 0.0)


class GroundingSummary(TypedDict):
    mean_grounding: float
    vacuous_share: float
    from_history_share: float


def grounding_summary(rationales: pd.DataFrame) -> GroundingSummary:
    """Mean grounding score, share of vacuous answers, and share of terms from the seeds' own histories."""
    if rationales.empty:
        return {"mean_grounding": 0.0, "vacuous_share": 0.0, "from_history_share": 0.0}
    return {"mean_grounding": round(float(rationales["grounding"].mean()), 4),
            "vacuous_share": round(float(rationales["vacuous"].mean()), 4),
            "from_history_share": round(float(rationales.loc[~rationales["vacuous"], "from_history"].mean()), 4)
            if (~rationales["vacuous"]).any() else 0.0}
