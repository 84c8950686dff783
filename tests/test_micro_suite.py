"""Suite ``micro``: prompt sets, the scorers on rendered images, and aggregation on crafted records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mubench.builtins import register_builtins
from mubench.config import build_params
from mubench.specs import find_spec, load_yaml
from mubench.metrics.fid import fid_from_features
from mubench.micro import data as D
from mubench.micro import scene as S
from mubench.micro.clip import uint8_to_float
from mubench.micro.scorers import MicroClipScorer, MicroClipScorerParams, MicroOracleScorer, reference_scenes
from mubench.micro.oracle import OracleParams
from mubench.registry import Registries
from mubench.scorers.base import ScorerContext
from mubench.suites.base import PromptItem, SampleRecord
from mubench.suites.micro import GENEVAL_TASKS, MicroSuite, MicroSuiteParams

METRICS = {"fid", "clip", "color", "shape", "texture", *GENEVAL_TASKS, "overall"}


def small_params(**kw) -> MicroSuiteParams:
    counts = dict(coco=6, color=3, shape=3, texture=3, single_object=3, two_object=3, counting=3, colors=3,
                  position=4, color_attr=3)
    counts.update(kw)
    return MicroSuiteParams(**counts, bootstrap_resamples=200)


def test_spec_and_registry():
    data = load_yaml(find_spec("suites", "micro")[1])
    assert data["kind"] == "micro"
    from mubench.config import SUITE_MODEL_KEYS

    meta = ("kind", "description", *SUITE_MODEL_KEYS)
    params = build_params(MicroSuiteParams, {k: v for k, v in data.items() if k not in meta}, where="suite.")
    assert params == MicroSuiteParams()  # the spec states the defaults explicitly
    assert params.sampler.steps == 20 and params.sampler.guidance == 4.0 and params.sampler.scheduler == "ddim"
    regs = Registries()
    register_builtins(regs)
    assert regs.suites.get("micro") is MicroSuite
    assert regs.scorers.get("micro-clip") is MicroClipScorer and regs.scorers.get("micro-oracle") is MicroOracleScorer


def _render_records(suite: MicroSuite, scorers, use_truth: bool = True):
    """Records whose 'generated' image is a real render of the prompt (a perfect model)."""
    records = []
    for n, item in enumerate(suite.items()):
        phrases, relation = S.parse_caption(item.prompt)
        scene = D.realize(phrases, relation, np.random.default_rng(n), "compositional")
        img = uint8_to_float(S.render(scene)[None])
        scores = {name: s.score(img, [item])[0] for name, s in scorers.items()}
        records.append(SampleRecord(item, 0, n, f"k{n}", "", scores))
    return records


@pytest.fixture(scope="module")
def scorers():
    ctx = ScorerContext(torch.device("cpu"), weights="random")
    return {"clip": MicroClipScorer(MicroClipScorerParams(), ctx, "clip"),
            "oracle": MicroOracleScorer(OracleParams(), ctx, "oracle")}


def test_real_renders_score_perfectly(scorers):
    suite = MicroSuite(small_params(coco=70), "micro")
    metrics = suite.aggregate(_render_records(suite, scorers))
    assert set(metrics) == METRICS
    for name in ("color", "shape", "texture", *GENEVAL_TASKS, "overall"):
        assert metrics[name].value == 1.0, name
    assert metrics["fid"].higher_is_better is False and metrics["fid"].n == 70 and metrics["fid"].ci_low < metrics["fid"].value < metrics["fid"].ci_high
    assert np.isfinite(metrics["fid"].value) and metrics["fid"].value >= 0
    assert -1 <= metrics["clip"].value <= 1 and metrics["clip"].ci_low <= metrics["clip"].value


def test_blank_images_fail_with_reasons(scorers):
    suite = MicroSuite(small_params(), "micro")
    items = suite.items()
    blank = torch.full((len(items), 3, 32, 32), 0.9)
    res = scorers["oracle"].score(blank, items)
    assert all(r["n_objects"] == 0 and r["correct"] is False and r["reason"].startswith("expected") for r in res)
    binding = [r for r, it in zip(res, items) if it.meta["task"] == "color"]
    assert binding and all(r["binding_score"] == 0.0 and "no " in r["binding_reason"] for r in binding)


def _crafted(task: str, k: int, oracle: dict, clip: dict | None = None, image_index: int = 0) -> SampleRecord:
    item = PromptItem(f"{task}/{k:04d}", "a circle", {"task": task})
    return SampleRecord(item, image_index, 0, f"{task}{k}{image_index}", "", {"oracle": oracle, "clip": clip or {}})


def test_aggregation_reproduces_hand_computed_values():
    suite = MicroSuite(small_params(), "micro")
    recs = []
    # GenEval analogue: task means 2/4, 1/2, 1/1, 0/2, 3/3, 1/4 -> overall = mean of task means
    pattern = {"single_object": [1, 0, 1, 0], "two_object": [1, 0], "counting": [1], "colors": [0, 0],
               "position": [1, 1, 1], "color_attr": [0, 0, 1, 0]}
    for task, vals in pattern.items():
        for k, v in enumerate(vals):
            recs.append(_crafted(task, k, {"correct": bool(v), "reason": "" if v else "x"}))
    # binding: color 0.5, 1, 0 -> 0.5; two images of one prompt for texture
    for k, v in enumerate([0.5, 1.0, 0.0]):
        recs.append(_crafted("color", k, {"binding_score": v, "correct": False}))
    recs.append(_crafted("texture", 0, {"binding_score": 1.0, "correct": True}, image_index=0))
    recs.append(_crafted("texture", 0, {"binding_score": 0.5, "correct": False}, image_index=1))
    # COCO analogue: clip mean, FID of crafted features against reference rows picked by image index
    rng = np.random.default_rng(0)
    gen = rng.normal(size=(80, 4))
    ref = rng.normal(0.5, 1.0, size=(80, 2, 4))
    for k in range(40):
        for j in range(2):
            recs.append(_crafted("coco", k, {"correct": True}, {"clip": 0.1 * (k % 3), "features": gen[2 * k + j],
                                                                  "ref_features": ref[k]}, image_index=j))
    m = suite.aggregate(recs)
    assert m["single_object"].value == 0.5 and m["two_object"].value == 0.5 and m["counting"].value == 1.0
    assert m["colors"].value == 0.0 and m["position"].value == 1.0 and m["color_attr"].value == 0.25
    assert m["overall"].value == pytest.approx((0.5 + 0.5 + 1 + 0 + 1 + 0.25) / 6)
    assert m["overall"].n == 16 and m["overall"].ci_low <= m["overall"].value <= m["overall"].ci_high
    assert m["color"].value == pytest.approx(0.5) and m["texture"].value == pytest.approx(0.75)
    assert m["texture"].n == 2 and "shape" not in m
    assert m["clip"].value == pytest.approx(np.mean([0.1 * (k % 3) for k in range(40) for _ in range(2)]))
    want = fid_from_features(gen, np.stack([ref[k][j] for k in range(40) for j in range(2)]))
    assert m["fid"].value == pytest.approx(want, rel=1e-9) and m["fid"].n == 80
    assert m["colors"].ci_low == m["colors"].ci_high == 0.0


def test_fid_is_omitted_below_feature_dim_unless_forced(scorers):
    suite = MicroSuite(small_params(coco=5), "micro")
    recs = [r for r in _render_records(suite, scorers) if r.item.meta["task"] == "coco"]
    with pytest.warns(UserWarning, match="fid skipped: this run has 5 coco images"):  # said before generation
        suite.check_size(suite.items())
    assert "fid" not in suite.aggregate(recs)
    forced = MicroSuite(small_params(coco=5), "micro")
    forced.params.fid.force = True
    assert np.isfinite(forced.aggregate(recs)["fid"].value)


def test_reference_scenes_are_deterministic_and_true_to_caption():
    a = reference_scenes("two red squares", "test", 3, 2)
    assert a == reference_scenes("two red squares", "test", 3, 2) and a[0] != a[1]
    assert all(S.describes(*S.parse_caption("two red squares"), s.objects) for s in a)


def test_the_protocol_does_not_depend_on_where_the_checkout_is():
    """Scorers record weights by file name and sha256, never by absolute path, so a run's protocol hash (and with it
    `mubench check` against a committed baseline) is the same in every clone."""
    import json

    ctx = ScorerContext(torch.device("cpu"))  # the shipped micro-CLIP weights
    described = json.dumps(MicroClipScorer(MicroClipScorerParams(), ctx, "clip").describe())
    assert "micro-clip.safetensors" in described
    assert str(Path(__file__).resolve().parents[1]) not in described


def test_score_finds_images_under_prompt_ids_with_slashes(tmp_path):
    # `mubench score images=DIR` names images DIR/<prompt id>/<image index>.png; micro's ids hold a slash
    suite = MicroSuite(small_params(), "micro")
    items = suite.items()[:3]
    assert all("/" in it.id for it in items)
    for it in items[:2]:
        (tmp_path / it.id).mkdir(parents=True)
        for name in ("0.png", "1.png", "notes.png"):
            (tmp_path / it.id / name).write_bytes(b"")
    found = suite.import_images(tmp_path, items)
    assert [(f.item.id, f.image_index) for f in found] == [(it.id, k) for it in items[:2] for k in (0, 1)]


def test_scores_are_cached_per_prompt_not_per_pixels(tmp_path):
    # the same picture under two prompts must get each prompt's scores (the score cache was keyed by pixels alone)
    import json

    from conftest import run_cli
    from PIL import Image

    suite = MicroSuite(MicroSuiteParams(), "micro")
    first, second = suite.items()[:2]
    picture = np.zeros((32, 32, 3), np.uint8)
    picture[8:24, 8:24] = (200, 30, 30)
    for it in (first, second):
        (tmp_path / "ext" / it.id).mkdir(parents=True)
        Image.fromarray(picture).save(tmp_path / "ext" / it.id / "0.png")
    proc = run_cli("score", "suite=micro", "limit=2", f"images={tmp_path / 'ext'}", f"out={tmp_path / 'out'}",
                   f"store={tmp_path / 's.sqlite'}", f"cache={tmp_path / 'cache'}")
    assert proc.returncode == 0, proc.stderr
    rows = {r["prompt_id"]: r for r in map(json.loads, (tmp_path / "out" / "samples.jsonl").read_text().splitlines())}
    assert rows[first.id]["key"] == rows[second.id]["key"]  # one cached picture
    assert rows[first.id]["scores"]["clip"]["clip"] != rows[second.id]["scores"]["clip"]["clip"]


def test_the_score_key_follows_the_prompt_and_its_metadata():
    from mubench.runner import PlannedSample

    item = PromptItem("coco/0000", "a red circle", {"task": "coco", "references": 1})
    keys = {PlannedSample(it, 0, 1, "k").score_key for it in
            (item, PromptItem(item.id, "a blue circle", item.meta), PromptItem(item.id, item.prompt,
                                                                              {**item.meta, "references": 2}))}
    assert len(keys) == 3 and all(k.startswith("k-") for k in keys)
    assert PlannedSample(item, 0, 1, "k").score_key == PlannedSample(item, 5, 9, "k").score_key  # key-only inputs


def test_references_show_an_unnamed_fill_as_the_scenes_behind_such_captions_do():
    """A caption that names no fill was drawn mostly from solid scenes (P(striped | unnamed) ≈ 0.067, not the prior
    0.35): the held-out references must show the same, or every FID carries a reference mismatch (~1.5 at n = 240).
    The micro-class classes keep the prior fill, as their scenes (and micro-dit's training data) draw it."""
    from mubench.suites.micro import PROMPT_SEED, _kind

    true_share, ref_share, class_share = [], [], []
    for k in range(3000):
        rng = D.scene_rng("test", k, PROMPT_SEED)
        scene = D.generate_scene(rng, _kind(rng), "test")
        unnamed = [p for p in scene.phrases if p.fill is None]
        if not unnamed:
            continue
        shapes = {p.shape for p in unnamed}
        true_share += [o.fill == "striped" for o in scene.objects if o.shape in shapes]
        ref = reference_scenes(scene.caption, "test", k, 1)[0]
        ref_share += [o.fill == "striped" for o in ref.objects if o.shape in shapes]
    for k in range(1500):
        ref = reference_scenes("a red circle", "test", k, 1, style="class")[0]
        class_share.append(ref.objects[0].fill == "striped")
    assert abs(S.P_STRIPED_UNNAMED - 0.35 * 0.1 / (0.35 * 0.1 + 0.65 * 0.75)) < 1e-12
    assert abs(np.mean(true_share) - S.P_STRIPED_UNNAMED) < 0.03
    assert abs(np.mean(ref_share) - np.mean(true_share)) < 0.03
    assert abs(np.mean(class_share) - S.P_STRIPED) < 0.04


def test_fid_is_reported_at_exactly_as_many_images_as_feature_dimensions():
    """n == dim is enough (fid_from_features refuses only n < dim, and check_size says nothing there); the suite
    must not drop fid silently at the boundary."""
    import warnings

    import numpy as np

    from mubench.suites.base import PromptItem, SampleRecord
    from mubench.suites.micro import MicroSuite, MicroSuiteParams

    suite = MicroSuite(MicroSuiteParams(bootstrap_resamples=50), "micro")
    rng = np.random.default_rng(0)
    dim = 4
    recs = []
    for k in range(dim):  # n == dim coco images with dim-dimensional features
        item = PromptItem(f"coco/{k:04d}", "a circle", {"task": "coco"})
        scores = {"clip": {"clip": 0.5, "features": rng.normal(size=dim), "ref_features": rng.normal(size=(1, dim))}}
        recs.append(SampleRecord(item, 0, k, f"k{k}", "", scores))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm of a rank-deficient covariance
        m = suite.aggregate(recs)
    assert "fid" in m and m["fid"].n == dim


def test_check_size_is_silent_at_exactly_the_feature_dimension():
    """64 coco images (micro-CLIP's 64 feature dimensions) are enough; no 'fid skipped' warning."""
    import warnings

    from mubench.micro.clip import MicroClipConfig
    from mubench.suites.micro import MicroSuite, MicroSuiteParams

    dim = MicroClipConfig().feature_dim
    suite = MicroSuite(MicroSuiteParams(coco=dim), "micro")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        suite.check_size(suite.items())
    assert not [w for w in seen if "fid skipped" in str(w.message)]
    fewer = MicroSuite(MicroSuiteParams(coco=dim - 1), "micro")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fewer.check_size(fewer.items())
    assert [w for w in seen if "fid skipped" in str(w.message)]


@pytest.mark.parametrize("suite", ["micro", "micro-class", "micro-art"])
def test_more_images_per_prompt_than_reference_renders_is_refused_up_front(suite, regs):
    """Reference render k of prompt `key` is seeded key * 64 + k: a 65th image would be compared with the next
    prompt's first render. Refused when the suite is built, not after the images are made."""
    from mubench.config import resolve
    from mubench.errors import UsageError
    from mubench.micro.scorers import reference_scenes

    def build(ipp: int):
        comp = resolve([f"suite={suite}", f"suite.images_per_prompt={ipp}"], regs).suite
        return regs.suites.get(comp.kind)(comp.params, suite)

    assert build(64).params.images_per_prompt == 64
    with pytest.raises(UsageError, match="images_per_prompt must be <= 64"):
        build(65)
    with pytest.raises(UsageError, match="at most 64 reference renders"):
        reference_scenes("a red circle", "test", 0, 65)

