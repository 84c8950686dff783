"""GenEval: every correctness rule on crafted detections, summary, official results import, folder layout, tiny backend."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.assets import get_asset
from mubench.config import build_params
from mubench.errors import AssetError, UsageError
from mubench.scorers.base import ScorerContext
from mubench.scorers.geneval_detector import (ClipColorClassifier, GenEvalDetector, GenEvalDetectorParams, tiny_clip)
from mubench.suites.base import PromptItem, SampleRecord
from mubench.suites.geneval import (GenEvalParams, GenEvalSuite, export_samples, import_folder, metrics_from_rows,
                                    read_metadata, read_results_jsonl, summary_from_results)
from mubench.suites.geneval_rules import (COLORS, OBJECT_NAMES, Detection, RuleParams, compute_iou, evaluate, judge,
                                          keep_detections, relative_position, summarize)

torch.set_num_threads(1)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "geneval"


def D(x1, y1, x2, y2, score=0.99):
    return Detection((x1, y1, x2, y2), score)


def test_official_metadata_parses_to_counts_and_hash():
    path = SHARED / "evaluation_metadata.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == get_asset("geneval-metadata").sha256
    rows = read_metadata(path)
    assert len(rows) == 553
    counts = {t: sum(r["tag"] == t for r in rows) for t in {r["tag"] for r in rows}}
    assert counts == {"single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100,
                      "color_attr": 100}
    names = [ln.strip() for ln in (SHARED / "object_names.txt").read_text().splitlines() if ln.strip()]
    assert tuple(names) == OBJECT_NAMES
    assert {c["class"] for r in rows for c in r["include"]} <= set(OBJECT_NAMES)
    s = GenEvalSuite(build_params(GenEvalParams, {"metadata": str(path)}), "geneval")
    items = s.items()
    assert len(items) == 553 and items[0].id == "geneval-00000" and items[0].meta["tag"] == "single_object"


def test_missing_metadata_stops_with_assets_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MUBENCH_HOME", str(tmp_path))
    with pytest.raises(AssetError, match="5c48e0813e81"):
        GenEvalSuite(build_params(GenEvalParams, {}), "geneval").check_assets()


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


def test_summary_is_mean_of_task_means():
    rows = [{"tag": "single_object", "correct": c} for c in (True, True, False, True)]
    rows += [{"tag": "counting", "correct": c} for c in (False, True)]
    s = summarize(rows)
    assert s == {"single_object": 0.75, "counting": 0.5, "overall": 0.625}  # image-weighted would be 0.667
    m = metrics_from_rows([{**r, "prompt_id": f"p{i // 2}"} for i, r in enumerate(rows)])
    assert m["overall"].value == 0.625 and m["single_object"].n == 4 and m["overall"].higher_is_better is True


def test_suite_units_and_the_overall_ci_are_the_mean_of_task_means():
    """Per-image correctness per task (what compare and the report's marks test) and ``overall`` stratified by task,
    whose CI the suite now reports."""
    s = GenEvalSuite(GenEvalParams(), "geneval")
    recs = []
    for p in range(12):  # 8 single-object prompts (mostly right), 4 counting prompts (mostly wrong), 2 images each
        tag = "single_object" if p < 8 else "counting"
        item = PromptItem(f"geneval-{p:05d}", "a photo", {"tag": tag})
        for j in range(2):
            ok = (p + j) % 4 != 0 if tag == "single_object" else (p + j) % 4 == 0
            recs.append(SampleRecord(item, j, 42, f"k{p}{j}", "", {"geneval": {"correct": ok}}))
    units = s.units(recs)
    m = s.aggregate(recs)
    assert set(units) == {"single_object", "counting", "overall"}
    want = np.mean([m["single_object"].value, m["counting"].value])  # task means weigh alike, not images
    assert units["overall"].value() == pytest.approx(want) and m["overall"].value == pytest.approx(want)
    assert m["overall"].ci_low < want < m["overall"].ci_high and m["overall"].n == 24
    assert units["counting"].n == 8 and units["single_object"].value() == pytest.approx(m["single_object"].value)


def test_official_results_jsonl_import(tmp_path):
    f = tmp_path / "results.jsonl"
    lines = [{"filename": f"out/{i // 4:05d}/samples/{i % 4:05d}.png", "tag": tag, "prompt": "p", "correct": ok,
              "reason": "", "metadata": "{}", "details": "{}"}
             for i, (tag, ok) in enumerate([("colors", True), ("colors", False), ("colors", False), ("colors", False),
                                            ("position", True), ("position", True), ("position", True),
                                            ("position", False)])]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    rows = read_results_jsonl(f)
    assert rows[5]["prompt_id"] == "geneval-00001" and rows[5]["image_index"] == 1
    m = summary_from_results(f)
    assert m["colors"].value == 0.25 and m["position"].value == 0.75 and m["overall"].value == 0.5
    f.write_text('{"tag": "colors", "correct": "yes"}\n')
    with pytest.raises(UsageError, match="true or false"):
        read_results_jsonl(f)
    with pytest.raises(UsageError):
        read_results_jsonl(tmp_path / "missing.jsonl")


def test_export_import_reference_layout(tmp_path):
    items = [PromptItem(f"geneval-{i:05d}", f"a photo of {i}", {"tag": "single_object", "prompt": f"a photo of {i}",
                                                               "include": [], "index": i}) for i in range(2)]
    recs = []
    for it in items:
        for j in range(2):
            src = tmp_path / f"{it.id}-{j}.png"
            Image.fromarray(np.full((4, 4, 3), j, np.uint8)).save(src)
            recs.append(SampleRecord(it, j, 0, "k", str(src)))
    export_samples(recs, tmp_path / "out")
    assert json.loads((tmp_path / "out/00001/metadata.jsonl").read_text())["prompt"] == "a photo of 1"
    Image.new("RGB", (4, 4)).save(tmp_path / "out/00000/samples/grid.png")  # stray grid is skipped
    back = import_folder(tmp_path / "out", items)
    assert [(s.item.id, s.image_index) for s in back] == [(it.id, j) for it in items for j in range(2)]
    (tmp_path / "out/00001/metadata.jsonl").write_text(json.dumps({"prompt": "other"}) + "\n")
    with pytest.raises(UsageError, match="is not prompt 1"):
        import_folder(tmp_path / "out", items)


def test_colour_classifier_crops_and_template_average():
    model, tok = tiny_clip(0)
    clf = ClipColorClassifier(model, tok, image_size=32)
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (10, 5, 20, 15))
    mask = np.zeros((20, 40), bool)
    mask[5:15, 10:15] = True
    crop = clf.crops(img, [Detection((10, 5, 20, 15), 0.9, mask)])[0]
    arr = np.asarray(crop)
    assert crop.size == (10, 10)
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[0, 9]) == (153, 153, 153)  # outside the mask: #999
    w = clf.text_weights("car")
    assert w.shape[0] == 10
    torch.testing.assert_close(w.norm(dim=-1), torch.ones(10))
    enc = tok(["a photo of a red car", "a photo of a red-colored car", "a photo of a red object"], padding=True,
              return_tensors="pt")
    with torch.no_grad():
        e = model.text_projection(model.text_model(**enc).pooler_output)
    e = e / e.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(w[0], e.mean(0) / e.mean(0).norm())
    out = clf(img, [Detection((10, 5, 20, 15), 0.9, mask), Detection((0, 0, 40, 20), 0.8, None)], "car")
    assert len(out) == 2 and set(out) <= set(COLORS)


def test_colour_crops_resize_as_open_clip_s_torchvision_transform_and_boxes_as_mmdet():
    from torchvision import transforms as T

    from mubench.scorers.geneval_detector import OPENAI_MEAN, OPENAI_STD, mask_box

    model, tok = tiny_clip(0)
    clf = ClipColorClassifier(model, tok, image_size=32)
    ref = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                     T.Normalize(OPENAI_MEAN, OPENAI_STD)])
    rng = np.random.default_rng(0)
    for w, h in ((100, 153), (80, 81), (153, 100), (47, 47), (33, 90)):
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        torch.testing.assert_close(clf.preprocess(im), ref(im), atol=1e-6, rtol=0)
    mask = np.zeros((20, 40), bool)
    mask[8:16, 10:20] = True  # a 10 x 8 object
    box = mask_box(mask)
    assert box == (10.0, 8.0, 20.0, 16.0)
    assert Image.new("RGB", (40, 20)).crop(box).size == (10, 8)  # the crop holds the whole object


def test_tiny_detector_scorer_runs_every_path():
    ctx = ScorerContext(torch.device("cpu"), weights="random")
    images = torch.rand(2, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    items = [PromptItem("a", "p", _meta("colors", [{"class": "car", "count": 1, "color": "red"}])),
             PromptItem("b", "q", _meta("position", [{"class": "cat", "count": 1},
                                                     {"class": "dog", "count": 1, "position": ["left of", 0]}]))]
    strict = GenEvalDetector(build_params(GenEvalDetectorParams, {}), ctx, "geneval")
    out = strict.score(images, items)
    assert [o["correct"] for o in out] == [False, False]  # a random detector is never confident
    assert out[0]["reason"].startswith("expected car>=1")
    loose = GenEvalDetector(build_params(GenEvalDetectorParams, {"threshold": -1.0}), ctx, "geneval")
    raw = loose.detector(Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)))
    assert raw and all(d.mask.shape == (48, 64) for ds in raw.values() for d in ds)
    res = loose.score(images, items)
    assert all(isinstance(r["correct"], bool) for r in res) and all(r["tag"] for r in res)
    # force the colour and position paths through the tiny CLIP with a stub detector
    loose.detector = lambda pil: {"car": [Detection((0, 0, 20, 20), 0.9, None)],
                                  "cat": [Detection((40, 0, 60, 20), 0.9, None)], "dog": [Detection((0, 0, 10, 10), 0.9, None)]}
    res = loose.score(images, items)
    assert res[1]["correct"] is True  # dog (centre 5) left of cat (centre 50)
    assert res[0]["correct"] is (res[0]["reason"] == "")
    assert res[0]["details"]["car"] == [[0, 0, 20, 20]]


def test_yaml_spec_resolves():
    from mubench.specs import find_spec, load_yaml

    _, path = find_spec("suites", "geneval")
    spec = load_yaml(path)
    for meta in ("kind", "description", "model", "models"):  # spec metadata, not parameters
        spec.pop(meta, None)
    p = build_params(GenEvalParams, spec)
    assert p.images_per_prompt == 4 and p.sampler.steps == 50 and p.sampler.guidance == 9.0
    assert p.detector.counting_threshold == 0.9


def test_nms_removes_an_overlap_equal_to_the_threshold():
    """GenEval keeps a lower-scored box only when IoU < max_overlap; IoU == max_overlap is suppressed."""
    import pytest

    from mubench.suites.geneval_rules import Detection, RuleParams, compute_iou, keep_detections

    a, b = Detection((0, 0, 9, 9), 0.9), Detection((0, 0, 9, 19), 0.8)  # 100 px inside 200 px: IoU 0.5
    assert compute_iou(a.box, b.box) == pytest.approx(0.5)
    kept = keep_detections({"car": [a, b]}, "two_object", RuleParams(max_overlap=0.5))
    assert [d.score for d in kept["car"]] == [0.9]


def test_a_colour_clause_needs_count_objects_of_that_colour():
    """with count 2 and colour red, one red and one blue object fail (colors.count(want) < count)."""
    from mubench.suites.geneval_rules import Detection, evaluate

    meta = {"tag": "counting", "include": [{"class": "car", "count": 2, "color": "red"}], "exclude": []}
    kept = {"car": [Detection((0, 0, 1, 1), 0.95), Detection((5, 5, 6, 6), 0.95)]}
    v = evaluate(meta, kept, lambda objs, cls: ["red", "blue"][:len(objs)])
    assert not v.correct and v.reason.startswith("expected red car>=2, found 1 red")
    assert evaluate(meta, kept, lambda objs, cls: ["red"] * len(objs)).correct


def test_position_rule_uses_the_default_position_threshold():
    """two boxes whose centres are 1 px apart (less than 0.1 x their summed sizes) stand in no relation, so a
    position clause fails under the default RuleParams."""
    from mubench.suites.geneval_rules import Detection, RuleParams, evaluate

    assert RuleParams().position_threshold == 0.1
    meta = {"tag": "position", "include": [{"class": "cat", "count": 1},
                                           {"class": "dog", "count": 1, "position": ["right of", 0]}], "exclude": []}
    kept = {"cat": [Detection((0, 0, 10, 10), 0.9)], "dog": [Detection((1, 0, 11, 10), 0.9)]}
    assert not evaluate(meta, kept).correct
    assert evaluate(meta, kept, params=RuleParams(position_threshold=0.0)).correct


def test_geneval_protocol_records_images_per_prompt():
    """GenEval's reference makes 4 images per prompt; a run with another count records its own."""
    s = GenEvalSuite(build_params(GenEvalParams, {"images_per_prompt": 2}), "geneval")
    assert s.protocol()["images_per_prompt"] == 2


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
