"""``zoo/micro-art``: the micro-CLIP that the ``micro-art`` suite scores with, trained on both styles.

The shipped micro-CLIP (``zoo/micro``) never saw a dark background: on real art renders its caption cosine and its
features are off (an honest full fine-tune that learned the domain would read as having lost its text alignment).
The micro-art suite therefore scores with its own micro-CLIP, the same architecture and recipe trained on batches
that mix the base ``train`` split and the art ``train`` split half and half (every batch holds both styles, so the
contrastive negatives teach it that the background is not the caption). ``mubench zoo build micro-art`` trains it
(seconds) and writes ``micro-clip.safetensors`` + ``manifest.json`` (sha256) + ``build.log``; its quality on the
val splits of both styles is in the manifest.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..errors import UsageError
from ..fsutil import atomic_write_text
from . import art as A
from . import data as D
from . import scene as S
from .assets import MANIFEST, default_zoo_root
from .build_common import BuildLog, file_entries, manifest_head, versions
from .clip import CLIP_FILENAME, MicroClipTrainParams, evaluate_micro_clip, save_micro_clip, train_micro_clip

MANIFEST_FORMAT = "mubench-zoo-micro-art/1"
LOG_FILE = "build.log"


@dataclass
class ArtClipBuildParams:
    """The micro-art micro-CLIP's recipe (``mubench zoo build micro-art KEY=VALUE``)."""

    steps: int = 800
    seed: int = 0
    art_fraction: float = 0.5  # share of every batch drawn from the art train split
    threads: int = 1  # torch threads while training (1: the same bits on every machine of one build)


def mixed_batches(batch_size: int, seed: int, mix: dict[str, float], art_fraction: float
                  ) -> Iterator[tuple[list[S.Scene], np.ndarray]]:
    """Endless (scenes, uint8 images) batches: the first ``round(art_fraction * batch_size)`` scenes of each from
    the art ``train`` stream, the rest from the base ``train`` stream (both streams ``seed``)."""
    n_art = int(round(art_fraction * batch_size))
    art = A.iterate_art_scenes("train", seed, mix)
    base = D.iterate_scenes("train", seed, mix)
    while True:
        scenes = [next(art) for _ in range(n_art)] + [next(base) for _ in range(batch_size - n_art)]
        yield scenes, S.render_batch(scenes)


def build_micro_art(out_dir: Optional[Path] = None, params: Optional[ArtClipBuildParams] = None,
                    show_progress: bool = True, echo: bool = True, evaluate: bool = True) -> dict[str, Any]:
    """Train the micro-art micro-CLIP into ``out_dir`` (default: the repository's ``zoo/micro-art``); returns the
    manifest."""
    import torch

    p = params or ArtClipBuildParams()
    if not 0.0 <= p.art_fraction <= 1.0:
        raise UsageError(f"art_fraction must be in [0, 1], got {p.art_fraction}")
    out = Path(out_dir) if out_dir is not None else default_zoo_root() / "micro-art"
    out.mkdir(parents=True, exist_ok=True)
    log = BuildLog(out / LOG_FILE, echo=echo)
    log(f"zoo build micro-art -> {out} recipe={json.dumps(asdict(p), sort_keys=True)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(p.threads)))
    start = time.time()
    try:
        tp = MicroClipTrainParams(steps=p.steps, seed=p.seed)
        model = train_micro_clip(params=tp, batches=mixed_batches(tp.batch_size, tp.seed, tp.mix, p.art_fraction))
    finally:
        torch.set_num_threads(threads)
    model.train_info["data"] = f"base train + art train, art_fraction {p.art_fraction}"
    path = save_micro_clip(model, out / CLIP_FILENAME, {"world": "micro-art"})
    log(f"micro-clip trained in {time.time() - start:.1f}s, final loss {model.train_info['final_loss']:.4f}")
    manifest: dict[str, Any] = {
        **manifest_head(MANIFEST_FORMAT, "micro-art"), "recipe": asdict(p), "train_info": model.train_info,
        "versions": versions(), "files": file_entries(out, (path.name,))}
    if evaluate:
        manifest["quality"] = {"micro": evaluate_micro_clip(model, split="val"),
                               "micro-art": evaluate_micro_clip(model, split="val", world="micro-art")}
        log("quality " + json.dumps(manifest["quality"], sort_keys=True))
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
