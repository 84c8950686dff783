"""The HTML report's data: which image stands next to which (gallery and "where they differ"), the run order and
labels, the image folder, and escaping of prompts in the written page."""
from __future__ import annotations

import pytest
from PIL import Image

from mubench.htmlreport.gallery import differ_plan, differ_sections, gallery_rows, rule_field
from mubench.htmlreport.images import ImageFolder
from mubench.htmlreport.runs import RunView, gallery_run_id, order_runs


def _rec(run, pid, j, seed=1, clip=0.0, correct=None, extra=None):
    scores = {"clip": {"clip": clip}}
    if correct is not None:
        scores["oracle"] = {"correct": correct}
    scores.update(extra or {})
    return {"prompt_id": pid, "image_index": j, "seed": seed, "prompt": f"p {pid}", "path": None,
            "sha256": f"{run}-{pid.replace('/', '')}-{j}", "scores": scores}


def _view(method, model, samples):
    return RunView({"run_id": f"{method}-{model}", "method": method, "model": model, "suite": "s"}, samples,
                   f"{method} · {model}")


def _png(path, colour):
    Image.new("RGB", (4, 4), colour).save(path)
    return str(path)


def test_gallery_cells_pair_runs_by_prompt_and_image_index(tmp_path):
    """Each gallery row is one (prompt_id, image_index), in id order, and every run's cell holds that run's image
    of exactly that prompt and index, whatever order the runs' records come in."""
    images = ImageFolder(tmp_path)
    for run in ("A", "B"):
        for pid in ("c/1", "c/2"):
            for j in (0, 1):
                _png(tmp_path / f"{run}{pid[-1]}{j}.png", (10 * j, 0, 0))
    a = [_rec("A", pid, j, seed=5) for pid in ("c/2", "c/1") for j in (1, 0)]
    b = [_rec("B", pid, j, seed=6) for pid in ("c/1", "c/2") for j in (0, 1)][1:]  # B lacks (c/1, 0)
    for s in a + b:
        s["path"] = str(tmp_path / f"{s['sha256'][0]}{s['prompt_id'][-1]}{s['image_index']}.png")
    rows = gallery_rows([_view("sd", "m", a), _view("x", "m", b)], images, None)
    assert [(r["id"], r["index"]) for r in rows] == [("c/1", 0), ("c/1", 1), ("c/2", 0), ("c/2", 1)]
    for r in rows:
        key = f"{r['id'].replace('/', '')}-{r['index']}"
        assert r["cells"][0]["img"] == f"images/A-{key}.png"
        if (r["id"], r["index"]) == ("c/1", 0):
            assert r["cells"][1]["img"] is None and r["cells"][1]["missing"] == "not in this run"
        else:
            assert r["cells"][1]["img"] == f"images/B-{key}.png"
            assert r["seed"] == "5/6"  # both runs' seeds when they differ


def test_gallery_pass_flag_follows_the_rule_field():
    """The pass/fail filter reads oracle.correct when present (before any other boolean score), per cell."""
    a = [_rec("A", "c/1", 0, correct=True, extra={"aaa": {"flag": False}}),
         _rec("A", "c/2", 0, correct=False, extra={"aaa": {"flag": True}})]
    for s in a:  # the other boolean field comes first in the records
        s["scores"] = {"aaa": s["scores"].pop("aaa"), **s["scores"]}
    views = [_view("sd", "m", a)]
    assert rule_field(views) == "oracle.correct"
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        rows = gallery_rows(views, ImageFolder(Path(d)), "oracle.correct")
    assert [r["cells"][0]["pass"] for r in rows] == [True, False]
    scores = dict(rows[0]["cells"][0]["scores"])
    assert scores["oracle.correct"] == "✓" and dict(rows[1]["cells"][0]["scores"])["oracle.correct"] == "✗"


def test_differ_plan_pairs_baseline_first_within_each_model_and_names_the_skipped():
    """Each run is compared with the baseline method's run on its own model, the baseline as the first of the
    pair; runs on a model without a baseline run are listed as skipped."""
    s = [_rec("A", "c/1", 0)]
    views = [_view("sd", "m1", s), _view("sd", "m2", s), _view("x", "m1", s), _view("x", "m2", s),
             _view("y", "m3", s)]
    plan = differ_plan(views, "sd", "clip.clip")
    assert [(a.label, o.label) for a, o in plan.pairs] == [("sd · m1", "x · m1"), ("sd · m2", "x · m2")]
    assert plan.skipped == ["y · m3"]


def test_differ_plan_offers_only_metrics_of_both_runs():
    """With no differ_by, the metric is one both runs have (not the baseline's own oracle.correct)."""
    a = [_rec("A", "c/1", 0, correct=True)]
    b = [_rec("B", "c/1", 0)]
    assert differ_plan([_view("sd", "m", a), _view("x", "m", b)], "sd", None).metric == "clip.clip"


def test_differ_sections_show_baseline_and_other_image_and_value_on_their_sides(tmp_path):
    """A win/loss item shows the baseline's image and value as "a", the other run's as "b"; ties count as
    neither a win nor a loss, and the mean is over all pairs."""
    images = ImageFolder(tmp_path)
    a, b = [], []
    for k, (va, vb) in enumerate([(0.1, 0.9), (0.5, 0.2), (0.3, 0.3)]):
        ra, rb = _rec("A", f"c/{k}", 0, clip=va), _rec("B", f"c/{k}", 0, clip=vb)
        ra["path"], rb["path"] = _png(tmp_path / f"a{k}.png", (k, 0, 0)), _png(tmp_path / f"b{k}.png", (0, k, 0))
        a.append(ra)
        b.append(rb)
    plan = differ_plan([_view("sd", "m", a), _view("x", "m", b)], "sd", "clip.clip")
    (sec,) = differ_sections(plan, images, top=1)
    assert sec["n"] == 3 and sec["n_wins"] == 1 and sec["n_losses"] == 1
    assert abs(sec["mean"] - (0.8 - 0.3 + 0.0) / 3) < 1e-9
    (win,) = sec["wins"]
    assert (win["a"], win["b"]) == (0.1, 0.9)
    assert win["img_a"] == "images/A-c0-0.png" and win["img_b"] == "images/B-c0-0.png"
    (loss,) = sec["losses"]
    assert loss["img_a"] == "images/A-c1-0.png" and loss["img_b"] == "images/B-c1-0.png"


def test_image_folder_keeps_same_named_files_of_two_runs_apart(tmp_path):
    """Two runs' images often share a file name (000000.png); the report must show each run its own image."""
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    p1, p2 = _png(tmp_path / "r1" / "000000.png", (255, 0, 0)), _png(tmp_path / "r2" / "000000.png", (0, 0, 255))
    images = ImageFolder(tmp_path / "report")
    r1, r2 = images.add(p1), images.add(p2)
    assert r1 != r2
    assert Image.open(tmp_path / "report" / r1).getpixel((0, 0)) == (255, 0, 0)
    assert Image.open(tmp_path / "report" / r2).getpixel((0, 0)) == (0, 0, 255)
    assert images.add(str(tmp_path / "gone.png")) is None


def test_run_order_and_gallery_run_of_a_pooled_group():
    """The baseline's runs come first, then the report's method order; a pooled group (seeds=) shows its first
    replicate's images."""
    views = [_view("random-mask", "m", []), _view("zzz", "m", []), _view("sd", "m", []),
             _view("lora", "m", [])]
    assert [v.method for v in order_runs(views, baseline="lora")][0] == "lora"
    ordered = [v.method for v in order_runs(views)]
    assert ordered[-1] == "zzz" and ordered.index("sd") < ordered.index("random-mask")
    assert gallery_run_id({"run_id": "group:abc", "replicates": ["r1", "r2"]}) == "r1"
    assert gallery_run_id({"run_id": "r9", "replicates": ["r1"]}) == "r9"


def test_image_folder_copies_small_shrinks_large_and_makes_each_content_once(tmp_path, monkeypatch):
    """A small image is copied; a large one becomes a JPEG thumbnail no larger than the thumbnail size; the same
    content under another path, or in a later report into the same folder, reuses the file made (no new encode);
    a missing or unreadable image gives no path."""
    from mubench.htmlreport import images as images_mod

    src = tmp_path / "src"
    src.mkdir()
    small = _png(src / "small.png", (200, 0, 0))
    Image.new("RGB", (600, 300), (0, 90, 0)).save(src / "large.png")
    (src / "broken.png").write_bytes(b"not a png")
    folder = ImageFolder(tmp_path / "report", thumb_size=64)
    rel_small, rel_large = folder.add(small), folder.add(str(src / "large.png"))
    assert rel_small.endswith(".png") and rel_large.endswith(".jpg")
    with Image.open(tmp_path / "report" / rel_large) as im:
        assert im.format == "JPEG" and im.size == (64, 32)
    assert (tmp_path / "report" / rel_small).read_bytes() == (src / "small.png").read_bytes()
    (src / "copy.png").write_bytes((src / "large.png").read_bytes())
    again = ImageFolder(tmp_path / "report", thumb_size=64)
    monkeypatch.setattr(images_mod.Image, "open", lambda *a, **k: pytest.fail("an image was encoded again"))
    assert again.add(str(src / "large.png")) == rel_large and again.add(str(src / "copy.png")) == rel_large
    assert again.add(small) == rel_small
    monkeypatch.undo()
    assert folder.add(str(src / "broken.png")) is None and folder.add(str(src / "gone.png")) is None
    assert folder.add(None) is None
    assert sorted(p.name for p in (tmp_path / "report" / "images").iterdir()) == sorted(
        [rel_small.split("/")[1], rel_large.split("/")[1]])
