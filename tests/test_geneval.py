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
from mubench.suites.geneval_rules import COLORS, OBJECT_NAMES, Detection, summarize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "geneval"


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
    colour = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}], "exclude": [], "prompt": "p"}
    position = {"tag": "position", "include": [{"class": "cat", "count": 1},
                                               {"class": "dog", "count": 1, "position": ["left of", 0]}],
                "exclude": [], "prompt": "p"}
    items = [PromptItem("a", "p", colour), PromptItem("b", "q", position)]
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


def test_geneval_protocol_records_images_per_prompt():
    """GenEval's reference makes 4 images per prompt; a run with another count records its own."""
    s = GenEvalSuite(build_params(GenEvalParams, {"images_per_prompt": 2}), "geneval")
    assert s.protocol()["images_per_prompt"] == 2


def test_summary_is_mean_of_task_means():
    rows = [{"tag": "single_object", "correct": c} for c in (True, True, False, True)]
    rows += [{"tag": "counting", "correct": c} for c in (False, True)]
    s = summarize(rows)
    assert s == {"single_object": 0.75, "counting": 0.5, "overall": 0.625}  # image-weighted would be 0.667
    m = metrics_from_rows([{**r, "prompt_id": f"p{i // 2}"} for i, r in enumerate(rows)])
    assert m["overall"].value == 0.625 and m["single_object"].n == 4 and m["overall"].higher_is_better is True
