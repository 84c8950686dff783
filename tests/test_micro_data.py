"""The micro world's data: determinism, split disjointness, grammar round trip, tokenizer round trip."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mubench.errors import UsageError
from mubench.micro import data as d
from mubench.micro import scene as S
from mubench.micro import text as t

ALL_KINDS = {"single": 0.25, "two": 0.25, "count": 0.25, "relation": 0.25}


def test_constants():
    assert S.IMAGE_SIZE == 32 and len(S.SHAPES) == 3 and len(S.COLORS) == 6 and S.FILLS == ("solid", "striped")
    assert len({tuple(c) for c in S.COLORS.values()}) == 6


def test_make_scenes_is_deterministic_and_prefix_stable():
    a = d.make_scenes("train", 40, ALL_KINDS)
    b = d.make_scenes("train", 60, ALL_KINDS)
    assert a == b[:40]
    assert np.array_equal(S.render_batch(a), S.render_batch(b[:40]))
    assert {s.kind for s in b} == set(S.KINDS)


def test_splits_use_disjoint_seeds_and_differ():
    seeds = {split: {tuple(d.scene_rng(split, i).bit_generator.seed_seq.entropy) for i in range(100)}
             for split in d.SPLITS}
    for x, y in itertools.combinations(seeds, 2):
        assert not seeds[x] & seeds[y]
    imgs = {s: S.render_batch(d.make_scenes(s, 100)).reshape(100, -1) for s in ("train", "val", "test")}
    for x, y in itertools.combinations(imgs, 2):
        assert not any((imgs[x][i] == imgs[y]).all(axis=1).any() for i in range(100))


def test_compositional_pairs_never_in_train():
    train = d.make_scenes("train", 600, ALL_KINDS)
    pairs = {(o.color, o.shape) for s in train for o in s.objects}
    assert not pairs & d.HELD_OUT
    assert len(pairs) == len(S.COLORS) * len(S.SHAPES) - len(d.HELD_OUT)
    comp = d.make_scenes("compositional", 100)
    assert all(any((o.color, o.shape) in d.HELD_OUT for o in s.objects) for s in comp)
    assert all(s.phrases[0].color is not None for s in comp)  # the held-out pair is named


def test_captions_describe_scenes():
    for s in d.make_scenes("val", 300, ALL_KINDS):
        phrases, relation = S.parse_caption(s.caption)
        assert (phrases, relation) == (s.phrases, s.relation) and S.caption_for(phrases, relation) == s.caption
        assert sum(p.count for p in phrases) == len(s.objects)
        if s.kind == "count":
            assert all(phrases[0].matches(o) for o in s.objects)
        else:
            assert all(p.matches(o) for p, o in zip(phrases, s.objects))
        if s.relation == "left of":
            assert s.objects[0].x < s.objects[1].x
        if s.relation == "above":
            assert s.objects[0].y < s.objects[1].y


def test_render_shapes_colours_and_sizes():
    scenes = d.make_scenes("test", 200, ALL_KINDS)
    imgs = S.render_batch(scenes)
    assert imgs.shape == (200, 32, 32, 3) and imgs.dtype == np.uint8
    single = [s for s in d.make_scenes("test", 200) if s.kind == "single"]
    assert all(14 <= s.objects[0].size <= 24 for s in single)
    for scene, img in zip(scenes, imgs):
        for obj in scene.objects:
            painted = S.fill_pattern(obj, S.object_mask(obj))
            assert painted.sum() >= 12
            assert (img[painted] == S.COLORS[obj.color]).all()


def test_iterate_batches_is_deterministic():
    a = d.iterate_batches("train", 4, seed=7)
    b = d.iterate_batches("train", 4, seed=7)
    c = d.iterate_batches("train", 4, seed=8)
    for _ in range(3):
        (ia, ca), (ib, cb), (ic, cc) = next(a), next(b), next(c)
        assert np.array_equal(ia, ib) and ca == cb
        assert ia.shape == (4, 32, 32, 3)
    assert not np.array_equal(ia, ic)


def test_bad_inputs_raise_usage_errors():
    with pytest.raises(UsageError):
        d.make_scenes("nope", 3)
    with pytest.raises(UsageError):
        d.make_scenes("train", 3, {"pentagon": 1.0})
    with pytest.raises(ValueError):
        S.parse_caption("a red pentagon")


def test_tokenizer_round_trip_and_stable_vocab():
    tok = t.build_tokenizer()
    vocab = tok.get_vocab()
    assert vocab == t.vocabulary() and vocab == t.build_tokenizer().get_vocab()
    words = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][4:]
    assert words == sorted(words)
    assert (tok.pad_token_id, tok.bos_token_id, tok.unk_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    captions = [""] + [s.caption for s in d.make_scenes("train", 200, ALL_KINDS)]
    ids, mask = t.encode(tok, captions)
    assert ids.shape == mask.shape == (len(captions), t.MAX_LENGTH)
    assert t.decode(tok, ids) == captions
    assert (ids != t.UNK_ID).all()
    assert ids[0, :2].tolist() == [t.BOS_ID, t.EOS_ID] and mask[0].sum() == 2
    lengths = mask.sum(1)
    assert (ids[torch_arange(len(captions)), lengths - 1] == t.EOS_ID).all()
    assert t.encode(tok, ["a red pentagon"])[0][0, 3].item() == t.UNK_ID


def torch_arange(n):
    import torch

    return torch.arange(n)


def test_the_docs_state_the_vocabulary_size():
    from conftest import REPO

    doc = (REPO / "docs" / "micro-world.md").read_text(encoding="utf-8")
    assert f"over the {len(t.vocabulary())}-token word vocabulary" in doc
