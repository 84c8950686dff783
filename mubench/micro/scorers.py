"""The micro world's scorers: ``micro-clip`` (CLIP score + FID features) and ``micro-oracle``.

``micro-clip`` returns per image ``clip`` (raw cosine between the image and its prompt in
micro-CLIP space), ``features`` (the penultimate image features, float32 [feature_dim]: the FID
space) and, when the prompt's ``meta["references"] = n`` asks for it, ``ref_features``
(float32 [n, feature_dim]): features of ``n`` held-out real renders of the same caption
(:func:`reference_scenes`), so FID needs no model at aggregation time.

``micro-oracle`` returns per image the recovered ``objects`` (list of dicts), ``n_objects``,
GenEval-style ``correct`` / ``reason`` for the prompt's caption, and, when ``meta["bind"] =
[by, judged]`` asks for it, T2I-CompBench-style ``bindings`` / ``binding_score`` / ``binding_reason``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..config import LOCATION_ONLY
from ..scorers.base import Scorer, ScorerContext
from ..scorers.rewards import RewardScorer
from ..suites.base import PromptItem
from ..errors import AssetError, UsageError
from . import art as A
from . import data as D
from . import scene as S
from .clip import CLIP_FILENAME, MicroClipEncoder, load_micro_clip, random_micro_clip, uint8_to_float, zoo_dir
from .oracle import Oracle, OracleParams

REFERENCE_SEED = 1_000_003  # stream seed of held-out reference renders (no split draws from it)


def reference_scenes(caption: str, split: str, key: int, n: int, style: str = "micro") -> list[S.Scene]:
    """``n`` held-out real scenes of ``caption`` for prompt number ``key`` of ``split``; ``style="art"``: of the
    micro-art distribution (its ``test`` split), which the ``micro-art`` suite's FID compares with."""
    if not 0 <= int(n) <= D.REFERENCES_PER_KEY:  # more would draw the next prompt's renders
        raise UsageError(f"at most {D.REFERENCES_PER_KEY} reference renders per prompt (images_per_prompt), "
                         f"got {n}")
    seeds = [int(key) * D.REFERENCES_PER_KEY + k for k in range(int(n))]
    phrases, relation = S.parse_caption(caption)
    if style == "art":
        return [A.realize_art(phrases, relation, A.art_rng("test", seed, REFERENCE_SEED)) for seed in seeds]
    if style not in ("micro", "class"):
        raise UsageError(f"unknown reference style {style!r}; expected micro, art or class")
    p_striped = S.P_STRIPED if style == "class" else S.P_STRIPED_UNNAMED  # a class: the fill as its scenes draw it
    return [D.realize(phrases, relation, D.scene_rng(split, seed, REFERENCE_SEED), split, p_striped) for seed in seeds]


@dataclass
class MicroClipScorerParams:
    # safetensors file; None = micro-clip.safetensors of zoo entry `world` (its sha256 is the weights hash)
    weights: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    world: str = "micro"  # zoo entry whose micro-CLIP scores: micro (shipped base) or micro-art (both styles)
    random_seed: int = 0  # seed of the random weights used when the run has weights=random


class MicroClipScorer(RewardScorer):
    """Also a differentiable reward (``reward``: the raw image–caption cosine), e.g. for maskunet-free."""

    Params = MicroClipScorerParams
    version = "2"  # 2: references draw an unnamed fill as the scenes behind such captions show it (P_STRIPED_UNNAMED)

    def __init__(self, params: MicroClipScorerParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        if ctx.weights == "random":
            model = random_micro_clip(params.random_seed)
            self._hash = f"random-{params.random_seed}"
            self._path: Optional[Path] = None
        else:
            self._path = Path(params.weights).expanduser() if params.weights else zoo_dir(params.world) / CLIP_FILENAME
            if not params.weights and not self._path.is_file():
                raise AssetError(f"micro-CLIP weights of zoo entry {params.world!r} not found: {self._path}\n"
                                 f"  build them with `mubench zoo build {params.world}` (seconds on a CPU)")
            model = load_micro_clip(self._path)
            self._hash = hashlib.sha256(self._path.read_bytes()).hexdigest()
        self.encoder = MicroClipEncoder(model.to(ctx.device).requires_grad_(False))

    def weights_hash(self) -> str:
        return self._hash

    def describe(self) -> dict[str, Any]:
        cfg = self.encoder.model.config
        return {**super().describe(), "backbone": "micro-clip", "feature_dim": cfg.feature_dim,
                "embed_dim": cfg.embed_dim, "weights": self._path.name if self._path else "random",
                # the default world is left out so that the micro suite's protocol predates the field unchanged
                **({"world": self.params.world} if self.params.world != "micro" else {}),
                "features": "penultimate image features (FID space)", "clip": "raw cosine"}

    def reward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """Raw cosine of image and caption in micro-CLIP space, differentiable w.r.t. ``images``."""
        model = self.encoder.model
        device = next(model.parameters()).device
        emb = model.encode_image(images.to(device=device, dtype=torch.float32))
        return (emb * self.encoder.texts([str(p) for p in prompts])).sum(-1)

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        device = next(self.encoder.model.parameters()).device
        emb, feats = self.encoder.images(images.to(device=device, dtype=torch.float32))
        txt = self.encoder.texts([str(it.prompt) for it in items])
        cos = (emb * txt).sum(-1).cpu().numpy()
        feats = feats.cpu().numpy().astype(np.float32)
        out = []
        for b, item in enumerate(items):
            res: dict[str, Any] = {"clip": float(cos[b]), "features": feats[b]}
            n = int(item.meta.get("references", 0) or 0)
            if n > 0:
                refs = reference_scenes(str(item.prompt), item.meta.get("split", "test"), item.meta.get("key", 0), n,
                                        str(item.meta.get("style", "micro")))
                _, rf = self.encoder.images(uint8_to_float(S.render_batch(refs)).to(device))
                res["ref_features"] = rf.cpu().numpy().astype(np.float32)
            out.append(res)
        return out


class MicroOracleScorer(Scorer):
    Params = OracleParams
    version = "1"

    def __init__(self, params: OracleParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        self.oracle = Oracle(params)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backbone": "micro-oracle (classical image analysis)",
                "rules": "GenEval correctness rules with shapes as classes; largest-object attribute binding"}

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        out = []
        for image, item in zip(images, items):
            found = self.oracle.detect(image)
            res: dict[str, Any] = {"objects": [d.as_dict() for d in found], "n_objects": len(found)}
            try:
                phrases, relation = S.parse_caption(str(item.prompt))
            except ValueError as err:
                res.update(correct=False, reason=f"caption not in the micro grammar: {err}")
                out.append(res)
                continue
            res["correct"], res["reason"] = self.oracle.evaluate(found, phrases, relation)
            bind = item.meta.get("bind")
            if bind:
                by, judged = bind
                results = [self.oracle.binding(found, ph, by, judged) for ph in phrases]
                res["bindings"] = [ok for ok, _ in results]
                res["binding_score"] = float(np.mean(res["bindings"])) if results else 0.0
                res["binding_reason"] = "; ".join(r for _, r in results if r)
            out.append(res)
        return out
