"""FID preprocessing in worker processes (``num_workers``): the same features bit for bit, and no trace of the
setting in any protocol or cache key (it changes speed, never results)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.config import build_params, to_plain
from mubench.errors import AssetError, UsageError
from mubench.runner import scorer_key
from mubench.scorers.base import ScorerContext
from mubench.scorers.fid_features import FidFeaturesParams, InceptionFeatures, default_workers

RANDOM = ScorerContext(torch.device("cpu"), weights="random")


def _scorer(workers, protocol="clean", batch_size=4) -> InceptionFeatures:
    params = FidFeaturesParams(protocol=protocol, resolution=64, num_workers=workers, batch_size=batch_size)
    return InceptionFeatures(params, RANDOM, "fid")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Images of several sizes and shapes (JPEG and PNG), as a reference folder holds."""
    folder = tmp_path_factory.mktemp("refs")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(64, 64), (80, 120), (120, 80), (50, 50), (64, 64), (97, 131), (64, 64)]):
        path = folder / f"{i:03d}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.mark.parametrize("protocol", ["clean", "legacy_pytorch"])
def test_worker_processes_give_bitwise_the_in_process_features(files, protocol):
    ref = _scorer(0, protocol).features_files(files)
    got = _scorer(2, protocol).features_files(files)
    assert got.shape == (len(files), 16) and got.dtype == np.float32
    assert np.array_equal(got, ref)
    # and the in-process path is the one the scorer's own calls use (arrays, not files)
    arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    assert np.array_equal(_scorer(2, protocol).features_uint8(arrays), ref)


def test_num_workers_is_in_no_cache_key_or_protocol():
    a, b = _scorer(0), _scorer(3)
    assert scorer_key(a) == scorer_key(b) and a.describe() == b.describe()
    assert "num_workers" in to_plain(b.params) and "num_workers" not in to_plain(b.params, results_only=True)
    assert scorer_key(_scorer(0, batch_size=8)) != scorer_key(a)  # other params still count
    other_device = _scorer(0)
    other_device.ctx = replace(other_device.ctx, device=torch.device("meta"))
    assert scorer_key(other_device) != scorer_key(a)  # so do the device type and dtype it scores on
    other_weights = _scorer(0)
    other_weights.weights_hash = lambda: "another-checkpoint"
    assert scorer_key(other_weights) != scorer_key(a)  # and the weights it scores with


def test_defaults_and_bad_values(files, tmp_path):
    assert default_workers(10) == 0  # a few files: worker start-up would cost more than it saves
    assert 0 <= default_workers(10_000) <= 8
    with pytest.raises(UsageError, match="num_workers must be >= 0"):
        build_params(FidFeaturesParams, {"num_workers": -1}, where="scorer fid: ")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(AssetError, match="cannot read reference image .*broken.png"):
        _scorer(2).features_files([*files[:2], broken])


def test_a_cpu_thread_count_is_in_every_cache_key(regs, tmp_path):
    """CPU kernels split their sums by thread, so images and scores made with 1 thread differ in the last bits from
    those made with 2 (accelerate and torchrun start each process with one): they must not share cache entries."""
    import torch

    from mubench.config import resolve
    from mubench.runner import Runner
    from mubench.sampler import SamplerConfig

    runner = Runner(resolve(["suite=toy", "model=tiny-sd", "limit=1", "device=cpu", f"cache={tmp_path}"], regs), regs)
    bundle = runner.load_model()
    prepared = runner.prepare(bundle)
    scorer = next(iter(runner.scorers().values()))
    before = torch.get_num_threads()
    try:
        keys = []
        for n in (1, 2):
            torch.set_num_threads(n)
            keys.append(([p.key for p in runner.plan(bundle, prepared, SamplerConfig(), runner.items())],
                         scorer_key(scorer)))
    finally:
        torch.set_num_threads(before)
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
