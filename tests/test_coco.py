"""COCO suite: deterministic caption selection, shared crop+resize, clean-fid-equivalent FID, CLIP score."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.config import build_params
from mubench.errors import AssetError, UsageError
from mubench.scorers.base import ScorerContext
from mubench.scorers.clip_score import ClipScore, ClipScoreParams
from mubench.scorers.fid_features import InceptionFeatures, TinyFeatureNet, center_crop_resize, protocol_resize
from mubench.suites.base import PromptItem, SampleRecord
from mubench.suites.coco import CocoParams, CocoSuite, load_annotations, select_captions

RANDOM = ScorerContext(torch.device("cpu"), weights="random")
N = 20


@pytest.fixture()
def fake_coco(tmp_path, monkeypatch):
    monkeypatch.setenv("MUBENCH_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "val2017"
    img_dir.mkdir()
    images, anns = [], []
    for k in range(N):
        iid = 1000 + 7 * k
        name = f"{iid:012d}.jpg"
        h, w = (30, 44) if k % 2 else (50, 36)
        base = rng.integers(0, 256, size=3)
        arr = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(img_dir / name, quality=90)
        images.append({"id": iid, "file_name": name})
        anns += [{"id": 5000 - k, "image_id": iid, "caption": f" caption b of {k} "},
                 {"id": 9000 + k, "image_id": iid, "caption": f"caption a of {k}"}]
    cap = tmp_path / "captions_val2017.json"
    cap.write_text(json.dumps({"images": images, "annotations": anns[::-1]}))
    return cap, img_dir


def make_suite(cap, img_dir, **kw):
    params = build_params(CocoParams, {"captions": str(cap), "images": str(img_dir),
                                       "fid": {"resolution": 32, "batch_size": 8}, **kw})
    return CocoSuite(params, "coco")


def test_caption_selection_is_deterministic(fake_coco):
    cap, _ = fake_coco
    files, caps = load_annotations(cap)
    first = select_captions(files, caps, "first-caption")
    assert [r["image_id"] for r in first] == sorted(files)
    assert first[0]["caption"] == "caption b of 0" and first[0]["caption_id"] == 5000  # lowest annotation id
    r1 = select_captions(files, caps, "random-caption", count=8, seed=1)
    assert r1 == select_captions(files, caps, "random-caption", count=8, seed=1)
    assert r1 != select_captions(files, caps, "random-caption", count=8, seed=2)
    assert len(r1) == 8 and [r["image_id"] for r in r1] == sorted(r["image_id"] for r in r1)
    with pytest.raises(UsageError):
        select_captions(files, caps, "random-caption", count=N + 1)


def test_suite_items_and_manifest(fake_coco, tmp_path):
    cap, img_dir = fake_coco
    s = make_suite(cap, img_dir)
    items = s.items()
    assert len(items) == N and items[0].id == "coco-000000001000" and items[0].prompt == "caption b of 0"
    manifest = tmp_path / "home" / "coco" / f"coco-{s.manifest_hash()}.json"
    assert json.loads(manifest.read_text())["selection"][3]["image_id"] == 1021
    assert s.protocol()["selection_manifest"] == s.manifest_hash()


def test_missing_captions_stop_with_assets_message(tmp_path, monkeypatch):
    monkeypatch.setenv("MUBENCH_HOME", str(tmp_path))
    s = CocoSuite(build_params(CocoParams, {}), "coco")
    with pytest.raises(AssetError, match="coco2017-captions") as err:
        s.check_assets()
    assert err.value.exit_code == 2


def test_center_crop_resize_shared_function():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, 10:30] = 200  # the centre square is uniform
    out = center_crop_resize(arr, 10)
    assert out.shape == (10, 10, 3) and (out == 200).all()
    sq = np.random.default_rng(0).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert (center_crop_resize(sq, 16) == sq).all()  # a square image at the target size is unchanged


def test_protocol_resizes_match_clean_fid():
    from cleanfid.resize import build_resizer

    arr = np.random.default_rng(1).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for mode in ("clean", "legacy_pytorch"):
        ref = build_resizer(mode)(arr).transpose(2, 0, 1)
        np.testing.assert_allclose(protocol_resize(arr, mode), ref, rtol=0, atol=1e-4)


def _generated(n, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g)
    return (base + 0.15 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)


def _records(suite, images):
    fid = InceptionFeatures(suite.params.fid, RANDOM, "fid")
    clip = ClipScore(suite.params.clip, RANDOM, "clip")
    items = suite.items()[:len(images)]
    f, c = fid.score(images, items), clip.score(images, items)
    return [SampleRecord(it, 0, 0, it.id, "", {"fid": a, "clip": b}) for it, a, b in zip(items, f, c)]


def test_fid_matches_clean_fid_folder_vs_folder(fake_coco, tmp_path, monkeypatch):
    from cleanfid import fid as cleanfid

    cap, img_dir = fake_coco
    s = make_suite(cap, img_dir)
    images = _generated(N, 3)
    gen_dir = tmp_path / "gen"
    gen_dir.mkdir()
    for k, im in enumerate(images):  # what the harness stores: PNG of round(255 x)
        Image.fromarray((im * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(gen_dir / f"{k:03d}.png")
    records = _records(s, images)
    metrics = s.aggregate(records)
    net = TinyFeatureNet(0)
    ref = cleanfid.compute_fid(str(gen_dir), str(img_dir), mode="clean", num_workers=0, batch_size=8,
                               device=torch.device("cpu"), verbose=False,
                               custom_feat_extractor=lambda x: net((x - 128.0) / 128.0),
                               custom_image_tranform=lambda a: center_crop_resize(a, 32))
    assert metrics["fid"].value > 0 and not metrics["fid"].higher_is_better
    assert metrics["fid"].value == pytest.approx(float(ref), rel=1e-5)  # clean-fid keeps float32 means
    assert metrics["fid"].n == N
    # the reference statistics were cached: a second aggregation does not read the images again
    assert len(list((tmp_path / "home" / "fid-ref").glob("*.npz"))) == 1
    monkeypatch.setattr(InceptionFeatures, "features_files", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    assert make_suite(cap, img_dir).aggregate(records)["fid"].value == metrics["fid"].value
    units = s.units(records)  # what compare and the report's marks test: the same numbers, per image
    assert units["fid"].n == N and units["fid"].value() == pytest.approx(metrics["fid"].value, rel=1e-6)
    assert units["clip"].value() == pytest.approx(metrics["clip"].value)
    assert sorted(units["clip"].prompt_ids) == sorted(r.item.id for r in records)


def test_fid_refused_below_feature_dimension_unless_forced(fake_coco):
    cap, img_dir = fake_coco
    s = make_suite(cap, img_dir)
    recs = _records(s, _generated(10, 4))
    with pytest.raises(UsageError, match="generated set has 10 images but the features have 16 dimensions.*suite.fid_force=true"):
        s.aggregate(recs)
    forced = make_suite(cap, img_dir, fid_force=True).aggregate(recs)
    assert np.isfinite(forced["fid"].value)


def test_clip_score_raw_cosine_and_x100(fake_coco):
    cap, img_dir = fake_coco
    s = make_suite(cap, img_dir, fid_force=True)
    images = _generated(4, 5)
    recs = _records(s, images)
    scorer = ClipScore(ClipScoreParams(), RANDOM, "clip")
    with torch.no_grad():  # by hand: uint8 through the processor, projections, cosine
        arr = [(im * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for im in images]
        px = scorer.processor(images=arr, return_tensors="pt").pixel_values
        assert px.shape[-1] == 32 and px.abs().max() < 3  # uint8 in, normalised once
        enc = scorer.tokenizer([r.item.prompt for r in recs], padding=True, return_tensors="pt")
        a = scorer.model.visual_projection(scorer.model.vision_model(pixel_values=px).pooler_output)
        b = scorer.model.text_projection(scorer.model.text_model(**enc).pooler_output)
        want = torch.nn.functional.cosine_similarity(a, b).numpy()
    got = np.array([r.scores["clip"]["clip_cosine"] for r in recs])
    np.testing.assert_allclose(got, want, atol=1e-5)
    m = s.aggregate(recs)
    assert m["clip"].value == pytest.approx(got.mean())
    assert m["clip_x100"].value == pytest.approx(100 * max(got.mean(), 0))


def test_specs_resolve():
    from mubench.specs import find_spec, load_yaml

    for name, year, res in (("coco", 2017, 512), ("coco2014-30k", 2014, 256)):
        _, path = find_spec("suites", name)
        spec = load_yaml(path)
        for meta in ("kind", "description", "model", "models"):  # spec metadata, not parameters
            spec.pop(meta, None)
        p = build_params(CocoParams, spec)
        assert p.year == year and p.fid.resolution == res and p.fid.protocol == "clean"
    with pytest.raises(UsageError):
        build_params(CocoParams, {"fid": {"protocol": "tf"}})


def test_import_folder_by_image_id(fake_coco, tmp_path):
    from mubench.suites.coco import import_folder

    cap, img_dir = fake_coco
    items = make_suite(cap, img_dir).items()
    d = tmp_path / "mine"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "000000001007.png")
    Image.new("RGB", (8, 8)).save(d / "1014.png")
    got = import_folder(d, items)
    assert [(s.item.meta["image_id"], s.image_index) for s in got] == [(1007, 0), (1014, 0)]
    Image.new("RGB", (8, 8)).save(d / "42.png")
    with pytest.raises(UsageError, match="42"):
        import_folder(d, items)


def test_reference_all_is_every_annotated_image_not_the_selection(fake_coco):
    """``reference: all`` (the 30k papers' full-set convention) compares against every image of the annotation
    file in image-id order, whatever subset of captions was selected; ``selected`` against the selection only."""
    cap, img_dir = fake_coco
    everything = make_suite(cap, img_dir, count=5, reference="all").reference_files()
    assert len(everything) == N
    assert [p.name for p in everything] == sorted(p.name for p in img_dir.glob("*.jpg"))
    selected = make_suite(cap, img_dir, count=5, reference="selected").reference_files()
    assert [p.name for p in selected] == [p.name for p in everything[:5]]


def test_protocol_records_the_fid_resize_filter(fake_coco):
    """The PIL filter of the shared centre-crop resize changes FID, so the run's protocol must name it."""
    cap, img_dir = fake_coco
    for resample in ("bicubic", "lanczos"):
        s = make_suite(cap, img_dir, fid={"resolution": 32, "resample": resample})
        assert s.protocol()["fid_resample"] == resample


def test_clip_keeps_captions_up_to_77_tokens():
    """CLIP's text side takes 77 tokens: a caption shorter than that is encoded whole (not cut earlier), so its
    cosine equals the one computed by hand from the full caption."""
    scorer = ClipScore(ClipScoreParams(), RANDOM, "clip")
    caption = "a small brown dog sits beside a red bicycle near the old wooden fence"  # 70 byte-level tokens
    assert 20 < len(scorer.tokenizer(caption).input_ids) <= 77
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = scorer.score(image, [PromptItem("0", caption, {})])[0]["clip_cosine"]
    with torch.no_grad():
        arr = [(image[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()]
        px = scorer.processor(images=arr, return_tensors="pt").pixel_values
        enc = scorer.tokenizer([caption], return_tensors="pt")
        a = scorer.model.visual_projection(scorer.model.vision_model(pixel_values=px).pooler_output)
        b = scorer.model.text_projection(scorer.model.text_model(**enc).pooler_output)
        want = float(torch.nn.functional.cosine_similarity(a.double(), b.double())[0])
    assert got == pytest.approx(want, abs=1e-6)


def _save_clip_folder(folder, extra_tokens: int):
    """A transformers CLIP folder of the tiny random CLIP (as a real ``clip-vit-large-patch14`` folder is laid out),
    its tokenizer grown by ``extra_tokens`` unused tokens."""
    from transformers import CLIPImageProcessor

    from mubench.scorers.geneval_detector import tiny_clip

    model, tok = tiny_clip(0)
    if extra_tokens:
        tok.add_tokens([f"<unused{i}>" for i in range(extra_tokens)])
        model.text_model.resize_token_embeddings(len(tok))
        model.config.text_config.vocab_size = len(tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_clip_from_a_local_folder_scores_as_the_same_weights_in_memory(tmp_path):
    """The real-weights branch: a CLIP folder (path=) loads offline, is fingerprinted by its files, and scores
    what the same weights score in memory; a folder whose tokenizer is a stand-in's (< 1000 tokens) or that holds
    no weights is refused with the folder named."""
    folder = _save_clip_folder(tmp_path / "clip", extra_tokens=600)
    ctx = ScorerContext(torch.device("cpu"))
    loaded = ClipScore(ClipScoreParams(path=str(folder)), ctx, "clip")
    in_memory = ClipScore(ClipScoreParams(), RANDOM, "clip")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    items = [PromptItem(str(i), p, {}) for i, p in enumerate(["a red bus", "two dogs on grass", "a clock tower"])]
    got = [r["clip_cosine"] for r in loaded.score(images, items)]
    want = [r["clip_cosine"] for r in in_memory.score(images, items)]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert len(set(np.round(got, 6))) == 3 and not loaded.weights_hash().startswith("random")
    assert loaded.describe()["backbone"] == "openai/clip-vit-large-patch14"

    small = _save_clip_folder(tmp_path / "small", extra_tokens=0)
    with pytest.raises(AssetError, match="has only 514 tokens"):
        ClipScore(ClipScoreParams(path=str(small)), ctx, "clip")
    (small / "model.safetensors").unlink()
    with pytest.raises(AssetError, match=f"cannot load CLIP from {small}"):
        ClipScore(ClipScoreParams(path=str(small)), ctx, "clip")
