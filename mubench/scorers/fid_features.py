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

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import LOCATION_ONLY, SPEED_ONLY
from ..errors import AssetError, UsageError
from ..suites.base import PromptItem
from .base import Scorer, ScorerContext

PROTOCOLS = ("clean", "legacy_pytorch")
_RESAMPLE = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR, "box": Image.BOX}


@dataclass
class FidFeaturesParams:
    protocol: str = "clean"  # clean | legacy_pytorch
    # local Inception file (else $MUBENCH_HOME/assets, the reference tool's cache)
    weights: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    resolution: int = 512  # centre-crop + resize side shared by reference and generated images
    resample: str = "bicubic"  # PIL filter of that resize: bicubic | lanczos | bilinear | box
    batch_size: int = 32
    # worker processes preprocessing image files (clean-fid's DataLoader num_workers); None = from the CPU count,
    # 0 = in process. Speed only: features are bitwise those of 0, so it is in no protocol or cache key
    num_workers: Optional[int] = field(default=None, metadata=SPEED_ONLY)

    def validate(self) -> None:
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = in process), got {self.num_workers}")
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


def default_workers(n_images: int) -> int:
    """Worker processes for ``n_images`` files: none for a few images or one CPU, else up to 8 (one per CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 1 or n_images < 64 else min(8, cpus)


class _Preprocessed(torch.utils.data.Dataset):
    """Image files (or uint8 arrays) → the network's input, one item each (steps 1–3 of the module docstring).

    An unreadable file gives its error message instead of pixels, raised by the main process (not a worker's
    traceback). ``legacy_pytorch``'s torch resize stays in the main process: torch in a worker runs one thread, and
    its bilinear kernel's last bits depend on the thread count (measured), PIL's do not."""

    def __init__(self, sources: Sequence[Union[Path, np.ndarray]], params: FidFeaturesParams) -> None:
        self.sources, self.params = list(sources), params

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> Union[np.ndarray, str]:
        src, p = self.sources[i], self.params
        if not isinstance(src, np.ndarray):
            try:
                with Image.open(src) as im:
                    src = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except OSError as err:
                return f"cannot read reference image {self.sources[i]}: {err}"
        square = center_crop_resize(src, p.resolution, p.resample)
        return protocol_resize(square, p.protocol) if p.protocol in WORKER_RESIZE else square


#: protocols whose 299² resize runs in the workers (bitwise the same there: PIL, no threads)
WORKER_RESIZE = ("clean",)


def _as_list(batch: list) -> list:
    return batch


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

    def features_uint8(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Features [N, d] (float32) of uint8 HWC images of any size (steps 2–4 of the module docstring), in process:
        a scoring call holds one chunk of images, which worker start-up would only slow down."""
        return self._features(arrays, workers=0)

    def features_files(self, paths: Sequence[Path]) -> np.ndarray:
        """Features of image files (e.g. COCO JPEGs), read as clean-fid does (PIL → RGB → uint8), preprocessed by
        ``num_workers`` worker processes (reference statistics: thousands of files); bitwise those of 0 workers."""
        workers = self.params.num_workers
        return self._features(paths, default_workers(len(paths)) if workers is None else workers)

    @torch.no_grad()
    def _features(self, sources: Sequence[Union[Path, np.ndarray]], workers: int) -> np.ndarray:
        """Preprocess (in ``workers`` processes) and run the network in order, ``batch_size`` images per call."""
        loader = torch.utils.data.DataLoader(_Preprocessed(sources, self.params), batch_size=self.params.batch_size,
                                             shuffle=False, num_workers=workers, collate_fn=_as_list)
        out = []
        for batch in loader:
            failed = next((b for b in batch if isinstance(b, str)), None)
            if failed is not None:
                raise AssetError(failed)
            if self.params.protocol not in WORKER_RESIZE:
                batch = [protocol_resize(b, self.params.protocol) for b in batch]
            x = torch.from_numpy(np.stack(batch)).to(self.ctx.device)
            out.append(self._forward(x).float().cpu().numpy())
        return np.concatenate(out, 0) if out else np.zeros((0, 0), np.float32)

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        arrays = [(img.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                  for img in images]
        feats = self.features_uint8(arrays)
        return [{"features": f, "extractor": self.extractor_id} for f in feats]
