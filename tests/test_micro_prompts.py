"""Suite ``micro``'s prompt sets: fixed and interleaved, pinned by fingerprint, each task from its own stream, the
GenEval-analogue and binding prompts, and COCO-analogue prompts with one reference per image."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from mubench.micro import data as D
from mubench.micro import scene as S
from mubench.micro.clip import uint8_to_float
from mubench.micro.scorers import MicroClipScorer, MicroClipScorerParams
from mubench.scorers.base import ScorerContext
from mubench.suites.micro import BINDING_TASKS, TASKS, MicroSuite, MicroSuiteParams


def test_items_are_fixed_interleaved_and_parse():
    suite = MicroSuite(MicroSuiteParams(), "micro")
    items = suite.items()
    assert len(items) == 700 and len({i.id for i in items}) == 700
    assert [i.id for i in items] == [i.id for i in MicroSuite(MicroSuiteParams(), "micro").items()]
    assert {i.meta["task"] for i in items[:20]} == set(TASKS)  # limit=20 still covers every task
    for item in items:
        phrases, relation = S.parse_caption(item.prompt)
        task = item.meta["task"]
        if task == "single_object":
            assert len(phrases) == 1 and phrases[0].color is None and phrases[0].count == 1
        if task == "counting":
            assert 2 <= phrases[0].count <= 4
        if task == "position":
            assert relation in S.RELATIONS and phrases[0].shape != phrases[1].shape
        if task in ("color", "shape", "color_attr"):
            assert phrases[0].color != phrases[1].color and phrases[0].shape != phrases[1].shape
            assert not {(p.color, p.shape) for p in phrases} & D.HELD_OUT
        if task == "texture":
            assert {p.fill for p in phrases} == set(S.FILLS)
    comp = MicroSuite(MicroSuiteParams(binding_split="compositional"), "micro").items()
    for item in comp:
        if item.meta["task"] in ("color", "shape"):
            assert {(p.color, p.shape) for p in S.parse_caption(item.prompt)[0]} & D.HELD_OUT


def test_prompt_set_fingerprint_is_pinned():
    """the 700 default prompts (and the compositional variant) are part of the protocol and
    of the committed baseline; any change to a prompt stream, seed or caption wording must be deliberate (update the
    pinned digests together with reports/baselines)."""

    def digest(split: str) -> str:
        items = MicroSuite(MicroSuiteParams(binding_split=split), "micro").items()
        return hashlib.sha256("\n".join(f"{i.id}\t{i.prompt}" for i in items).encode()).hexdigest()[:16]

    assert digest("test") == "162a18f7a26d4189"
    assert digest("compositional") == "907bdcc30f681d22"


def test_each_task_draws_from_its_own_prompt_stream():
    """with one stream seed for every task, two_object/k and position/k name the same two shapes for every k."""
    items = MicroSuite(MicroSuiteParams(), "micro").items()
    shapes = {}
    for it in items:
        if it.meta["task"] in ("two_object", "position"):
            phrases, _ = S.parse_caption(it.prompt)
            shapes[it.id] = tuple(p.shape for p in phrases)
    same = [shapes[f"two_object/{k:04d}"] == shapes[f"position/{k:04d}"] for k in range(50)]
    assert not all(same)
    assert 0.1 < sum(same) / 50 < 0.5  # independent streams: ~1/6 of the pairs agree by chance


def test_geneval_analogue_prompts_cover_every_count_relation_and_distinct_shapes():
    """Counting asks for 2, 3 and 4 of every shape, position uses all four relations, two_object names two shapes."""
    items = MicroSuite(MicroSuiteParams(), "micro").items()
    parsed = {it.id: (it.meta["task"], *S.parse_caption(it.prompt)) for it in items}
    counts = {(ph[0].shape, ph[0].count) for task, ph, _ in parsed.values() if task == "counting"}
    assert counts == {(s, n) for s in S.SHAPES for n in (2, 3, 4)}
    relations = {rel for task, _, rel in parsed.values() if task == "position"}
    assert relations == set(S.RELATIONS)
    two = [ph for task, ph, _ in parsed.values() if task == "two_object"]
    assert two and all(len(ph) == 2 and ph[0].shape != ph[1].shape for ph in two)


def test_binding_split_changes_only_the_binding_prompts():
    """suite.binding_split=compositional must leave the coco and GenEval-analogue prompts as they are (else the
    two settings' coco/GenEval numbers are not comparable)."""
    def prompts(split):
        return {it.id: it.prompt for it in MicroSuite(MicroSuiteParams(binding_split=split), "micro").items()
                if it.meta["task"] not in BINDING_TASKS}

    assert prompts("test") == prompts("compositional")


def test_compositional_binding_prompts_name_the_held_out_pair_in_either_place():
    """the held-out (colour, shape) pair is drawn first but named first only about half the time (the order
    is shuffled); always first would let 'the first phrase is the novel one' leak into the binding scores."""
    first = [(p[0].color, p[0].shape) in D.HELD_OUT
             for it in MicroSuite(MicroSuiteParams(binding_split="compositional"), "micro").items()
             if it.meta["task"] in ("color", "shape") for p in [S.parse_caption(it.prompt)[0]]]
    assert len(first) == 120 and 0.4 < sum(first) / len(first) < 0.85  # shuffled: 0.625 here; unshuffled: 1.0


def test_coco_prompts_ask_for_one_reference_per_image():
    """with images_per_prompt=2 every coco prompt needs two held-out reference renders (FID picks row
    image_index); one reference would make image 1's FID row fail or reuse image 0's."""

    suite = MicroSuite(MicroSuiteParams(images_per_prompt=2), "micro")
    coco = [it for it in suite.items() if it.meta["task"] == "coco"][:2]
    assert all(it.meta["references"] == 2 for it in coco)
    scorer = MicroClipScorer(MicroClipScorerParams(), ScorerContext(torch.device("cpu"), weights="random"), "clip")
    res = scorer.score(uint8_to_float(np.zeros((2, 32, 32, 3), np.uint8)), coco)
    assert all(np.shape(r["ref_features"])[0] == 2 for r in res)
