"""``adm-inception``: Inception pool_3 features and class probabilities as the ADM evaluator takes them (ImageNet).

guided-diffusion's ``evaluations/evaluator.py`` (the reference of DiT's FID / IS / precision / recall, protocols.md
§4.2) feeds the raw 256² uint8 samples (NHWC, 0…255) to TensorFlow's Inception-v3 2015-12-05 graph, which resizes
them to 299² itself (TF1 bilinear, no antialias); FID / precision / recall use the 2048-d ``pool_3`` features, the
Inception Score a softmax over the graph's 1008 logits computed *without* the output bias (``pool_3 · W``).

mubench computes the same quantities in PyTorch with NVIDIA's TorchScript port of that graph (asset
``inception-clean``, ``inception-2015-12-05.pt``; clean-fid's ``legacy_tensorflow`` mode): the network is called on
the float pixel values with ``return_features=True`` — it resizes inside, as the TF graph does — and the probabilities
are ``softmax(pool_3 · Wᵀ)`` with ``W`` the port's output layer (no bias). The port is designed to match the TF graph
closely (clean-fid's README: ~2e-5 on FID); it has not been validated here against the TF evaluator on real samples
(no TensorFlow and no weights on the build machine) — do that once on a GPU box before comparing with published
numbers. sFID needs the graph's ``mixed_6/conv`` features, which the port does not expose: not computed.

``weights=random`` (tests) swaps the network for the tiny seeded CNN of :mod:`.fid_features` (16 features) and a
seeded random 16 → 10 "classifier"; the resizing and the rest are unchanged. Per image: ``features`` (float32),
``probs`` (float32, softmax) and ``extractor`` (the network's identity, which reference features are keyed by).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import LOCATION_ONLY
from ..errors import AssetError
from ..suites.base import PromptItem
from .base import Scorer, ScorerContext
from .fid_features import TinyFeatureNet

RANDOM_CLASSES = 10


@dataclass
class AdmInceptionParams:
    # the TorchScript inception-2015-12-05.pt (else $MUBENCH_HOME assets, /tmp)
    weights: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    batch_size: int = 64  # the ADM evaluator's batch


class AdmInception(Scorer):
    Params = AdmInceptionParams
    version = "1"

    def __init__(self, params: AdmInceptionParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        if ctx.weights == "random":
            self._hash = "random:tiny-feature-net:seed0"
            net = TinyFeatureNet(0)
            gen = torch.Generator().manual_seed(1)
            self._w = torch.randn(RANDOM_CLASSES, 16, generator=gen)
            self._feats = lambda x: net(torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                                                        align_corners=False) / 128.0 - 1.0)
            self.net: torch.nn.Module = net
        else:
            from ..assets import file_sha256, require

            path = require("inception-clean", params.weights)
            self._hash = file_sha256(path)[:16]
            try:
                base = torch.jit.load(str(path), map_location="cpu").eval()
            except (RuntimeError, ValueError) as err:
                raise AssetError(f"{path} is not the TorchScript Inception: {err}") from None
            output = getattr(base, "output", None)
            if output is None or not hasattr(output, "weight"):
                raise AssetError(f"{path}: the TorchScript Inception has no 'output' layer to compute class "
                                 "probabilities from")
            self.net = base
            self._w = output.weight.detach().float()
            self._feats = lambda x: base(x, return_features=True)
        self.net.to(ctx.device).eval()
        self._w = self._w.to(ctx.device)

    def weights_hash(self) -> str:
        return self._hash

    @property
    def extractor_id(self) -> str:
        return f"adm-legacy-tensorflow:{self._hash}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "protocol": "ADM evaluator (TF Inception pool_3, resize inside the network)",
                "network": "tiny random CNN (tests)" if self._hash.startswith("random") else
                "Inception-v3 2015-12-05 TorchScript port (clean-fid legacy_tensorflow)",
                "probs": "softmax(pool_3 W^T), no output bias (ADM / improved-gan IS)"}

    @torch.no_grad()
    def features_uint8(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, d], probs [N, classes]) of uint8 HWC images, in batches of ``batch_size``."""
        feats, probs = [], []
        for s in range(0, len(arrays), self.params.batch_size):
            batch = np.stack([np.asarray(a, dtype=np.uint8) for a in arrays[s:s + self.params.batch_size]])
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().to(self.ctx.device)
            f = self._feats(x).reshape(x.shape[0], -1).float()
            feats.append(f.cpu().numpy())
            probs.append(torch.softmax(f @ self._w.t(), dim=-1).cpu().numpy())
        if not feats:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(feats).astype(np.float32), np.concatenate(probs).astype(np.float32)

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        arrays = [(img.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                  for img in images]
        feats, probs = self.features_uint8(arrays)
        return [{"features": f, "probs": p, "extractor": self.extractor_id} for f, p in zip(feats, probs)]
