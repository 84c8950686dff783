"""The imagenet suite: seeded uniform labels, the ADM metrics (IS, precision / recall) checked against direct
computations, and the whole flow on a tiny random DiT with a fake ADM reference batch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from mubench.config import build_params
from mubench.errors import AssetError, UsageError
from mubench.suites.base import PromptItem, SampleRecord
from mubench.suites.imagenet import (ImageNetParams, ImageNetSuite, fid_label, inception_score, manifold_radii,
                                     precision_recall, uniform_labels)


def test_labels_are_uniform_seeded_and_prefix_stable():
    a = uniform_labels(5000, 1000, 0)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() <= 999
    assert np.array_equal(a[:100], uniform_labels(100, 1000, 0))  # limit=N takes the same first labels
    assert not np.array_equal(a[:100], uniform_labels(100, 1000, 1))
    counts = np.bincount(uniform_labels(50000, 1000, 0), minlength=1000)
    assert counts.min() > 20 and counts.max() < 85 and len(set(counts.tolist())) > 1  # random, not balanced
    items = ImageNetSuite(ImageNetParams(count=3), "imagenet").items()
    assert [it.id for it in items] == ["000000", "000001", "000002"]
    assert [it.prompt for it in items] == uniform_labels(3, 1000, 0).tolist()


def test_inception_score_on_known_distributions():
    uniform = np.full((10, 4), 0.25)
    assert inception_score(uniform) == pytest.approx(1.0)
    eye = np.eye(4)[np.arange(8) % 4] * (1 - 4e-12) + 1e-12  # confident and evenly spread: IS = #classes
    assert inception_score(eye) == pytest.approx(4.0, rel=1e-6)
    # splits: two halves scored separately and averaged
    mixed = np.concatenate([eye, uniform[:8]])
    assert inception_score(mixed, split_size=8) == pytest.approx((4.0 + 1.0) / 2, rel=1e-6)


def _pr_bruteforce(ref, smp, k):
    def radii(x):
        d = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sort(d, 1)[:, k]

    d = ((ref[:, None] - smp[None]) ** 2).sum(-1)
    rr, rs = radii(ref), radii(smp)
    precision = np.mean([(d[:, j] <= rr).any() for j in range(len(smp))])
    recall = np.mean([(d[i, :] <= rs).any() for i in range(len(ref))])
    return precision, recall


def test_precision_recall_match_a_direct_computation():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 5)).astype(np.float32)
    smp = (rng.normal(size=(30, 5)) * 0.5 + 1.0).astype(np.float32)
    got = precision_recall(ref, smp, k=3, batch=7)  # small batches exercise the blocking
    want = _pr_bruteforce(ref.astype(np.float64), smp.astype(np.float64), 3)
    assert got == pytest.approx(want, abs=1e-9)
    assert 0 < got[0] < 1 and 0 < got[1] < 1
    assert precision_recall(ref, ref, k=3) == (1.0, 1.0)
    radii = manifold_radii(ref, k=1)
    d = ((ref[:, None] - ref[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert np.allclose(radii, d.min(1), rtol=1e-4)


def test_fid_label_names_n():
    assert fid_label(5000) == "FID-5K (ADM ref)" and fid_label(50000) == "FID-50K (ADM ref)"
    assert fid_label(12) == "FID-12 (ADM ref)"


def test_missing_reference_batch_is_an_asset_error(tmp_path):
    proc = run_cli("run", "suite=imagenet", "model=dit", "weights=random", "model.arch=tiny", "limit=2",
                   f"suite.reference={tmp_path / 'nope.npz'}", "--no-progress")
    assert proc.returncode == 2
    assert "adm-ref-imagenet256" in proc.stderr and "nothing is downloaded" in proc.stderr


def fake_reference_batch(path, images: int):
    """An ADM-style reference batch for a tiny run: statistics of random 16-d features and ``images`` 16² images."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 16))
    np.savez(path, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False),
             arr_0=rng.integers(0, 256, size=(images, 16, 16, 3), dtype=np.uint8))
    return path


@pytest.mark.slow
def test_imagenet_end_to_end_on_tiny_dit(tmp_path):
    ref = fake_reference_batch(tmp_path / "VIRTUAL_imagenet256_labeled.npz", images=12)
    out = tmp_path / "out"
    proc = run_cli("run", "suite=imagenet", "model=dit", "weights=random", "model.arch=tiny", "model.resolution=16",
                   "method=random-mask", "method.ratio=0.2", "limit=6", f"suite.reference={ref}", "suite.num_classes=10",
                   "suite.sampler.steps=3", "suite.sampler.resolution=16", "suite.fid_force=true", "suite.pr_k=2",
                   "--no-progress", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert set(res["metrics"]) == {"fid", "inception_score", "precision", "recall"}
    assert all(m["n"] == 6 for m in res["metrics"].values())
    assert res["protocol"]["fid_label"] == "FID-6 (ADM ref)" and res["protocol"]["fid_forced"] is True
    assert res["protocol"]["sampler"] == {"scheduler": "ddpm", "steps": 3, "guidance": 1.5, "resolution": 16,
                                          "eta": 0.0, "chunk": 8}  # the CPU's default chunk (mubench.chunking)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == uniform_labels(6, 10, 0).tolist()  # the tiny DiT has 10 classes
    assert 1.0 <= res["metrics"]["inception_score"]["value"] <= 10.0
    from mubench.selection import UNITS_FILE, read_units_file

    units = read_units_file(out / UNITS_FILE)  # the FID's per-image features against the reference: compare can test it
    assert set(units) == {"fid"} and units["fid"].n == 6
    assert units["fid"].value() == pytest.approx(res["metrics"]["fid"]["value"], rel=1e-6)


def test_guidance_channels_are_in_the_sample_key(tmp_path):
    """DiT's cfg_channels changes the images but not the model's (artifact) fingerprint: the sample key holds it."""
    ref = fake_reference_batch(tmp_path / "ref.npz", images=4)
    keys = {}
    for channels in (3, 1):
        out = tmp_path / f"c{channels}"
        proc = run_cli("run", "suite=imagenet", "model=dit", "weights=random", "model.arch=tiny", "model.resolution=16",
                       f"model.cfg_channels={channels}", "limit=2", f"suite.reference={ref}", "suite.num_classes=10",
                       "suite.sampler.steps=1", "suite.sampler.resolution=16", "suite.fid_force=true", "suite.pr_k=1",
                       "--no-progress", f"out={out}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        keys[channels] = [json.loads(line)["key"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert keys[3] and set(keys[3]).isdisjoint(keys[1])


def test_imagenet_inception_score_uses_the_configured_split(tmp_path):
    """``is_split`` sets the Inception Score's split size (ADM: 5000): the reported IS averages the splits of that
    size, which differs from one split over all samples."""
    from mubench.suites.imagenet import ImageNetParams, ImageNetSuite, inception_score

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 16))
    ref = tmp_path / "VIRTUAL_imagenet256_labeled.npz"
    np.savez(ref, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False))
    suite = ImageNetSuite(build_params(ImageNetParams, {"count": 12, "reference": str(ref), "is_split": 4,
                                                        "precision_recall": False, "fid_force": True}), "imagenet")
    # first half confident, second half uniform: splits of 4 differ from one split of 12
    probs = np.concatenate([np.eye(4)[np.arange(6) % 4] * 0.97 + 0.0075, np.full((6, 4), 0.25)])
    records = [SampleRecord(PromptItem(f"{k:06d}", 0, {"label": 0}), 0, k, f"k{k}", "",
                            {"inception": {"features": rng.normal(size=16).astype(np.float32), "probs": probs[k],
                                           "extractor": "adm-legacy-tensorflow:random:tiny-feature-net:seed0"}})
               for k in range(12)]
    got = suite.aggregate(records)["inception_score"].value
    assert got == pytest.approx(inception_score(probs, 4), rel=1e-9)
    assert abs(inception_score(probs, 4) - inception_score(probs, 5000)) > 0.05


def test_reference_features_are_cached_per_extractor_and_checked(tmp_path, monkeypatch):
    """Precision / recall need the reference batch's images through the samples' extractor: computed once and cached
    (a second call builds no network), refused when the extractor differs from the samples', and a batch without
    ``arr_0`` images is named."""
    import mubench.scorers.adm_inception as adm

    ref = fake_reference_batch(tmp_path / "VIRTUAL_imagenet256_labeled.npz", images=5)
    suite = ImageNetSuite(build_params(ImageNetParams, {"count": 4, "reference": str(ref)}), "imagenet")
    ours = "adm-legacy-tensorflow:random:tiny-feature-net:seed0"
    first = suite.reference_features(ours, tmp_path / "cache")
    assert first.shape == (5, 16) and np.ptp(first, axis=0).max() > 0
    with monkeypatch.context() as m:
        m.setattr(adm, "AdmInception", lambda *a, **k: pytest.fail("the cached features were not used"))
        np.testing.assert_array_equal(suite.reference_features(ours, tmp_path / "cache"), first)
    with pytest.raises(UsageError, match="re-score the samples"):
        suite.reference_features("adm-legacy-tensorflow:random:another-net", tmp_path / "cache")
    bare = tmp_path / "bare.npz"
    np.savez(bare, mu=np.zeros(16), sigma=np.eye(16))
    suite = ImageNetSuite(build_params(ImageNetParams, {"count": 4, "reference": str(bare)}), "imagenet")
    with pytest.raises(AssetError, match="no arr_0"):
        suite.reference_features(ours, tmp_path / "cache")
