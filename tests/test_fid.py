"""FID core: Fréchet distance against independent references, streaming statistics invariance, refusal, cache."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from scipy import linalg

from mubench.errors import UsageError
from mubench.metrics.fid import (FIDStats, Gaussian, RefStatsCache, RefStatsKey, fid_from_features, fid_from_stats,
                                 frechet_distance)


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift + rng.uniform(0, 2, size=d)


def _scipy_reference(f1: np.ndarray, f2: np.ndarray) -> float:
    """Textbook float64 FID written directly against numpy/scipy (np.cov, linalg.sqrtm)."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_analytic_oracles():
    d = 6
    # identical Gaussians: 0 up to rounding (can be a tiny negative)
    sig = np.cov(_features(200, d, 0), rowvar=False)
    assert abs(frechet_distance(np.zeros(d), sig, np.zeros(d), sig)) < 1e-9
    # equal covariances: only the mean term remains
    mu1, mu2 = np.arange(d, dtype=float), np.arange(d, dtype=float)[::-1]
    assert frechet_distance(mu1, sig, mu2, sig) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-9)
    # isotropic sigma1^2 I vs sigma2^2 I: |dmu|^2 + d (sigma1 - sigma2)^2
    got = frechet_distance(mu1, 4.0 * np.eye(d), mu2, 0.25 * np.eye(d))
    assert got == pytest.approx(((mu1 - mu2) ** 2).sum() + d * (2.0 - 0.5) ** 2, rel=1e-12)


@pytest.mark.parametrize("method", ["sqrtm", "eigvals"])
def test_matches_float64_scipy_reference(method):
    f1, f2 = _features(300, 24, 1), _features(250, 24, 2, shift=0.3)
    ref = _scipy_reference(f1, f2)
    got = fid_from_features(f1, f2, method=method)
    assert ref > 0.1
    assert got == pytest.approx(ref, rel=1e-9)


class _ProjectionFeatures(torch.nn.Module):
    """A fixed random projection of the flattened uint8 image: (N,3,8,8) → (N,16) float64."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 8 * 8, self.num_features, generator=g, dtype=torch.float64) / 20)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).to(torch.float64) @ self.w


def test_matches_torchmetrics_fid_on_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(3)
    real = torch.randint(0, 200, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    fake = torch.randint(40, 256, (48, 3, 8, 8), generator=g, dtype=torch.uint8)
    extractor = _ProjectionFeatures()
    metric = FrechetInceptionDistance(feature=extractor, normalize=False, input_img_size=(3, 8, 8))
    for chunk in real.split(10):
        metric.update(chunk, real=True)
    for chunk in fake.split(7):
        metric.update(chunk, real=False)
    tm = float(metric.compute())
    with torch.no_grad():
        ours = fid_from_features(extractor(real).numpy(), extractor(fake).numpy())
    assert tm > 1.0
    assert abs(ours - tm) / tm <= 1e-6


def test_matches_clean_fid_fid_from_feats():
    from cleanfid import fid as cleanfid

    f1, f2 = _features(200, 20, 4), _features(180, 20, 5, shift=-0.2)
    ref = float(cleanfid.fid_from_feats(f1, f2))
    assert ref > 0.1
    assert fid_from_features(f1, f2) == pytest.approx(ref, rel=1e-9)


def test_streaming_stats_batch_size_and_shard_invariant(tmp_path):
    feats = _features(101, 12, 6)
    whole = FIDStats.from_features(feats)
    mu_ref, cov_ref = feats.mean(0), np.cov(feats, rowvar=False)
    for bs in (1, 7, 50, 101):
        s = FIDStats(12)
        for i in range(0, len(feats), bs):
            s.update(feats[i:i + bs])
        mu, cov = s.mean_cov()
        assert s.count == 101
        np.testing.assert_allclose(mu, mu_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cov, cov_ref, rtol=1e-10, atol=1e-12)
    # three shards (uneven, interleaved by index as a sharded run would be) merged, one through a saved state
    shards = [FIDStats.from_features(feats[k::3]) for k in range(3)]
    np.savez(tmp_path / "shard.npz", **shards[2].state_dict())
    with np.load(tmp_path / "shard.npz", allow_pickle=False) as data:
        resumed = FIDStats.from_state_dict(dict(data))
    merged = shards[0].copy().merge(shards[1]).merge(resumed)
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.mean_cov()[1], whole.mean_cov()[1], rtol=1e-10, atol=1e-12)
    other = _features(80, 12, 7)
    assert fid_from_features(feats, other) == pytest.approx(fid_from_stats(merged, FIDStats.from_features(other)),
                                                            rel=1e-9)
    # torch input of another dtype gives the same statistics
    t = FIDStats.from_features(torch.from_numpy(feats))
    np.testing.assert_allclose(t.sum, whole.sum)


def test_refuses_fewer_images_than_dimensions_unless_forced():
    small, big = FIDStats.from_features(_features(10, 16, 8)), FIDStats.from_features(_features(40, 16, 9))
    with pytest.raises(UsageError, match="10 images but the features have 16 dimensions"):
        fid_from_stats(small, big)
    value = fid_from_stats(small, big, force=True, imag_tol=None)
    assert np.isfinite(value)
    with pytest.raises(UsageError, match="at least 2"):
        fid_from_stats(FIDStats.from_features(_features(1, 16, 1)), big, force=True)
    # reference statistics of unknown size are not checked
    mu, sig = big.mean_cov()
    assert np.isfinite(fid_from_stats(Gaussian(mu, sig, None), big))
    with pytest.raises(UsageError, match="different feature dimensions"):
        fid_from_stats(big, FIDStats.from_features(_features(40, 8, 1)))


def test_bad_inputs():
    s = FIDStats(4)
    with pytest.raises(ValueError, match="dimension"):
        s.update(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        s.update(np.full((2, 4), np.nan))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # the singular product is the point
def test_singular_product_falls_back_to_eps_offset():
    # rank-1 covariances: the product's root is degenerate; the result must stay finite and close to the truth
    v = np.array([1.0, 0.0, 0.0])
    s1 = np.outer(v, v)
    value = frechet_distance(np.zeros(3), s1, np.ones(3), s1)
    assert value == pytest.approx(3.0, abs=1e-3)


def test_reference_cache_roundtrip_and_key_isolation(tmp_path):
    cache = RefStatsCache(tmp_path / "fid")
    key = RefStatsKey(manifest="abc123", protocol="clean", extractor="inception:sha256:00", resolution=512)
    assert cache.get(key) is None
    stats = FIDStats.from_features(_features(30, 5, 10))
    path = cache.put(key, stats)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    back = cache.get(key)
    assert back is not None and back.count == 30
    np.testing.assert_array_equal(back.outer, stats.outer)
    with np.load(path, allow_pickle=False) as data:  # pytorch-fid style mu/sigma are there too
        np.testing.assert_allclose(data["sigma"], stats.mean_cov()[1])
    for other in (RefStatsKey("abc124", "clean", "inception:sha256:00", 512),
                  RefStatsKey("abc123", "legacy_pytorch", "inception:sha256:00", 512),
                  RefStatsKey("abc123", "clean", "inception:sha256:01", 512),
                  RefStatsKey("abc123", "clean", "inception:sha256:00", 256),
                  RefStatsKey("abc123", "clean", "inception:sha256:00", 512, "lanczos")):  # trap 1: the resizer
        assert cache.path(other) != path
        assert cache.get(other) is None
    assert cache.path(RefStatsKey("abc123", "clean", "inception:sha256:00", 512, "bicubic")) == path
    assert key.digest() == "086df38eb93bcd521a699cf8"  # the default's key is the one made before resample existed


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # n = d: the covariance has rank d - 1
def test_as_many_images_as_feature_dimensions_is_enough():
    exact, big = FIDStats.from_features(_features(16, 16, 3)), FIDStats.from_features(_features(40, 16, 9))
    assert np.isfinite(fid_from_stats(exact, big, imag_tol=None))  # n == d: not refused (n < d is)
    with pytest.raises(UsageError, match="15 images but the features have 16"):
        fid_from_stats(FIDStats.from_features(_features(15, 16, 3)), big)


def test_an_imaginary_root_is_refused_beyond_its_tolerance_and_dropped_below_it():
    # sigma1 = diag(-1, 4) is not a covariance: (sigma1 sigma2)^1/2 = diag(i, 2), an imaginary diagonal of 1
    with pytest.raises(ValueError, match="imaginary diagonal component of 1 "):
        frechet_distance(np.zeros(2), np.diag([-1.0, 4.0]), np.zeros(2), np.eye(2))
    # imag_tol=None keeps the real part: 3 + 2 - 2 * (0 + 2)
    assert frechet_distance(np.zeros(2), np.diag([-1.0, 4.0]), np.zeros(2), np.eye(2), imag_tol=None) == \
        pytest.approx(1.0, abs=1e-12)
    # a rounding-sized imaginary part (1e-4 < imag_tol 1e-3) is dropped silently: (4 - 1e-8) + 2 - 2 * 2
    assert frechet_distance(np.zeros(2), np.diag([-1e-8, 4.0]), np.zeros(2), np.eye(2)) == \
        pytest.approx(2.0, abs=1e-7)
