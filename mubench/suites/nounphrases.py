"""Noun phrases of a prompt, as T2I-CompBench's BLIP-VQA asks about them.

The reference runs spaCy ``en_core_web_sm`` and takes ``doc.noun_chunks``, dropping chunks whose text
is exactly ``top``, ``the side``, ``the left`` or ``the right``. :func:`noun_phrases` uses spaCy when a
model is installed (``backend="spacy"``); otherwise (or with ``backend="rules"``) it uses
:class:`RuleChunker`, a dependency-free re-statement of spaCy's noun-chunk definition for the
attribute-binding prompt sets.

spaCy's definition: a chunk is a noun (or pronoun) whose dependency is subject, object, object of a
preposition, attribute, apposition, root, or a conjunct of one of those, spanning from the noun's
leftmost dependent to the noun itself. In the val prompts that is: an optional determiner, possessive
or number, then adjectives, participles, coordinated adjectives ("black and white") and nouns used as
modifiers, ending at the head noun. The rules below find those spans with a small lexicon:

1. Tokenise like spaCy's English tokenizer for these prompts: words, numbers (``11:44``), clitics (``'s``,
   ``n't``, ``'re``...: "doesn't" is "does" "n't") and single punctuation marks; hyphenated compounds
   (``diamond-studded``) are three tokens.
2. Tag each token from closed word classes (determiners, possessives, numbers, pronouns, prepositions,
   conjunctions, auxiliaries, adverbs), an adjective list (colours, shapes, materials, sizes...), and
   a verb list; any other word is a noun.
3. In context: a participle (verb ending in -ed / -ing, or an adjective-like verb) between a
   modifier and a noun is an adjective ("tiled floor", "a snow covered street"); a word followed by a
   hyphen and another word forms one modifier; ``and`` / ``,`` between two adjectives that precede a
   noun coordinate the adjectives ("a tan, clean bathroom").
4. A chunk is a maximal run of [determiner | possessive | number] [modifier]* noun+, optionally
   joined by possessive ``'s``; it ends at its last noun. Relative pronouns and personal pronouns in
   argument positions (``which``, ``it``, ``he``...) are one-word chunks. Chunks in the drop list are
   removed.

The rules reproduce spaCy wherever spaCy parses the prompt as the grammar intends; where the small
spaCy model mis-tags a word (it tags "acorn" as a verb and so loses "a brown acorn"), the rules keep
the grammatical phrase. ``tests/test_nounphrases.py`` measures the agreement on the official val files
against spaCy's chunks (stored there as character offsets) and pins it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

DROPPED_CHUNKS = frozenset({"top", "the side", "the left", "the right"})
# the rule chunker's version as the protocol records it: a change of the rules that changes a chunk of some prompt
# changes it ("rules" was version 1, before clitics were split, "the defining features" kept whole and a
# noun-capable modifier alone at a phrase's start made its head)
RULES = "rules 2"

DETERMINERS = frozenset("a an the this that these those each every some any no another both all many several "
                        "few".split())
POSSESSIVES = frozenset("its their his her my your our".split())
NUMBERS = frozenset("one two three four five six seven eight nine ten eleven twelve".split())
PRONOUNS = frozenset("it they he she him them we i you which who whom".split())
PREPOSITIONS = frozenset("on of in with for by to near through between above below from against up into down "
                         "at under over behind beside across around along inside outside onto atop beneath "
                         "without within like as".split())
CONJUNCTIONS = frozenset("and or but nor".split())
SUBORDINATORS = frozenset("while when where because if although though whereas than until".split())
AUXILIARIES = frozenset("is are was were be been being am can could will would shall should may might must "
                        "do does did has have had 'm 're 've 'll 'd".split())
ADVERBS = frozenset("next nearby back neatly otherwise very really too also just still together there here "
                    "whitish".split())
# adverbs that stay inside a noun phrase when an adjective follows ("the otherwise blank wall")
NP_ADVERBS = frozenset("otherwise very really".split())
PARTICLES = frozenset({"'s", "not", "n't"})

# adjectives of the attribute-binding prompt sets and the words that modify their nouns
ADJECTIVES = frozenset("""
red orange yellow green blue purple pink brown black white gray grey silver gold golden beige tan violet
cyan magenta maroon navy turquoise teal ivory cream khaki olive lavender bronze copper dark light bright pale
round square rectangular circular oval oblong spherical cubic cylindrical conical pyramidal pentagonal
hexagonal octagonal triangular diamond-shaped crescent-shaped heart-shaped star-shaped teardrop-shaped
metallic wooden plastic fluffy glass leather rubber fabric velvet woolen wool furry smooth rough soft hard
shiny matte silky fuzzy stony ceramic golden steel stainless
small big large little tiny huge giant short long tall narrow wide thick thin deep flat high low
hot cold warm cool cozy clean dirty empty full old new young modern ancient vintage antique latest
sweet tasty delicious fresh ripe juicy dry wet electronic magic precious beloved unique same different
other useful fashionable unlikely picturesque necessary celestial floral blank visible favorite most
sloped hydrated remote rolling only
""".split())

# modifiers that are also nouns: when one ends a noun phrase it is the head ("a diamond wine glass",
# "a spherical traffic light", "hand cream")
NOUN_CAPABLE = frozenset("""
glass diamond square crescent rubber leather plastic fabric wool velvet steel gold silver bronze copper light
cream orange remote tan ivory olive khaki navy
""".split())

# verbs seen in the prompt sets (an unlisted word ending in -ed is also taken as a verb form; -ing: rule 3c)
VERBS = frozenset("""
sit sits sat sitting stand stands stood standing hold holds held holding hang hangs hung hanging
display displays displayed provide provides provided feature features featured has have had mix mixes
shine shines flash flashes reads read make makes made set sets keep keeps kept boil write writes squash
sparkle sparkled propel propelled attract attracts attracted control controlled place placed stack
stacked mount mounted fascinate fascinated struggle struggled contrast contrasting wave waving use used
serve serving serves float floated lead led create created dominate dominated flow flowed reach reaching
release rest rests illuminate illuminates measure stir bake baking cook pound beat cut decorate lie lies
lay rise rises rose cover covers covered match matching left arrange arranged attach attached
""".split())

# clitics are tokens of their own, as spaCy splits them: "doesn't" → "does" "n't", "it's" → "it" "'s", "dog's" →
# "dog" "'s"; other apostrophes stay inside the word ("o'clock")
_CONTRACTED = "s|m|re|ve|ll|d"  # what follows the apostrophe of a clitic: 's 'm 're 've 'll 'd
_TOKEN = re.compile(rf"\d+(?::\d+)+|\d+(?:\.\d+)?|[A-Za-z]+(?=n't\b)|n't\b|'(?:{_CONTRACTED})\b"
                    rf"|[A-Za-z]+(?:'(?!(?:{_CONTRACTED})\b)[A-Za-z]+)?|[^\sA-Za-z\d]")


@dataclass
class Token:
    text: str
    start: int
    end: int
    tag: str = ""  # DET POSS NUM PRON ADP CCONJ SCONJ AUX ADV PART ADJ VERB NOUN PUNCT HYPH

    @property
    def low(self) -> str:
        return self.text.lower()


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _base_tag(word: str) -> str:
    w = word.lower()
    if w == "-":
        return "HYPH"
    if w in PARTICLES:
        return "PART"
    if not w[0].isalnum() and w not in AUXILIARIES:
        return "PUNCT"
    if w[0].isdigit():
        return "NUM"
    for tag, words in (("DET", DETERMINERS), ("POSS", POSSESSIVES), ("NUM", NUMBERS), ("PRON", PRONOUNS),
                       ("ADP", PREPOSITIONS), ("CCONJ", CONJUNCTIONS), ("SCONJ", SUBORDINATORS),
                       ("AUX", AUXILIARIES), ("ADV", ADVERBS), ("ADJ", ADJECTIVES), ("VERB", VERBS)):
        if w in words:
            return tag
    if len(w) > 4 and w.endswith("ed"):
        return "VERB"  # an unlisted past participle ("parked", "tiled"); rule 3b may make it an adjective
    return "NOUN"


_MODIFIER = {"ADJ", "NOUN", "NUM"}


class RuleChunker:
    """spaCy-style noun chunks from word classes (see the module docstring for the rules)."""

    def tag(self, text: str) -> list[Token]:
        toks = tokenize(text)
        for t in toks:
            t.tag = _base_tag(t.text)
        for rule in (_hyphenated_modifiers, _nouns_after_determiners, _compound_noun_heads, _relative_that,
                     _participles_in_phrases):
            rule(toks)
        return toks

    def chunks(self, text: str) -> list[tuple[int, int]]:
        """Character spans (start, end) of the noun chunks of ``text``."""
        toks = self.tag(text)
        spans: list[tuple[int, int]] = []
        i, n = 0, len(toks)
        while i < n:
            t = toks[i]
            if t.tag == "PRON" and t.low in ("which", "that", "it", "they", "he", "she", "him", "them", "who"):
                spans.append((t.start, t.end))
                i += 1
                continue
            if t.tag not in ("DET", "POSS", "NUM", "ADJ", "NOUN"):
                i += 1
                continue
            j, last_noun = i, -1
            if toks[j].tag in ("DET", "POSS", "NUM"):
                j += 1
                while j < n and toks[j].tag == "NUM":
                    j += 1
            while j < n:
                tg = toks[j].tag
                if tg in _MODIFIER or tg == "HYPH":
                    if tg == "NOUN" or (tg == "ADJ" and toks[j].low in NOUN_CAPABLE
                                        and not self._modifies_next(toks, j)):
                        last_noun = j
                    j += 1
                    continue
                if tg == "ADV" and toks[j].low in NP_ADVERBS and j + 1 < n and toks[j + 1].tag == "ADJ":
                    j += 1
                    continue
                if tg == "PART" and toks[j].low == "'s" and last_noun == j - 1:
                    j += 1
                    continue
                if (tg in ("CCONJ", "PUNCT") and toks[j].low in ("and", "or", ",") and j > i
                        and toks[j - 1].tag == "ADJ" and self._adjectives_then_noun(toks, j + 1)):
                    j += 1
                    continue
                break
            if last_noun >= 0:
                spans.append((toks[i].start, toks[last_noun].end))
                i = last_noun + 1
            else:
                i = max(j, i + 1)
        return spans

    @staticmethod
    def _modifies_next(toks: list[Token], k: int) -> bool:
        """Whether token k is followed by more of the noun phrase (so it is a modifier, not the head)."""
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        if nxt is None:
            return False
        if nxt.tag in ("NOUN", "ADJ", "HYPH"):
            return True
        return nxt.tag in ("CCONJ", "PUNCT") and nxt.low in ("and", "or", ",") and \
            RuleChunker._adjectives_then_noun(toks, k + 2)

    @staticmethod
    def _adjectives_then_noun(toks: list[Token], k: int) -> bool:
        """From k: one or more adjectives (optionally coordinated) followed by a noun."""
        seen_adj = False
        while k < len(toks):
            tg = toks[k].tag
            if tg == "ADJ":
                seen_adj = True
            elif tg == "NOUN":
                return seen_adj
            elif not (tg in ("CCONJ", "PUNCT") and toks[k].low in ("and", "or", ",")):
                return False
            k += 1
        return False


@lru_cache(maxsize=1)
def _spacy_model(name: str):
    try:
        import spacy
    except ImportError:
        return None
    try:
        return spacy.load(name)
    except OSError:
        return None


def spacy_available(model: str = "en_core_web_sm") -> bool:
    return _spacy_model(model) is not None


def noun_phrases(prompt: str, backend: str = "auto", spacy_model: str = "en_core_web_sm") -> list[str]:
    """Noun phrases of ``prompt`` in order, with T2I-CompBench's drop list applied.

    ``backend``: ``auto`` (spaCy when ``spacy_model`` loads, else rules), ``spacy`` (error when it does
    not load) or ``rules``.
    """
    return [text for text in _chunks(prompt, backend, spacy_model) if text not in DROPPED_CHUNKS]


def resolve_backend(backend: str = "auto", spacy_model: str = "en_core_web_sm") -> str:
    """The backend ``auto`` resolves to on this machine (recorded in the protocol)."""
    if backend not in ("auto", "spacy", "rules"):
        from ..errors import UsageError

        raise UsageError(f"unknown noun-phrase backend {backend!r} (auto | spacy | rules)")
    if backend == "rules":
        return RULES
    if _spacy_model(spacy_model) is not None:
        import spacy

        nlp = _spacy_model(spacy_model)
        return f"spacy {spacy.__version__} / {spacy_model} {nlp.meta.get('version', '?')}"
    if backend == "spacy":
        from ..errors import UsageError

        raise UsageError(f"noun_phrases=spacy but spaCy or its model {spacy_model!r} is not installed")
    return RULES


def _chunks(prompt: str, backend: str, spacy_model: str) -> list[str]:
    resolved = resolve_backend(backend, spacy_model)
    if resolved != RULES:
        return [c.text for c in _spacy_model(spacy_model)(prompt).noun_chunks]
    return [prompt[a:b] for a, b in RuleChunker().chunks(prompt)]


def _rule_spans(prompt: str) -> list[tuple[int, int]]:  # for tests
    return RuleChunker().chunks(prompt)


def _hyphenated_modifiers(toks: list[Token]) -> None:
    """Rule 3a: hyphenated compounds are one modifier ("diamond-studded", "heart-shaped")."""
    n = len(toks)
    for i in range(1, n - 1):
        if toks[i].tag == "HYPH" and toks[i - 1].tag not in ("PUNCT",) and toks[i + 1].tag not in ("PUNCT",):
            toks[i - 1].tag = toks[i].tag = "ADJ"
            if toks[i + 1].tag in ("VERB", "ADJ"):
                toks[i + 1].tag = "ADJ"


def _nouns_after_determiners(toks: list[Token]) -> None:
    """Rule 3c: a verb-list word right after a determiner, possessive, number or adjective is a noun or, for a
    participle followed by a noun, an adjective ("a big set", "the defining features"); "can" after a determiner or
    adjective is the noun ("a cylindrical can")."""
    n = len(toks)
    for i in range(1, n):
        t, prev = toks[i], toks[i - 1].tag
        if prev not in ("DET", "POSS", "NUM", "ADJ"):
            continue
        nxt = toks[i + 1] if i + 1 < n else None
        base_verb_next = nxt is not None and nxt.tag == "VERB" and not nxt.low.endswith(("ed", "ing"))
        if t.tag == "AUX" and t.low == "can":
            t.tag = "NOUN"
        elif t.tag == "NOUN" and t.low.endswith("ing") and base_verb_next:
            t.tag = "ADJ"  # an unlisted participle before a verb-list noun ("the defining features")
        elif t.tag == "VERB":
            if t.low.endswith(("ed", "ing")) and (base_verb_next or nxt is not None and nxt.tag in ("NOUN", "ADJ")):
                t.tag = "ADJ"
            elif not t.low.endswith(("ed", "ing")):
                t.tag = "NOUN"


def _compound_noun_heads(toks: list[Token]) -> None:
    """Rule 3d: a base-form verb after a singular noun, ending the clause, is a compound noun's head ("a spherical
    trophy stand", "a teardrop remote control")."""
    n = len(toks)
    for i in range(1, n):
        t, prev = toks[i], toks[i - 1]
        nxt = toks[i + 1] if i + 1 < n else None
        if (t.tag == "VERB" and prev.tag == "NOUN" and not prev.low.endswith("s")
                and not t.low.endswith(("s", "ed", "ing"))
                and (nxt is None or nxt.tag == "PUNCT" or nxt.low in ("and", "of"))):
            t.tag = "NOUN"


def _relative_that(toks: list[Token]) -> None:
    """Rule 3e: "that" right after a noun is a relative pronoun."""
    for i in range(1, len(toks)):
        if toks[i].low == "that" and toks[i - 1].tag == "NOUN":
            toks[i].tag = "PRON"


def _participles_in_phrases(toks: list[Token]) -> None:
    """Rule 3b: participles and adjective-like verbs inside a noun phrase ("a snow covered street")."""
    for i in range(len(toks) - 1):
        t = toks[i]
        if t.tag != "VERB" or toks[i + 1].tag not in ("NOUN", "ADJ"):
            continue
        prev = toks[i - 1].tag if i else "START"
        if prev in ("DET", "POSS", "ADJ", "NUM", "CCONJ", "NOUN") and (
                t.low.endswith(("ed", "ing")) or t.low in ("left", "set", "cut", "made")):
            if prev == "NOUN" and i >= 2 and toks[i - 2].tag in ("VERB", "AUX"):
                continue
            if prev == "NOUN" and not (i >= 2 and toks[i - 2].tag in ("DET", "POSS", "ADP")):
                continue
            t.tag = "ADJ"


__all__ = ["noun_phrases", "RuleChunker", "DROPPED_CHUNKS", "RULES", "resolve_backend", "spacy_available"]
