"""The micro-art fine-tuning domain: its data (splits, style, oracle readability), its training source, its
micro-CLIP (zoo/micro-art) and the micro-art suite's wiring. The controls that run methods are in
tests/test_micro_controls.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mubench.errors import AssetError, UsageError
from mubench.micro import art as A
from mubench.micro import data as D
from mubench.micro import scene as S
from mubench.micro.oracle import Oracle
from mubench.micro.scorers import reference_scenes
from mubench.registry import load_registries

REPO = Path(__file__).resolve().parents[1]
TRAINABLE = ("full-ft", "dropout", "lora", "lora-micro", "maskunet", "maskunet-faithful")


def test_art_splits_are_deterministic_prefixes_and_disjoint_from_each_other_and_the_base():
    a = A.make_art_scenes("train", 12)
    assert [s.caption for s in A.make_art_scenes("train", 5)] == [s.caption for s in a[:5]]
    assert set(A.ART_SPLITS.values()).isdisjoint(D.SPLITS.values())
    assert len(set(A.ART_SPLITS.values())) == len(A.ART_SPLITS)
    with pytest.raises(UsageError, match="unknown micro-art split"):
        A.art_rng("compositional", 0)
    val = S.render_batch(A.make_art_scenes("val", 12))
    assert not np.array_equal(S.render_batch(a), val)


def test_art_style_is_a_dark_background_with_the_base_palette_and_captions():
    scenes = A.make_art_scenes("test", 200)
    bgs = np.array([s.background for s in scenes])
    assert bgs.max() < 80 and bgs[:, 2].mean() > bgs[:, 0].mean()  # dark and blue-tinted
    base_bg = np.array([s.background for s in D.make_scenes("test", 200)])
    assert base_bg.min() > 200
    for s in scenes:  # the base grammar: captions parse and describe the scene; colours are palette colours
        phrases, relation = S.parse_caption(s.caption)
        assert S.describes(phrases, relation, s.objects)
        assert all((o.color, o.shape) not in D.HELD_OUT for o in s.objects)


def test_the_oracle_reads_both_styles_alike():
    oracle = Oracle()
    for scenes in (A.make_art_scenes("test", 150), D.make_scenes("test", 150)):
        ok = [oracle.evaluate(oracle.detect(im), *S.parse_caption(s.caption))[0]
              for s, im in zip(scenes, S.render_batch(scenes))]
        assert np.mean(ok) == 1.0


def test_art_references_are_art_renders_of_the_caption():
    refs = reference_scenes("a red circle and a blue square", "test", 3, 4, "art")
    assert len(refs) == 4 and all(max(r.background) < 80 for r in refs)
    assert all(S.describes(*S.parse_caption("a red circle and a blue square"), r.objects) for r in refs)
    base = reference_scenes("a red circle and a blue square", "test", 3, 4)
    assert all(min(r.background) > 200 for r in base)
    with pytest.raises(UsageError, match="reference style"):
        reference_scenes("a red circle", "test", 0, 1, "pastel")


def test_micro_art_is_a_registered_training_source_with_its_own_fingerprint():
    regs = load_registries()
    src = regs.datasets.get("micro-art")
    fp = src.fingerprint()
    assert fp.startswith("micro-art-train:") and fp == src.fingerprint()
    assert fp != regs.datasets.get("micro").fingerprint()
    data = src.open(4, 42, 32)
    images, captions = data.source(0)
    assert images.shape == (4, 3, 32, 32) and len(captions) == 4
    assert float(images.mean()) < 0.35  # dark; the base stream's mean is above 0.8
    again, _ = src.open(4, 42, 32).source(0)
    assert np.array_equal(images.numpy(), again.numpy())
    with pytest.raises(UsageError, match="32px"):
        src.open(4, 42, 64)


@pytest.mark.parametrize("spec", TRAINABLE)
def test_trainable_specs_fine_tune_on_micro_art_for_model_micro(spec):
    doc = yaml.safe_load((REPO / "methods" / f"{spec}.yaml").read_text())
    train = doc["recipes"]["micro"]["train"]
    assert train["data"] == "micro-art" and train["steps"] == 400


def test_shipped_micro_art_clip_matches_its_manifest_and_reads_both_styles():
    folder = REPO / "zoo" / "micro-art"
    if not (folder / "manifest.json").is_file():
        pytest.skip("zoo/micro-art not built")
    from mubench.micro.assets import verify_all

    assert set(verify_all(folder)) == {"micro-clip.safetensors"}
    quality = json.loads((folder / "manifest.json").read_text())["quality"]
    for world in ("micro", "micro-art"):
        assert quality[world]["color_acc"] >= 0.95 and quality[world]["shape_acc"] >= 0.95, quality


def test_zoo_build_micro_art_writes_weights_and_manifest(tmp_path):
    from mubench.micro.art_clip import ArtClipBuildParams, build_micro_art

    manifest = build_micro_art(tmp_path, ArtClipBuildParams(steps=2), echo=False, evaluate=False)
    path = tmp_path / "micro-clip.safetensors"
    assert manifest["files"]["micro-clip.safetensors"]["bytes"] == path.stat().st_size
    assert (path.stat().st_mode & 0o777) == 0o644
    with pytest.raises(UsageError, match="art_fraction"):
        build_micro_art(tmp_path, ArtClipBuildParams(steps=1, art_fraction=1.5), echo=False, evaluate=False)


def test_mixed_clip_batches_hold_both_styles():
    from mubench.micro.art_clip import mixed_batches

    scenes, images = next(mixed_batches(8, 0, dict(D.DEFAULT_MIX), 0.5))
    dark = [max(s.background) < 80 for s in scenes]
    assert sum(dark) == 4 and images.shape == (8, 32, 32, 3)


def test_micro_art_suite_scores_with_the_art_clip_and_art_references():
    from mubench.suites.micro import MicroSuite, MicroSuiteParams
    from mubench.suites.micro_art import MicroArtSuite

    assert load_registries().suites.get("micro-art") is MicroArtSuite
    suite = MicroArtSuite(MicroSuiteParams(), "micro-art")
    micro = MicroSuite(MicroSuiteParams(), "micro")
    items = suite.items()
    assert items and all(it.meta["style"] == "art" for it in items)
    assert [it.prompt for it in items] == [it.prompt for it in micro.items()]
    assert suite.scorers()["art_clip"].params == {"world": "micro-art"} and suite.scorers()["clip"].params == {}
    assert suite.protocol() != micro.protocol() and suite.protocol()["world"] == "micro-art"
    spec = yaml.safe_load((REPO / "suites" / "micro-art.yaml").read_text())
    assert spec["kind"] == "micro-art" and spec["model"] == "micro"


def test_a_missing_world_clip_says_how_to_build_it(tmp_path, monkeypatch):
    import torch

    from mubench.micro import scorers as MS
    from mubench.scorers.base import ScorerContext

    monkeypatch.setattr(MS, "zoo_dir", lambda world="micro": tmp_path / world)
    ctx = ScorerContext(device=torch.device("cpu"), weights="pretrained")
    with pytest.raises(AssetError, match="mubench zoo build micro-art"):
        MS.MicroClipScorer(MS.MicroClipScorerParams(world="micro-art"), ctx, "micro-clip")


def test_micro_art_clip_is_the_art_clip_cosine_over_coco_prompts_only():
    """(clip read from the base micro-CLIP) and A2 (art clip averaged over every task's records)."""
    import numpy as np
    import pytest

    from mubench.suites.base import PromptItem, SampleRecord
    from mubench.suites.micro import MicroSuiteParams
    from mubench.suites.micro_art import MicroArtSuite

    suite = MicroArtSuite(MicroSuiteParams(bootstrap_resamples=0), "micro-art")
    recs = []
    for k in range(3):
        item = PromptItem(f"coco/{k:04d}", "a circle", {"task": "coco", "style": "art"})
        scores = {"clip": {"clip": 0.9, "features": np.zeros(4), "ref_features": np.zeros((1, 4))},
                  "art_clip": {"clip": 0.1 * (k + 1)}, "oracle": {"correct": True}}
        recs.append(SampleRecord(item, 0, k, f"c{k}", "", scores))
    other = PromptItem("colors/0000", "a red circle", {"task": "colors", "style": "art"})
    recs.append(SampleRecord(other, 0, 9, "o", "", {"clip": {"clip": 0.9}, "art_clip": {"clip": 0.9},
                                                    "oracle": {"correct": True}}))
    units = suite.units(recs)
    assert units["clip"].value() == pytest.approx(0.2) and units["clip"].n == 3


def test_micro_art_protocol_names_its_own_references_and_clip():
    """the protocol (hashed into every run) says the FID reference is art-style and clip the art micro-CLIP's."""
    from mubench.suites.micro import MicroSuite, MicroSuiteParams
    from mubench.suites.micro_art import MicroArtSuite

    art = MicroArtSuite(MicroSuiteParams(), "micro-art").protocol()
    base = MicroSuite(MicroSuiteParams(), "micro").protocol()
    assert art["fid_reference"] != base["fid_reference"] and "art" in art["fid_reference"]
    assert art["clip_score"] != base["clip_score"] and "micro-art" in art["clip_score"]
    assert set(art) == set(base) | {"style", "art_background"}
