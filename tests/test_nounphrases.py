"""Noun phrases for BLIP-VQA: the rule fallback against spaCy's chunks on the official val files, and unit rules."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mubench.suites import nounphrases as NP
from mubench.suites.compbench import read_prompt_file

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "t2i-compbench"
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "compbench_spacy_chunks.json").read_text())

# prompts (of 300) whose rule chunks equal spaCy's exactly, measured when the rules were written;
# spaCy 3.6 and 3.8 themselves agree on 287 / 284 / 277 of them.
PINNED = {"color": {"spacy-3.6.1/en_core_web_sm-3.6.0": 282, "spacy-3.8.18/en_core_web_sm-3.8.0": 279},
          "shape": {"spacy-3.6.1/en_core_web_sm-3.6.0": 278, "spacy-3.8.18/en_core_web_sm-3.8.0": 283},
          "texture": {"spacy-3.6.1/en_core_web_sm-3.6.0": 270, "spacy-3.8.18/en_core_web_sm-3.8.0": 270}}


def rules(text):
    return NP.noun_phrases(text, backend="rules")


@pytest.mark.parametrize("category", ["color", "shape", "texture"])
def test_rules_reproduce_spacy_on_official_val_files(category):
    path = SHARED / f"{category}_val.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    entry = FIXTURE["files"][f"{category}_val.txt"]
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    prompts = read_prompt_file(path)
    assert len(prompts) == 300
    chunker = NP.RuleChunker()
    mine = [[list(s) for s in chunker.chunks(p)] for p in prompts]
    for version, pinned in PINNED[category].items():
        theirs = entry[version]
        assert len(theirs) == 300
        same = sum(a == b for a, b in zip(mine, theirs))
        assert same >= pinned, f"{category}: rules match {version} on {same}/300, pinned {pinned}"
    # the two-object prompts "<det> <attr> <noun> and <det> <attr> <noun>" are where the questions come from:
    # there the rules give exactly two phrases that cover the prompt around the "and"
    simple = [p for p in prompts if p.count(" and ") == 1 and p.split(" and ")[1].split()[0].lower() in ("a", "an")
              and p.split()[0].lower() in ("a", "an") and "," not in p and len(p.split()) <= 9
              and not {w.lower().strip(".") for w in p.split()} & (NP.PREPOSITIONS | NP.VERBS | NP.AUXILIARIES)]
    assert len(simple) > 150
    for p in simple:
        left, right = p.rstrip(".").split(" and ")
        assert rules(p) == [left, right], p


def test_unit_rules():
    assert rules("a green bench and a blue bowl") == ["a green bench", "a blue bowl"]
    assert rules("A black and white cat sits in a white sink.") == ["A black and white cat", "a white sink"]
    assert rules("A white bath tub sits empty in a tan, clean bathroom.") == ["A white bath tub",
                                                                              "a tan, clean bathroom"]
    assert rules("a spherical traffic light and a cubic ice cube") == ["a spherical traffic light", "a cubic ice cube"]
    assert rules("the diamond-studded bracelet") == ["the diamond-studded bracelet"]
    assert rules("the only openings in the otherwise blank wall") == ["the only openings", "the otherwise blank wall"]
    assert rules("A blue scooter is parked near a curb") == ["A blue scooter", "a curb"]
    assert rules("a soda cup which are sitting on a snow covered street") == ["a soda cup", "which",
                                                                             "a snow covered street"]
    # T2I-CompBench's drop list: chunks exactly "top", "the side", "the left", "the right"
    assert rules("a cat on the left of a dog") == ["a cat", "a dog"]
    assert NP.RuleChunker().chunks("a cat on the left")[-1] == (9, 17)  # the chunk exists, then is dropped


def test_spacy_backend_is_used_when_installed(monkeypatch):
    class Chunk:
        def __init__(self, text):
            self.text = text

    class Doc:
        noun_chunks = [Chunk("a red cube"), Chunk("the side"), Chunk("a blue cone")]

    class FakeNlp:
        meta = {"version": "3.5.0"}

        def __call__(self, text):
            return Doc()

    import sys
    import types

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(__version__="3.5.3"))
    monkeypatch.setattr(NP, "_spacy_model", lambda name: FakeNlp())
    assert NP.noun_phrases("whatever", backend="auto") == ["a red cube", "a blue cone"]
    assert NP.resolve_backend("auto") == "spacy 3.5.3 / en_core_web_sm 3.5.0"
    assert NP.noun_phrases("a red cube and a blue cone", backend="rules") == ["a red cube", "a blue cone"]


def test_spacy_backend_missing_is_a_usage_error(monkeypatch):
    from mubench.errors import UsageError

    monkeypatch.setattr(NP, "_spacy_model", lambda name: None)
    assert NP.resolve_backend("auto") == "rules"
    with pytest.raises(UsageError, match="not installed"):
        NP.noun_phrases("a cat", backend="spacy")
    with pytest.raises(UsageError):
        NP.noun_phrases("a cat", backend="nltk")
