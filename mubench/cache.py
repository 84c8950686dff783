"""Content-addressed caches with atomic writes.

Samples are PNG files named by their sample key (a hash of everything that decides their pixels). Per-image scores
are ``.npz`` files under a folder named by the scorer key (name, version, weights hash) and the image's score key
(its sample key plus a hash of its prompt and metadata: ``PlannedSample.score_key``). Every
file is written to a temporary name, fsynced and renamed, so a killed run leaves no half file and loses no
finished one; re-running the same command finds them and does only what is missing.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from .chunking import SCORE_CHUNK
from .config import stable_hash, to_plain
from .errors import UsageError
from .fsutil import atomic_write_bytes


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 [H, W, 3] → PNG bytes (fixed encoder settings, so the bytes are reproducible)."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def to_uint8(images) -> np.ndarray:
    """float [B,3,H,W] in [0,1] (torch or numpy) → uint8 [B,H,W,3], rounding to nearest."""
    arr = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


class Cache:
    """Sample and score cache rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # samples -------------------------------------------------------------------------------------------------
    def sample_path(self, key: str) -> Path:
        return self.root / "samples" / key[:2] / f"{key}.png"

    def has_sample(self, key: str) -> bool:
        return self.sample_path(key).is_file()

    def write_sample(self, key: str, image: np.ndarray) -> str:
        """Store one uint8 [H,W,3] image; returns the sha256 of the PNG file."""
        data = png_bytes(image)
        atomic_write_bytes(self.sample_path(key), data)
        return hashlib.sha256(data).hexdigest()

    def read_sample(self, key: str) -> np.ndarray:
        path = self.sample_path(key)
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated or not an image
            raise UsageError(f"cache file {path} is damaged ({err}); delete it and run the same command again "
                             "(only that image is made again, every other cached file is kept)") from None

    def sample_sha256(self, key: str) -> str:
        return hashlib.sha256(self.sample_path(key).read_bytes()).hexdigest()

    # scores --------------------------------------------------------------------------------------------------
    def score_path(self, scorer_key: str, sample_key: str) -> Path:
        return self.root / "scores" / scorer_key / sample_key[:2] / f"{sample_key}.npz"

    def has_score(self, scorer_key: str, sample_key: str) -> bool:
        return self.score_path(scorer_key, sample_key).is_file()

    def write_score(self, scorer_key: str, sample_key: str, result: dict[str, Any]) -> None:
        arrays = {k: np.asarray(v) for k, v in result.items() if isinstance(v, np.ndarray)}
        plain = {k: _plain(v) for k, v in result.items() if not isinstance(v, np.ndarray)}
        buf = io.BytesIO()
        np.savez(buf, __json__=np.frombuffer(json.dumps(plain, sort_keys=True).encode(), dtype=np.uint8), **arrays)
        atomic_write_bytes(self.score_path(scorer_key, sample_key), buf.getvalue())

    def read_score(self, scorer_key: str, sample_key: str) -> dict[str, Any]:
        with np.load(self.score_path(scorer_key, sample_key), allow_pickle=False) as data:
            out: dict[str, Any] = json.loads(bytes(data["__json__"]).decode())
            for name in data.files:
                if name != "__json__":
                    out[name] = data[name]
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def cpu_threads(device_type: str) -> Optional[int]:
    """The thread count that decides a CPU result's last bits (its kernels split their sums by thread); None off it."""
    return torch.get_num_threads() if device_type == "cpu" else None


def scorer_key(scorer: Any) -> str:
    """What decides a scorer's per-image results: class, version, weights, params, chunk, and the device type and
    dtype it runs on (a GPU's scores differ from a CPU's in the last bits; the protocol records the run's device), and
    on a CPU the thread count (its kernels split their sums by thread)."""
    threads = cpu_threads(scorer.ctx.device.type)
    cpu = {"threads": threads} if threads is not None else {}
    return f"{scorer.name}-" + stable_hash({"class": type(scorer).__qualname__, "version": scorer.version,
                                            "weights": scorer.weights_hash(),
                                            "params": to_plain(scorer.params, results_only=True),
                                            "chunk": SCORE_CHUNK, "device": scorer.ctx.device.type,
                                            "dtype": str(scorer.ctx.dtype), **cpu})
