"""``fid-features``: Inception pool features for FID, preprocessed exactly as clean-fid's modes do.

Every image (generated or reference) goes through the same steps:

1. to uint8 HWC (generated images are the stored PNG's pixels: round(255·x));
2. :func:`center_crop_resize` to ``resolution``² (centre crop of the short side, PIL ``resample``) — the
   shared function that makes COCO's non-square JPEGs and square generations comparable; a square image
   already at ``resolution`` is unchanged;
3. the protocol's own resize to 299²: ``clean`` — each channel as a float32 PIL image, bicubic, clipped
   to [0, 255], never re-quantised (clean-fid ``mode="clean"``); ``legacy_pytorch`` — torch bilinear,
   ``align_corners=False``, no antialias (pytorch-fid);
4. the network: ``clean`` — the TorchScript Inception ``inception-2015-12-05.pt`` (asset
   ``inception-clean``), its ``layers`` applied to (x − 128)/128 as clean-fid does; ``legacy_pytorch`` —
   pytorch-fid's InceptionV3 (clean-fid's copy) with ``pt_inception-2015-12-05-6726825d.pth`` (asset
   ``inception-legacy-pytorch``) on x/255 (normalised to [−1, 1] inside).

``weights=random`` swaps the network for a tiny seeded random CNN with 16 features (tests; the
preprocessing is unchanged). Per image the scorer returns ``features`` (float32) and ``extractor``, the
identity of the network (protocol + weights hash) that reference statistics are keyed by.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import AssetError, UsageError
from ..suites.base import PromptItem
from .base import Scorer, ScorerContext

PROTOCOLS = ("clean", "legacy_pytorch")
_RESAMPLE = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR, "box": Image.BOX}


@dataclass
class FidFeaturesParams:
    protocol: str = "clean"  # clean | legacy_pytorch
    weights: Optional[str] = None  # local Inception file (else $MUBENCH_HOME/assets, the reference tool's cache)
    resolution: int = 512  # centre-crop + resize side shared by reference and generated images
    resample: str = "bicubic"  # PIL filter of that resize: bicubic | lanczos | bilinear | box
    batch_size: int = 32

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(_RESAMPLE)}, got {self.resample!r}")


def center_crop_resize(arr: np.ndarray, size: int, resample: str = "bicubic") -> np.ndarray:
    """uint8 HWC → centre square crop of the short side → ``size``² with PIL ``resample`` → uint8 HWC."""
    arr = np.asarray(arr, dtype=np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] == arr.shape[1] == size:
        return arr  # already square at the size: nothing to crop or resize (skips two image copies through PIL)
    im = Image.fromarray(arr).convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    if (w, h) != (s, s):
        im = im.crop((left, top, left + s, top + s))
    if im.size != (size, size):
        im = im.resize((size, size), _RESAMPLE[resample])
    return np.asarray(im, dtype=np.uint8)


def protocol_resize(arr: np.ndarray, protocol: str) -> np.ndarray:
    """uint8 HWC → float32 CHW 299×299 in [0, 255], as clean-fid's resizer for ``protocol``."""
    if protocol == "clean":
        chans = []
        for c in range(3):
            im = Image.fromarray(arr[:, :, c].astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)
            chans.append(np.asarray(im, dtype=np.float32).clip(0, 255))
        return np.stack(chans, 0)
    if protocol == "legacy_pytorch":
        x = torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32))[None]
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return x[0].numpy().clip(0, 255)
    raise UsageError(f"unknown FID protocol {protocol!r}")


class TinyFeatureNet(torch.nn.Module):
    """Seeded random CNN: [N,3,299,299] in [-1,1] → [N,16] (a stand-in for Inception in tests)."""

    def __init__(self, seed: int = 0, dim: int = 16) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.conv2 = torch.nn.Conv2d(8, dim, 3, stride=2)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        return torch.relu(self.conv2(h)).mean(dim=(2, 3))


def _legacy_pytorch_inception(path: Path) -> torch.nn.Module:
    """clean-fid's copy of pytorch-fid's InceptionV3 (pool3, 2048-d) with weights from a local file."""
    try:
        import cleanfid.inception_pytorch as ip
    except ImportError:
        raise UsageError("protocol legacy_pytorch needs clean-fid (pip install 'mubench[metrics]')") from None
    original = ip.load_state_dict_from_url
    ip.load_state_dict_from_url = lambda *a, **k: torch.load(path, map_location="cpu", weights_only=True)
    try:
        return ip.InceptionV3(output_blocks=[3], resize_input=False).eval()
    finally:
        ip.load_state_dict_from_url = original


class InceptionFeatures(Scorer):
    Params = FidFeaturesParams
    version = "1"

    def __init__(self, params: FidFeaturesParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        self.protocol = params.protocol
        if ctx.weights == "random":
            self.net = TinyFeatureNet(0)
            self._hash = "random:tiny-feature-net:seed0"
            self._forward = lambda x: self.net((x - 128.0) / 128.0)
        else:
            from ..assets import file_sha256, require

            asset = "inception-clean" if params.protocol == "clean" else "inception-legacy-pytorch"
            path = require(asset, params.weights)
            self._hash = file_sha256(path)[:16]
            if params.protocol == "clean":
                try:
                    base = torch.jit.load(str(path), map_location="cpu").eval()
                except (RuntimeError, ValueError) as err:
                    raise AssetError(f"{path} is not the TorchScript Inception: {err}") from None
                self.net = base.layers
                self._forward = lambda x: self.net.forward((x - 128.0) / 128.0).reshape(x.shape[0], -1)
            else:
                self.net = _legacy_pytorch_inception(path)
                self._forward = lambda x: self.net(x / 255.0)[0].reshape(x.shape[0], -1)
        self.net.to(ctx.device).eval()

    def weights_hash(self) -> str:
        return self._hash

    @property
    def extractor_id(self) -> str:
        return f"{self.protocol}:{self._hash}"

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {**super().describe(), "protocol": p.protocol, "resolution": p.resolution, "resample": p.resample,
                "network": "tiny random CNN (tests)" if self._hash.startswith("random") else
                ("Inception-v3 2015-12-05 TorchScript" if p.protocol == "clean" else "pytorch-fid InceptionV3")}

    @torch.no_grad()
    def features_uint8(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Features [N, d] (float32) of uint8 HWC images of any size (steps 2–4 of the module docstring)."""
        out = []
        p = self.params
        for s in range(0, len(arrays), p.batch_size):
            batch = [protocol_resize(center_crop_resize(a, p.resolution, p.resample), p.protocol)
                     for a in arrays[s:s + p.batch_size]]
            x = torch.from_numpy(np.stack(batch)).to(self.ctx.device)
            out.append(self._forward(x).float().cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)

    def features_files(self, paths: Sequence[Path]) -> np.ndarray:
        """Features of image files (e.g. COCO JPEGs), read as clean-fid does: PIL → RGB → uint8."""
        feats = []
        p = self.params
        for s in range(0, len(paths), p.batch_size):
            arrays = []
            for f in paths[s:s + p.batch_size]:
                try:
                    with Image.open(f) as im:
                        arrays.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
                except OSError as err:
                    raise AssetError(f"cannot read reference image {f}: {err}") from None
            feats.append(self.features_uint8(arrays))
        return np.concatenate(feats, 0)

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        arrays = [(img.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                  for img in images]
        feats = self.features_uint8(arrays)
        return [{"features": f, "extractor": self.extractor_id} for f in feats]
