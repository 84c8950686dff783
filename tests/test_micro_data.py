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
        (ia, ca), (ib, cb), (ic, _) = next(a), next(b), next(c)
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


def test_phrase_text_uses_an_before_a_vowel():
    """'an orange triangle' / 'an orange' after a number word stays 'two orange ...'; 'a striped ...'."""
    from mubench.micro import scene as S

    assert S.Phrase("triangle", "orange").text() == "an orange triangle"
    assert S.Phrase("circle", "red", "striped").text() == "a striped red circle"
    assert S.Phrase("square", "orange", count=2).text() == "two orange squares"
    assert S.parse_caption("an orange triangle") == ((S.Phrase("triangle", "orange"),), None)


def test_relation_holds_needs_the_relation_s_axis_to_dominate():
    """'left of' holds only when the horizontal offset exceeds the vertical one (as the oracle and the
    placement rule read it); a far-above object slightly to the left is not 'left of'."""
    from mubench.micro import scene as S

    def obj(x, y):
        return S.MicroObject("circle", "red", "solid", 8, x, y)

    assert S.relation_holds("left of", obj(5, 10), obj(20, 12))
    assert not S.relation_holds("left of", obj(10, 2), obj(14, 28))  # dx = -4, dy = -26: above, not left of
    assert S.relation_holds("above", obj(10, 2), obj(14, 28))
    assert not S.relation_holds("right of", obj(20, 2), obj(16, 28))


def test_every_drawn_scene_is_described_by_its_caption():
    """Every training/test scene and every reference render satisfies its caption (relation scenes included), and a
    caption that names fewer objects than the scene holds does not describe it."""
    import numpy as np

    from mubench.micro import data as D

    mix = {"single": 0.25, "two": 0.25, "count": 0.25, "relation": 0.25}
    scenes = D.make_scenes("val", 300, mix)
    assert sum(s.kind == "relation" for s in scenes) > 40
    for s in scenes:
        assert S.describes(s.phrases, s.relation, s.objects), s.caption
    for k, rel in enumerate(S.RELATIONS * 15):
        phrases = (S.Phrase("circle"), S.Phrase("square"))
        ref = D.realize(phrases, rel, np.random.default_rng(k), "test")
        assert S.describes(phrases, rel, ref.objects), (rel, ref.objects)
    two = next(s for s in scenes if len(s.objects) == 2)
    assert not S.describes(two.phrases[:1], None, two.objects)  # one phrase, two objects


def test_two_object_captions_tell_same_shape_objects_apart_by_colour():
    """when both objects of a two-object/relation scene have the same shape, both phrases name their colour."""
    from mubench.micro import data as D

    mix = {"two": 0.5, "relation": 0.5}
    same = [s for s in D.make_scenes("train", 400, mix) if s.objects[0].shape == s.objects[1].shape]
    assert len(same) > 20
    assert all(p.color is not None for s in same for p in s.phrases)


def test_count_scenes_hold_two_to_four_objects():
    """count scenes draw 2, 3 and 4 objects (the caption grammar's 'two' .. 'four')."""
    from mubench.micro import data as D

    counts = {len(s.objects) for s in D.make_scenes("train", 200, {"count": 1.0})}
    assert counts == {2, 3, 4}


def test_references_for_an_unnamed_colour_keep_to_the_split_s_pairs():
    """a reference render of 'a circle' (test split) never shows a held-out (colour, shape) pair."""
    import numpy as np

    from mubench.micro import data as D
    from mubench.micro import scene as S

    pairs = set()
    for k in range(200):
        for text in ("a circle", "a square", "two triangles"):
            ref = D.realize(*S.parse_caption(text), np.random.default_rng(k), "test")
            pairs |= {(o.color, o.shape) for o in ref.objects}
    assert not pairs & D.HELD_OUT and pairs <= set(D.allowed_pairs("test"))


def test_a_relation_joins_exactly_two_phrases():
    """a relation caption with a third phrase is outside the grammar."""
    import pytest

    from mubench.micro import scene as S

    with pytest.raises(ValueError, match="exactly two phrases"):
        S.parse_caption("a circle to the left of a square and a triangle")


def test_a_plural_phrase_is_realised_in_one_colour_and_fill():
    """'three squares' (no colour named) shows three squares of one colour, as count scenes are drawn; mixed
    colours would make every counting reference differ from the training distribution."""
    import numpy as np

    from mubench.micro import data as D
    from mubench.micro import scene as S

    for k in range(60):
        ref = D.realize(*S.parse_caption("three squares"), np.random.default_rng(k), "test")
        assert len({(o.color, o.fill) for o in ref.objects}) == 1
