"""The Inception scorers' real-weights branch, on a tiny TorchScript stand-in for NVIDIA's port of the TF graph
(``inception-2015-12-05.pt``): the same interface — ``layers`` (up to pool_3), ``output`` (the 1008-way linear),
``forward(img, return_features)`` resizing inside — with random weights, so loading, the features and the ADM
probabilities (no output bias) are checked without the real file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mubench.errors import AssetError
from mubench.scorers.adm_inception import AdmInception, AdmInceptionParams
from mubench.scorers.base import ScorerContext
from mubench.scorers.fid_features import FidFeaturesParams, InceptionFeatures

CPU = ScorerContext(torch.device("cpu"))


class TinyPort(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(3, 4, 5, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.output = nn.Linear(4, 6)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = F.interpolate(img, size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128.0) / 128.0).flatten(1)
        return features if return_features else self.output(features)


class NoOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.AdaptiveAvgPool2d(1))

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(img).flatten(1)


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    torch.manual_seed(0)
    module = TinyPort().eval()
    with torch.no_grad():
        module.output.bias.copy_(torch.arange(6.0))  # a bias (not a constant: softmax ignores one) left out
    path = tmp_path_factory.mktemp("port") / "inception-2015-12-05.pt"
    torch.jit.script(module).save(str(path))
    return module, path


def _images(n: int = 3, side: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def test_adm_features_are_the_ports_and_its_probabilities_leave_out_the_output_bias(port):
    module, path = port
    scorer = AdmInception(AdmInceptionParams(weights=str(path), batch_size=2), CPU, "inception")
    images = _images()
    feats, probs = scorer.features_uint8(images)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        want = module(x, return_features=True)
        no_bias = torch.softmax(want @ module.output.weight.t(), -1).numpy()
        with_bias = torch.softmax(module.output(want), -1).numpy()
    np.testing.assert_allclose(feats, want.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs, no_bias, rtol=1e-5, atol=1e-6)
    assert probs.shape == (3, 6) and not np.allclose(probs, with_bias, atol=1e-3)
    assert scorer.extractor_id.startswith("adm-legacy-tensorflow:") and "random" not in scorer.extractor_id


def test_clean_fid_features_come_from_the_ports_pool3_layers(port):
    _, path = port
    scorer = InceptionFeatures(FidFeaturesParams(weights=str(path), resolution=64, num_workers=0), CPU, "fid")
    feats = scorer.features_uint8(_images())
    assert feats.shape == (3, 4) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert np.ptp(feats, axis=0).max() > 0  # the images differ, so do their features
    again = InceptionFeatures(FidFeaturesParams(weights=str(path), resolution=64, num_workers=0), CPU, "fid")
    np.testing.assert_array_equal(again.features_uint8(_images()), feats)


def test_a_file_that_is_not_torchscript_is_named(tmp_path):
    bad = tmp_path / "inception-2015-12-05.pt"
    bad.write_bytes(b"not a model")
    for make in (lambda: AdmInception(AdmInceptionParams(weights=str(bad)), CPU, "inception"),
                 lambda: InceptionFeatures(FidFeaturesParams(weights=str(bad)), CPU, "fid")):
        with pytest.raises(AssetError, match="is not the TorchScript Inception"):
            make()


def test_a_port_without_its_output_layer_cannot_give_adm_probabilities(tmp_path):
    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(NoOutput()).save(str(path))
    with pytest.raises(AssetError, match="no 'output' layer"):
        AdmInception(AdmInceptionParams(weights=str(path)), CPU, "inception")
