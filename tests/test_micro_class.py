"""The micro world's class-conditional counterpart: its class data, the micro-dit model and zoo build, and the
micro-class suite end to end (random weights; the shipped weights are exercised when zoo/micro-dit exists)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import REPO, run_cli
from mubench.errors import AssetError
from mubench.micro import classes as C
from mubench.micro import data as D
from mubench.micro import scene as S
from mubench.micro.dit import DiTBuildParams, MicroDiTModel, MicroDiTParams, build_micro_dit
from mubench.micro.oracle import Oracle
from mubench.models.base import LoadContext
from mubench.suites.base import SampleRecord
from mubench.suites.micro import MicroFidParams
from mubench.suites.micro_class import MicroClassParams, MicroClassSuite

CPU = LoadContext(torch.device("cpu"), torch.float32, "random")


def test_classes_are_the_trainable_colour_shape_pairs():
    pairs = C.class_pairs()
    assert len(pairs) == C.NUM_CLASSES == 15 and not set(pairs) & set(D.HELD_OUT)
    assert C.class_names()[0] == "a red circle"
    for name, (c, s) in zip(C.class_names(), pairs):
        assert S.parse_caption(name) == ((S.Phrase(s, c),), None)


def test_class_stream_is_deterministic_and_images_show_their_class():
    a_img, a_lab = next(C.iterate_class_batches("train", 30, 0))
    b_img, b_lab = next(C.iterate_class_batches("train", 30, 0))
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(next(C.iterate_class_batches("train", 30, 1))[1], a_lab)
    assert len(set(a_lab.tolist())) > 5
    oracle = Oracle()
    for img, label in zip(a_img, a_lab):
        top = oracle.detect(img)[0]
        assert (top.color, top.shape) == C.class_pairs()[label]


def test_micro_dit_random_and_missing_weights(tmp_path):
    bundle = MicroDiTModel.load(MicroDiTParams(), CPU)
    assert bundle.conditioning_kind == "class" and bundle.resolution == 32
    assert bundle.conditioner.encode(["a red circle", "", 3]).class_labels.tolist() == [0, 15, 3]
    assert bundle.codec.latent_shape(32, 32) == (12, 16, 16)
    with pytest.raises(AssetError, match="zoo build micro-dit"):
        MicroDiTModel.load(MicroDiTParams(path=str(tmp_path)), LoadContext(torch.device("cpu"), torch.float32))


def test_zoo_build_writes_verified_weights_that_load(tmp_path):
    p = DiTBuildParams(steps=3, width=16, heads=2, layers=2, batch_size=4, checkpoint_every=2, log_every=1,
                       eval_per_class=2)
    manifest = build_micro_dit(tmp_path, p, show_progress=False, echo=False, evaluate=True)
    assert manifest["recipe"]["steps_done"] == 3 and manifest["configs"]["transformer"]["num_layers"] == 2
    assert set(manifest["quality"]["base"]) >= {"color", "shape", "both", "single_object"}
    assert manifest["quality"]["random_mask_0_5"]["zeroed_weights"] > 0
    ctx = LoadContext(torch.device("cpu"), torch.float32)
    bundle = MicroDiTModel.load(MicroDiTParams(path=str(tmp_path)), ctx)
    assert bundle.fingerprint == "micro-dit:" + manifest["files"]["dit.safetensors"]["sha256"][:16]
    again = build_micro_dit(tmp_path, p, show_progress=False, echo=False, evaluate=False)  # resumes: nothing to do
    assert again["files"] == manifest["files"]
    weights = tmp_path / "dit.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(AssetError, match="checksum mismatch"):
        MicroDiTModel.load(MicroDiTParams(path=str(tmp_path)), ctx)


def test_suite_items_are_interleaved_class_prompts():
    items = MicroClassSuite(MicroClassParams(per_class=2), "micro-class").items()
    assert len(items) == 30
    assert [it.meta["label"] for it in items[:16]] == list(range(15)) + [0]
    assert items[15].id == "class-00/0001" and items[0].prompt == "a red circle"
    assert len({it.meta["key"] for it in items}) == 30


def test_aggregate_counts_the_largest_object():
    suite = MicroClassSuite(MicroClassParams(per_class=1, bootstrap_resamples=50), "micro-class")
    items = suite.items()[:3]
    objects = [[{"color": "red", "shape": "circle"}],  # right
               [{"color": "red", "shape": "circle"}, {"color": "red", "shape": "square"}],  # largest is wrong shape
               []]  # nothing drawn
    recs = []
    for k, (item, objs) in enumerate(zip(items, objects)):
        scores = {"oracle": {"objects": objs, "correct": k == 0}, "clip": {"clip": 0.5, "features": np.zeros(4), "ref_features": np.zeros((1, 4))}}
        recs.append(SampleRecord(item, 0, k, str(k), "", scores))
    with pytest.warns(UserWarning, match="no fid"):
        m = suite.aggregate(recs)
    assert items[1].meta["shape"] == "square" and items[1].meta["color"] == "red"
    assert m["accuracy"].value == pytest.approx(1 / 3) and m["color_accuracy"].value == pytest.approx(2 / 3)
    assert m["shape_accuracy"].value == pytest.approx(1 / 3) and m["single_object"].value == pytest.approx(1 / 3)
    assert "fid" not in m  # 3 images < the feature dimension: refused unless forced


@pytest.mark.slow
def test_micro_class_end_to_end_with_maskunet_trained_on_demand(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", "suite=micro-class", "model=micro-dit", "method=maskunet", "weights=random", "limit=15",
                   "method.train.steps=2", "suite.fid.force=true", "--no-progress", f"out={out}",
                   f"cache={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert set(res["metrics"]) == {"accuracy", "color_accuracy", "shape_accuracy", "single_object", "clip", "fid"}
    assert res["metrics"]["accuracy"]["n"] == 15
    info = res["method_info"]
    assert info["masked_layers"] == 12 and info["decoder_blocks"] == "3-5"  # micro-dit: 6 blocks, attn1 q/k/v/o
    assert info["training"]["steps"] == 2 and info["training"]["data"]["kind"] == "micro-class"


@pytest.mark.skipif(not (REPO / "zoo" / "micro-dit" / "manifest.json").is_file(), reason="zoo/micro-dit not built")
def test_shipped_micro_dit_draws_its_classes():
    from mubench.methods.base import Prepared
    from mubench.micro.build_common import score_single_object
    from mubench.sampler import SamplerConfig, sample_images

    bundle = MicroDiTModel.load(MicroDiTParams(), LoadContext(torch.device("cpu"), torch.float32))
    names = C.class_names()
    cfg = SamplerConfig(resolution=32, **bundle.default_sampler)
    images = sample_images(bundle, Prepared(bundle.denoiser), names, list(range(15)), cfg, per_image=False)
    got = score_single_object(images, [(n, c, s) for n, (c, s) in zip(names, C.class_pairs())])
    assert got["color"] >= 0.8  # colour is learned early; the manifest records the full quality check


@pytest.mark.filterwarnings("ignore")  # the run's "few prompts" warnings
def test_prompts_the_class_model_cannot_encode_stop_the_run_before_the_method_prepares(regs, tmp_path, monkeypatch):
    """A text suite on a class-conditional model is refused right after loading: a trainable method would otherwise
    train (minutes) before the first image found the prompt it cannot encode."""
    from mubench.config import resolve
    from mubench.errors import UsageError
    from mubench.runner import Runner

    prepared = []
    monkeypatch.setattr(Runner, "prepare", lambda self, bundle: prepared.append(1))
    args = ["suite=micro", "model=micro-dit", "method=sd", "limit=2", "weights=random", "device=cpu",
            f"cache={tmp_path}"]
    with pytest.raises(UsageError, match="not a class index"):
        Runner(resolve(args, regs), regs).execute()
    assert prepared == []


def test_fid_pairs_each_image_with_its_own_reference_row():
    """with images_per_prompt=2, image j's reference is row j of its prompt's ref_features."""
    import numpy as np
    import pytest

    from mubench.metrics.fid import fid_from_features
    from mubench.suites.base import SampleRecord
    from mubench.suites.micro_class import MicroClassParams, MicroClassSuite

    suite = MicroClassSuite(MicroClassParams(per_class=1, images_per_prompt=2, bootstrap_resamples=0), "micro-class")
    rng = np.random.default_rng(0)
    gen, ref = rng.normal(size=(16, 4)), rng.normal(0.5, 1.0, size=(8, 2, 4))
    recs = []
    for k, item in enumerate(suite.items()[:8]):
        for j in range(2):
            scores = {"oracle": {"objects": [], "correct": False},
                      "clip": {"clip": 0.0, "features": gen[2 * k + j], "ref_features": ref[k]}}
            recs.append(SampleRecord(item, j, 0, f"{k}-{j}", "", scores))
    m = suite.aggregate(recs)
    want = fid_from_features(gen, np.stack([ref[k][j] for k in range(8) for j in range(2)]))
    assert m["fid"].value == pytest.approx(want, rel=1e-9) and m["fid"].n == 16


def test_single_object_is_the_oracle_verdict_not_class_accuracy():
    """single_object follows the oracle's GenEval verdict, which can differ from the largest-object accuracy."""
    import numpy as np
    import pytest

    from mubench.suites.base import SampleRecord
    from mubench.suites.micro_class import MicroClassParams, MicroClassSuite

    suite = MicroClassSuite(MicroClassParams(per_class=1, bootstrap_resamples=0), "micro-class")
    item = suite.items()[0]  # a red circle
    objs = [{"color": "blue", "shape": "circle"}, {"color": "red", "shape": "circle"}]  # largest has the wrong colour
    clip = {"clip": 0.0, "features": np.zeros(4), "ref_features": np.zeros((1, 4))}
    scores = {"oracle": {"objects": objs, "correct": True}, "clip": clip}
    units = suite.units([SampleRecord(item, 0, 0, "k", "", scores)])
    assert units["accuracy"].value() == 0.0 and units["single_object"].value() == pytest.approx(1.0)


def test_reference_settings_reach_the_prompts():
    """The class prompts' keys, their reference count (one per image) and suite.split reach the reference renders."""
    from mubench.suites.micro import MicroSuite, MicroSuiteParams
    from mubench.suites.micro_class import MicroClassParams, MicroClassSuite

    items = MicroClassSuite(MicroClassParams(per_class=2, images_per_prompt=3, split="val"), "micro-class").items()
    assert all(it.meta["references"] == 3 and it.meta["split"] == "val" for it in items)
    # the keys seed the held-out reference renders: those of the micro suite's reference-bearing (coco) prompts must
    # not be reused (the micro suite's color_attr keys, 900_000 + k, share the range; they seed no render)
    micro_keys = {it.meta["key"] for it in MicroSuite(MicroSuiteParams(), "micro").items() if it.meta.get("references")}
    assert not {it.meta["key"] for it in items} & micro_keys


def _class_records(suite, n, dim=4, seed=0, ref_dim=None):
    """n single-image records of the suite's first n prompts, each largest object right, random CLIP features."""
    rng = np.random.default_rng(seed)
    recs = []
    for k, item in enumerate(suite.items()[:n]):
        objs = [{"color": item.meta["color"], "shape": item.meta["shape"]}]
        clip = {"clip": 0.25, "features": rng.normal(size=dim), "ref_features": rng.normal(size=(1, ref_dim or dim))}
        recs.append(SampleRecord(item, 0, k, str(k), "", {"oracle": {"objects": objs, "correct": True}, "clip": clip}))
    return recs


def test_prompt_ids_number_each_class_s_prompts():
    """Prompt k is ``class-<k mod 15>/<k // 15>``: every id is unique and the number after the slash counts that
    class's prompts 0, 1, 2, ... (with per_class=3, prompt 30 is class 0's third prompt)."""
    items = MicroClassSuite(MicroClassParams(per_class=3), "micro-class").items()
    assert len({it.id for it in items}) == len(items) == 45
    assert items[30].id == "class-00/0002" and items[44].id == "class-14/0002" and items[16].id == "class-01/0001"
    for k, it in enumerate(items):
        assert it.id == f"class-{k % 15:02d}/{k // 15:04d}" and it.meta["label"] == k % 15


def test_reference_keys_and_style_are_the_pinned_protocol():
    """The held-out references are seeded by keys 900000 + k (fixed: another offset would change every reference and
    FID) and rendered in the class style (fills as the class scenes draw them), which the micro scorer accepts."""
    from mubench.micro.scorers import reference_scenes

    items = MicroClassSuite(MicroClassParams(per_class=1), "micro-class").items()
    assert [it.meta["key"] for it in items] == list(range(900_000, 900_015))
    assert {it.meta["style"] for it in items} == {"class"}
    scene = reference_scenes(items[0].prompt, items[0].meta["split"], items[0].meta["key"], 1,
                             style=items[0].meta["style"])[0]
    assert (scene.objects[0].color, scene.objects[0].shape) == C.class_pairs()[0]


def test_protocol_records_split_and_forced_fid():
    """The protocol names the reference split actually used (its class-data fingerprint too) and whether FID was
    forced."""
    p = MicroClassSuite(MicroClassParams(split="val", fid=MicroFidParams(force=True)), "micro-class").protocol()
    assert p["fid_forced"] is True and "(val split)" in p["fid_reference"]
    assert p["class_data"] == C.class_fingerprint("val") != C.class_fingerprint("test")
    assert MicroClassSuite(MicroClassParams(), "micro-class").protocol()["fid_forced"] is False


def test_bootstrap_resamples_set_every_metric_s_ci_and_directions_are_right():
    """suite.bootstrap_resamples governs all CIs (0 = none at all); accuracy-type metrics and the CLIP score are
    higher-is-better, FID lower-is-better."""
    params = MicroClassParams(per_class=1, bootstrap_resamples=0, fid=MicroFidParams(force=True))
    suite = MicroClassSuite(params, "micro-class")
    m = suite.aggregate(_class_records(suite, 6))
    assert set(m) == {"accuracy", "color_accuracy", "shape_accuracy", "single_object", "clip", "fid"}
    assert all(v.ci_low is None and v.ci_high is None for v in m.values())
    assert all(m[k].higher_is_better is True for k in m if k != "fid") and m["fid"].higher_is_better is False
    suite = MicroClassSuite(MicroClassParams(per_class=1, bootstrap_resamples=50), "micro-class")
    m = suite.aggregate(_class_records(suite, 6))  # 6 images >= 4 feature dimensions: FID without forcing
    assert "fid" in m and all(v.ci_low is not None for v in m.values())


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # forced FID of 2 images in 4 dimensions
def test_fid_needs_two_images_and_is_computed_from_two_when_forced():
    """FID's unit data exist from two images on (forced FID is then reported); one image has no FID and no error."""
    from mubench.metrics.fid import fid_from_features

    params = MicroClassParams(per_class=1, bootstrap_resamples=0, fid=MicroFidParams(force=True))
    suite = MicroClassSuite(params, "micro-class")
    one = _class_records(suite, 1)
    assert "fid" not in suite.units(one) and "fid" not in suite.aggregate(one)
    two = _class_records(suite, 2)
    m = suite.aggregate(two)
    gen = np.stack([r.scores["clip"]["features"] for r in two])
    ref = np.stack([r.scores["clip"]["ref_features"][0] for r in two])
    assert m["fid"].value == pytest.approx(fid_from_features(gen, ref, force=True), rel=1e-9) and m["fid"].n == 2


def test_no_records_no_metrics():
    """An empty record list gives no unit data and no metrics."""
    suite = MicroClassSuite(MicroClassParams(per_class=1), "micro-class")
    assert suite.units([]) == {} and suite.aggregate([]) == {}
