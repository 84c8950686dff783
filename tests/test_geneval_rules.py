"""GenEval's correctness rules (``mubench.suites.geneval_rules``) on crafted detections: thresholds, NMS, counting,
colours, relative positions, the reasons a prompt fails, and the per-task summary."""
from __future__ import annotations

import pytest

from mubench.suites.geneval_rules import (Detection, RuleParams, compute_iou, evaluate, judge, keep_detections,
                                          relative_position, summarize)


def D(x1, y1, x2, y2, score=0.99):
    return Detection((x1, y1, x2, y2), score)


def test_thresholds_cap_order_and_nms():
    dets = {"dog": [D(0, 0, 9, 9, 0.3), D(0, 0, 9, 9, 0.31), D(20, 0, 29, 9, 0.8)], "cat": [D(0, 0, 1, 1, 0.2)]}
    kept = keep_detections(dets, "single_object")
    assert [d.score for d in kept["dog"]] == [0.8, 0.31]  # strictly above 0.3, sorted by confidence
    assert "cat" not in kept  # classes left empty are dropped
    kept = keep_detections(dets, "counting")  # 0.9 for every class when the tag is counting
    assert kept == {}
    many = {"cup": [D(i, 0, i + 1, 1, 0.5 + i / 100) for i in range(20)]}
    assert len(keep_detections(many, "two_object")["cup"]) == 16
    # IoU with the +1-pixel convention: boxes 0..9 and 5..14 overlap 5x10 of 10x10 each
    assert compute_iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    near = {"car": [D(0, 0, 9, 9, 0.9), D(5, 0, 14, 9, 0.8), D(40, 0, 49, 9, 0.7)]}
    assert len(keep_detections(near, "two_object")["car"]) == 3  # NMS off by default (max_overlap 1.0)
    kept = keep_detections(near, "two_object", RuleParams(max_overlap=0.3))
    assert [d.score for d in kept["car"]] == [0.9, 0.7]


def test_relative_position_by_hand():
    a = D(0, 0, 10, 10)
    # offset (-50, 0), revised -(50 - 0.1*20) = -48 → dx = -0.96
    assert relative_position(a, D(50, 0, 60, 10)) == {"left of"}
    assert relative_position(D(50, 0, 60, 10), a) == {"right of"}
    # offset (-30, -30), revised (-28, -28)/42.43 = (-0.66, -0.66): both relations (y grows downward)
    assert relative_position(a, D(30, 30, 40, 40)) == {"left of", "above"}
    assert relative_position(D(0, 30, 10, 40), a) == {"below"}
    # centres 1 px apart, less than 0.1 * (10 + 10): no relation at all
    assert relative_position(a, D(1, 1, 11, 11)) == set()
    # offset (-12, -3): revised (-10, -1) / 12.37 = (-0.81, -0.08) → only left of
    assert relative_position(a, D(12, 3, 22, 13)) == {"left of"}


def _meta(tag, include, exclude=()):
    return {"tag": tag, "include": list(include), "exclude": list(exclude), "prompt": "p"}


def test_include_exclude_and_counting_rules():
    single = _meta("single_object", [{"class": "bench", "count": 1}])
    assert judge(single, {"bench": [D(0, 0, 5, 5, 0.4)]}).correct
    v = judge(single, {"bench": [D(0, 0, 5, 5, 0.29)]})
    assert not v.correct and v.reason == "expected bench>=1, found 0"
    two = _meta("two_object", [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}])
    assert not judge(two, {"cat": [D(0, 0, 5, 5)]}).correct
    assert judge(two, {"cat": [D(0, 0, 5, 5)], "dog": [D(9, 9, 12, 12)]}).correct
    count2 = _meta("counting", [{"class": "clock", "count": 2}], [{"class": "clock", "count": 3}])
    assert judge(count2, {"clock": [D(0, 0, 1, 1, 0.95), D(5, 5, 6, 6, 0.92), D(9, 9, 10, 10, 0.6)]}).correct
    v = judge(count2, {"clock": [D(0, 0, 1, 1, 0.95), D(5, 5, 6, 6, 0.92), D(9, 9, 10, 10, 0.91)]})
    assert not v.correct and v.reason == "expected clock<3, found 3"
    v = judge(count2, {"clock": [D(0, 0, 1, 1, 0.95), D(5, 5, 6, 6, 0.85)]})
    assert not v.correct and v.reason == "expected clock>=2, found 1"


def test_colour_rules_use_top_count_objects():
    meta = _meta("colors", [{"class": "car", "count": 1, "color": "red"}])
    seen = []

    def colours(objs, cls):
        seen.append((len(objs), cls))
        return ["red" if o.score > 0.9 else "blue" for o in objs]

    assert evaluate(meta, {"car": [D(0, 0, 1, 1, 0.95), D(2, 2, 3, 3, 0.5)]}, colours).correct
    assert seen == [(1, "car")]  # only the most confident object is classified
    v = evaluate(meta, {"car": [D(0, 0, 1, 1, 0.8), D(2, 2, 3, 3, 0.95)]}, colours)
    assert not v.correct and v.reason == "expected red car>=1, found 0 red; and 1 blue"
    attr = _meta("color_attr", [{"class": "cup", "count": 1, "color": "green"}, {"class": "dog", "count": 1, "color": "red"}])
    assert not evaluate(attr, {"cup": [D(0, 0, 1, 1, 0.95)], "dog": [D(0, 0, 1, 1, 0.95)]}, lambda o, c: ["red"]).correct
    assert evaluate(attr, {"cup": [D(0, 0, 1, 1)], "dog": [D(0, 0, 1, 1)]},
                    lambda o, c: ["green" if c == "cup" else "red"]).correct


def test_position_rules():
    meta = _meta("position", [{"class": "teddy bear", "count": 1}, {"class": "dog", "count": 1, "position": ["right of", 0]}])
    bear, dog_right, dog_left = D(0, 0, 10, 10), D(50, 0, 60, 10), D(-60, 0, -50, 10)
    assert evaluate(meta, {"teddy bear": [bear], "dog": [dog_right]}).correct
    v = evaluate(meta, {"teddy bear": [bear], "dog": [dog_left]})
    assert not v.correct and v.reason == "expected dog right of target, found left of target"
    v = evaluate(meta, {"dog": [dog_right]})
    assert not v.correct and v.reason == "expected teddy bear>=1, found 0\nno target for dog to be right of"
    # only the top-count objects of the target group are used (the second bear, left of the dog, is ignored)
    assert evaluate(meta, {"teddy bear": [bear, D(100, 0, 110, 10, 0.5)], "dog": [dog_right]}).correct


def test_nms_removes_an_overlap_equal_to_the_threshold():
    """GenEval keeps a lower-scored box only when IoU < max_overlap; IoU == max_overlap is suppressed."""
    a, b = Detection((0, 0, 9, 9), 0.9), Detection((0, 0, 9, 19), 0.8)  # 100 px inside 200 px: IoU 0.5
    assert compute_iou(a.box, b.box) == pytest.approx(0.5)
    kept = keep_detections({"car": [a, b]}, "two_object", RuleParams(max_overlap=0.5))
    assert [d.score for d in kept["car"]] == [0.9]


def test_a_colour_clause_needs_count_objects_of_that_colour():
    """with count 2 and colour red, one red and one blue object fail (colors.count(want) < count)."""
    meta = {"tag": "counting", "include": [{"class": "car", "count": 2, "color": "red"}], "exclude": []}
    kept = {"car": [Detection((0, 0, 1, 1), 0.95), Detection((5, 5, 6, 6), 0.95)]}
    v = evaluate(meta, kept, lambda objs, cls: ["red", "blue"][:len(objs)])
    assert not v.correct and v.reason.startswith("expected red car>=2, found 1 red")
    assert evaluate(meta, kept, lambda objs, cls: ["red"] * len(objs)).correct


def test_position_rule_uses_the_default_position_threshold():
    """two boxes whose centres are 1 px apart (less than 0.1 x their summed sizes) stand in no relation, so a
    position clause fails under the default RuleParams."""
    assert RuleParams().position_threshold == 0.1
    meta = {"tag": "position", "include": [{"class": "cat", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["right of", 0]}], "exclude": []}
    kept = {"cat": [Detection((0, 0, 10, 10), 0.9)], "dog": [Detection((1, 0, 11, 10), 0.9)]}
    assert not evaluate(meta, kept).correct
    assert evaluate(meta, kept, params=RuleParams(position_threshold=0.0)).correct


def test_iou_of_boxes_apart_on_both_axes_is_zero():
    """Boxes separated both horizontally and vertically share no pixel: the intersection's negative width and
    height are each clamped to 0 (not multiplied into a positive area), so IoU is 0. Two empty boxes (union 0)
    also have IoU 0, as in GenEval's compute_iou."""
    assert compute_iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0.0
    assert compute_iou((20, 20, 29, 29), (0, 0, 9, 9)) == 0.0
    assert compute_iou((5, 5, 3, 3), (5, 5, 3, 3)) == 0.0  # x2 < x1 - 1: zero area each, union 0


def test_identical_boxes_are_all_kept_when_nms_is_off():
    """With the default max_overlap 1.0 NMS is off entirely, so even two identical boxes (IoU exactly 1) both stay;
    GenEval counts them as two objects."""
    dets = {"clock": [D(0, 0, 9, 9, 0.95), D(0, 0, 9, 9, 0.93)]}
    assert compute_iou(dets["clock"][0].box, dets["clock"][1].box) == 1.0
    assert [d.score for d in keep_detections(dets, "counting")["clock"]] == [0.95, 0.93]
    meta = _meta("counting", [{"class": "clock", "count": 2}], [{"class": "clock", "count": 3}])
    assert judge(meta, dets).correct


def test_nms_is_greedy_against_each_kept_box():
    """Greedy NMS compares the remaining boxes with the box just kept. In a chain A-B-C where A overlaps B and B
    overlaps C but A and C are apart, A suppresses B, and C (no longer facing B) is kept; boxes that overlap
    nothing are never removed."""
    a, b, c = D(0, 0, 9, 9, 0.9), D(5, 0, 14, 9, 0.8), D(10, 0, 19, 9, 0.7)
    assert compute_iou(a.box, b.box) == compute_iou(b.box, c.box) == pytest.approx(50 / 150)
    assert compute_iou(a.box, c.box) == 0.0
    kept = keep_detections({"car": [c, a, b]}, "two_object", RuleParams(max_overlap=0.3))
    assert [d.score for d in kept["car"]] == [0.9, 0.7]
    apart = {"car": [D(0, 0, 9, 9, 0.9), D(40, 0, 49, 9, 0.8), D(80, 0, 89, 9, 0.7)]}
    assert len(keep_detections(apart, "two_object", RuleParams(max_overlap=0.3))["car"]) == 3


def test_judge_applies_the_given_thresholds():
    """judge's RuleParams govern which detections are kept, not only the position rule: a 0.4-confidence object
    passes the default 0.3 threshold but not a 0.5 one."""
    meta = _meta("single_object", [{"class": "bench", "count": 1}])
    dets = {"bench": [D(0, 0, 5, 5, 0.4)]}
    assert judge(meta, dets).correct
    v = judge(meta, dets, params=RuleParams(threshold=0.5))
    assert not v.correct and v.reason == "expected bench>=1, found 0"
    many = {"bench": [D(i * 10, 0, i * 10 + 5, 5, 0.9) for i in range(3)]}
    excl = _meta("single_object", [{"class": "bench", "count": 1}], [{"class": "bench", "count": 3}])
    assert not judge(excl, many).correct
    assert judge(excl, many, params=RuleParams(max_objects=2)).correct  # the cap keeps only 2 benches


def test_position_rule_checks_every_object_against_every_target():
    """Each of the clause's top-count objects must stand in the relation to each object of the target group; one
    failing pair fails the image, and the first failing pair of an object ends that object's check (one reason)."""
    bears = [D(0, 0, 10, 10), D(0, 100, 10, 110)]
    meta = _meta("position", [{"class": "teddy bear", "count": 2},
                              {"class": "dog", "count": 1, "position": ["right of", 0]}])
    # right of bear 1, but relative to bear 2 the offset (50, -100) shrinks to (48, -98) / 111.8 = (0.43, -0.88)
    assert relative_position(D(50, 0, 60, 10), bears[0]) == {"right of"}
    assert relative_position(D(50, 0, 60, 10), bears[1]) == {"above"}
    assert evaluate(meta, {"teddy bear": bears, "dog": [D(50, 0, 60, 10)]}).correct is False
    assert evaluate(meta, {"teddy bear": bears, "dog": [D(200, 50, 210, 60)]}).correct
    # the dog is left of both bears: the object stops at its first failing target, so only one reason
    v = evaluate(meta, {"teddy bear": bears, "dog": [D(-100, 50, -90, 60)]})
    assert not v.correct and v.reason == "expected dog right of target, found left of target"
    # two dogs: the second, left of the bear, fails the clause although the first is right of it
    meta2 = _meta("position", [{"class": "teddy bear", "count": 1},
                               {"class": "dog", "count": 2, "position": ["right of", 0]}])
    dogs = [D(50, 0, 60, 10, 0.9), D(-60, 0, -50, 10, 0.8)]
    v = evaluate(meta2, {"teddy bear": bears[:1], "dog": dogs})
    assert not v.correct and v.reason == "expected dog right of target, found left of target"
    assert evaluate(meta2, {"teddy bear": bears[:1], "dog": [dogs[0], D(80, 0, 90, 10, 0.8)]}).correct


def test_a_failed_colour_clause_skips_its_position_check():
    """The position check runs only while the clause is still matched: after a colour failure only the colour
    reason is reported, not a position one."""
    meta = _meta("position", [{"class": "cat", "count": 1},
                              {"class": "dog", "count": 1, "color": "red", "position": ["right of", 0]}])
    kept = {"cat": [D(0, 0, 10, 10)], "dog": [D(-60, 0, -50, 10)]}  # a blue dog, left of the cat
    v = evaluate(meta, kept, lambda objs, cls: ["blue"] * len(objs))
    assert not v.correct and v.reason == "expected red dog>=1, found 0 red; and 1 blue"


def test_colour_reason_lists_colours_in_geneval_order():
    """The colour-failure reason counts the classified colours in GenEval's COLORS order (red before blue), not
    alphabetically or in detection order."""
    meta = _meta("colors", [{"class": "car", "count": 3, "color": "green"}])
    kept = {"car": [D(0, 0, 1, 1), D(2, 2, 3, 3), D(4, 4, 5, 5)]}
    v = evaluate(meta, kept, lambda objs, cls: ["white", "blue", "red"])
    assert not v.correct and v.reason == "expected green car>=3, found 0 green; and 1 red, 1 blue, 1 white"


def test_every_violated_exclude_clause_is_reported():
    """All exclude clauses are checked: two violated ones give two reasons, one per line."""
    meta = _meta("single_object", [{"class": "cat", "count": 1}],
                 [{"class": "cat", "count": 2}, {"class": "dog", "count": 1}])
    v = evaluate(meta, {"cat": [D(0, 0, 1, 1), D(5, 5, 6, 6)], "dog": [D(9, 9, 10, 10)]})
    assert not v.correct and v.reason == "expected cat<2, found 2\nexpected dog<1, found 1"


def test_summary_keeps_tags_outside_geneval_s_six_tasks():
    """A tag outside TASKS still gets its own mean, listed after the known tasks (which keep GenEval's order), and
    ``overall`` is the unweighted mean of every task mean present."""
    rows = [{"tag": "zzz_custom", "correct": c} for c in (True, False, False, False)]
    rows += [{"tag": "counting", "correct": True}, {"tag": "single_object", "correct": False}]
    s = summarize(rows)
    assert list(s) == ["single_object", "counting", "zzz_custom", "overall"]
    assert s["zzz_custom"] == 0.25 and s["overall"] == pytest.approx((0.0 + 1.0 + 0.25) / 3)

