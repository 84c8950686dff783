"""The micro oracle: attribute recovery against the generator's ground truth, and its GenEval-style rules."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mubench.micro import data as d
from mubench.micro import scene as S
from mubench.micro.oracle import Detection, Oracle, match_objects

MIX = {"single": 0.25, "two": 0.25, "count": 0.25, "relation": 0.25}


@pytest.fixture(scope="module")
def oracle():
    return Oracle()


def _accuracy(oracle, scenes, images):
    stats = {k: [] for k in ("found", "color", "shape", "fill", "position", "count", "caption")}
    for scene, image in zip(scenes, images):
        found = oracle.detect(image)
        stats["count"].append(len(found) == len(scene.objects))
        stats["caption"].append(oracle.evaluate(found, scene.phrases, scene.relation)[0])
        for m in match_objects(scene.objects, found):
            stats["found"].append(m.found is not None)
            if m.found is not None:
                for attr in ("color", "shape", "fill"):
                    stats[attr].append(getattr(m.found, attr) == getattr(m.truth, attr))
                stats["position"].append(np.hypot(m.found.x - m.truth.x, m.found.y - m.truth.y) <= 1.0)
    return {k: float(np.mean(v)) for k, v in stats.items()}


@pytest.mark.parametrize("split", ["test", "compositional"])
def test_oracle_recovers_every_attribute(oracle, split):
    scenes = d.make_scenes(split, 500, MIX if split == "test" else None)
    acc = _accuracy(oracle, scenes, S.render_batch(scenes))
    assert all(v >= 0.98 for v in acc.values()), acc


def test_oracle_is_robust_to_noise_blur_and_tint(oracle):
    scenes = d.make_scenes("val", 500, MIX)
    rng = np.random.default_rng(0)
    imgs = S.render_batch(scenes).astype(np.float64)
    imgs = ndimage.gaussian_filter(imgs, (0, 0.5, 0.5, 0))  # soft edges, like a generated image
    imgs += rng.normal(0, 10, imgs.shape) + rng.normal(0, 8, (len(imgs), 1, 1, 3))
    acc = _accuracy(oracle, scenes, np.clip(np.round(imgs), 0, 255).astype(np.uint8))
    assert all(v >= 0.98 for v in acc.values()), acc


def test_oracle_accepts_float_chw(oracle):
    scene = d.make_scenes("test", 1)[0]
    img = S.render(scene)
    a = oracle.detect(img)
    b = oracle.detect(img.transpose(2, 0, 1).astype(np.float32) / 255.0)
    assert [x.as_dict() for x in a] == [x.as_dict() for x in b]


def test_blank_image_has_no_objects(oracle):
    img = np.full((32, 32, 3), 230, np.uint8)
    assert oracle.detect(img) == []
    ok, reason = oracle.evaluate([], S.parse_caption("a red circle")[0])
    assert not ok and reason == "expected circle>=1, found 0"


def det(shape, color, x, y, size=8, fill="solid"):
    h = size // 2
    return Detection(shape, color, fill, x, y, (x - h, y - h, x + h, y + h), size * size, 1.0, 1.0)


def test_rules_on_crafted_detections(oracle):
    ev = oracle.evaluate
    p = lambda c: S.parse_caption(c)  # noqa: E731
    # colors: the largest circle is judged, as GenEval judges the top-confidence object
    assert ev([det("circle", "red", 10, 10, 10), det("circle", "blue", 20, 20, 6)], *p("a red circle"))[0]
    ok, why = ev([det("circle", "blue", 10, 10, 10), det("circle", "red", 20, 20, 6)], *p("a red circle"))
    assert not ok and "found 0 red" in why
    # counting: exactly two (include 2, exclude 3)
    two = [det("square", "green", 6, 6), det("square", "green", 20, 20)]
    assert ev(two, *p("two green squares"))[0]
    ok, why = ev(two + [det("square", "green", 6, 24)], *p("two green squares"))
    assert not ok and why == "expected square<3, found 3"
    assert not ev(two[:1], *p("two squares"))[0]
    # position: object 0 left of object 1, relative to box sizes
    pair = [det("circle", "red", 6, 16), det("square", "blue", 24, 16)]
    assert ev(pair, *p("a red circle to the left of a blue square"))[0]
    ok, why = ev(pair, *p("a red circle to the right of a blue square"))
    assert not ok and "found left of" in why
    close = [det("circle", "red", 14, 16), det("square", "blue", 16, 16)]
    assert oracle.relations(close[0], close[1]) == set()
    assert oracle.relations(det("circle", "red", 16, 4), det("square", "blue", 17, 26)) == {"above"}
    # two objects, same shape named twice: each phrase keeps a different object
    assert ev([det("circle", "blue", 6, 6, 10), det("circle", "red", 24, 24)], *p("a red circle and a blue circle"))[0]
    # fill is judged when named
    assert not ev([det("square", "red", 8, 8)], *p("a striped square"))[0]
    assert ev([det("square", "red", 8, 8, fill="striped")], *p("a striped square"))[0]


def test_bindings(oracle):
    found = [det("circle", "red", 6, 6), det("square", "green", 20, 20, fill="striped")]
    phrases, _ = S.parse_caption("a red circle and a blue square")
    assert oracle.bindings(found, phrases) == [True, False]
    phrases, _ = S.parse_caption("a striped square and a solid triangle")
    assert oracle.bindings(found, phrases) == [True, False]


def test_detections_come_largest_first_then_top_to_bottom(oracle):
    """GenEval judges the top-confidence objects; here the largest stand for them, so the order is part of the
    rules (a phrase keeps its top-``count`` objects by area)."""
    small = S.MicroObject("circle", "red", "solid", 10, 8.0, 8.0)
    large = S.MicroObject("square", "blue", "solid", 14, 22.0, 22.0)
    img = S.render(S.Scene((small, large), (235, 235, 235), "", "two"))
    found = oracle.detect(img)
    assert [f.shape for f in found] == ["square", "circle"] and found[0].area > found[1].area
    # equal areas: the upper object first, then the one further left
    same = [S.MicroObject("square", color, "solid", 10, x, y)
            for color, x, y in (("green", 24.0, 6.0), ("red", 6.0, 24.0), ("blue", 6.0, 6.0))]
    found = oracle.detect(S.render(S.Scene(tuple(same), (235, 235, 235), "", "count")))
    assert [f.color for f in found] == ["blue", "green", "red"]


def test_a_phrase_cannot_reuse_an_object_an_earlier_phrase_kept(oracle):
    one = [det("circle", "red", 10, 10, 10)]
    ok, why = oracle.evaluate(one, (S.Phrase("circle", "red"), S.Phrase("circle")))
    assert not ok and why == "expected circle>=1, found 0"
    # a phrase keeps the objects with its own attributes first, then the largest
    both = [det("circle", "red", 6, 6, 10), det("circle", "blue", 24, 24, 8)]
    assert oracle.evaluate(both, (S.Phrase("circle", "blue"), S.Phrase("circle", "red")))[0]


def test_a_relation_holds_for_every_kept_pair(oracle):
    # two circles must both be left of the square: one of them is not
    objs = [det("circle", "red", 6, 16), det("circle", "red", 28, 4), det("square", "blue", 22, 16)]
    phrases = (S.Phrase("circle", "red", count=2), S.Phrase("square", "blue"))
    ok, why = oracle.evaluate(objs, phrases, "left of")
    assert not ok and why.startswith("expected circle left of square, found ") and why.count("expected") == 1
    objs[1] = det("circle", "red", 6, 4)
    assert oracle.evaluate(objs, phrases, "left of")[0]


def test_bindings_count_the_objects_a_phrase_needs(oracle):
    two = [det("circle", "red", 6, 6), det("circle", "red", 24, 24), det("circle", "blue", 6, 24)]
    assert oracle.bindings(two, (S.Phrase("circle", "red", count=2),)) == [True]
    assert oracle.bindings(two, (S.Phrase("circle", "blue", count=2),)) == [False]
    assert oracle.bindings(two, (S.Phrase("circle", count=3),)) == [True]


def test_binding_judges_the_largest_object_of_the_key_attribute(oracle):
    found = [det("circle", "blue", 10, 10, 10), det("circle", "red", 24, 24, 6), det("square", "red", 4, 26, 4)]
    assert oracle.binding(found, S.Phrase("circle", "blue"), "shape", "color") == (True, "")
    assert oracle.binding(found, S.Phrase("circle", "red"), "shape", "color") == (
        False, "the circle object is blue, expected red")
    assert oracle.binding(found, S.Phrase("triangle", "red"), "shape", "color") == (False, "no triangle object")
    assert oracle.binding(found, S.Phrase("square", "red", "striped"), "color", "fill") == (
        False, "the red object is solid, expected striped")  # by colour: the red circle (6 px) beats the square
    with pytest.raises(ValueError, match="names no color"):
        oracle.binding(found, S.Phrase("circle"), "shape", "color")
