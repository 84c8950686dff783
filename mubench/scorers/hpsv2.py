"""``hpsv2``: the HPSv2 / HPSv2.1 human-preference score, without the ``hpsv2`` package (../shared/deps.md §3).

HPSv2 is an OpenCLIP ViT-H-14 fine-tuned on human preferences; its score is the cosine between the L2-normalised
image and text features (no logit scale; protocols.md §5.1). The ``hpsv2`` package cannot be installed next to
mubench's stack (it pins pytest 7.2 and protobuf<4, and its wheel lacks the tokenizer file), and its loader first
downloads the LAION weights that the HPS checkpoint then overwrites entirely. So mubench builds the architecture
with upstream ``open_clip`` (``ViT-H-14``, no pretrained weights; identical state-dict keys and shapes, deps.md §3a),
loads the HPS checkpoint (``HPS_v2.1_compressed.pt``, its ``state_dict``) strictly from a local file found by
:func:`mubench.assets.require` (asset ``hpsv2.1``) with ``torch.load(weights_only=True)``, and tokenizes with
open_clip's bundled BPE (77 tokens).

Preprocessing: Resize(224, bicubic) → CenterCrop(224) → CLIP normalisation on the tensor, differentiable, as the
released training-free MaskUNet code feeds the decoded predicted x0 to it. With ``weights=random`` (tests) the
architecture gets seeded random weights and no checkpoint is read; ``model_config`` (a JSON file in open_clip's
model-config format) replaces ViT-H-14 by another architecture, e.g. a tiny one for tests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..config import LOCATION_ONLY
from ..errors import AssetError, UsageError
from .base import ScorerContext
from .rewards import RewardScorer, clip_preprocess, resolve_precision


@dataclass
class HPSv2Params:
    # HPS_v2.1_compressed.pt (default: the hpsv2.1 asset's places)
    checkpoint: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    model: str = "ViT-H-14"  # open_clip architecture name
    model_config: Optional[str] = None  # an open_clip model-config JSON instead of a named architecture
    version: str = "v2.1"  # recorded (v2.0 and v2.1 scores are not comparable)
    precision: str = "auto"  # auto (fp16 on a GPU, as released; fp32 on CPU) | float32 | float16 | bfloat16
    grad_checkpointing: bool = True  # as released: the reward's backward recomputes the towers' blocks
    random_seed: int = 0  # seed of the random weights when the run has weights=random


def build_open_clip(model: str, model_config: Optional[str], seed: int = 0):
    """(CLIP model with seeded random weights, its config dict) for a named architecture or a config JSON."""
    import open_clip
    from open_clip.model import CLIP

    if model_config:
        path = Path(model_config).expanduser()
        if not path.is_file():
            raise UsageError(f"open_clip model config {path} does not exist")
        cfg = json.loads(path.read_text())
    else:
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise UsageError(f"unknown open_clip architecture {model!r}")
    if "hf_model_name" in cfg.get("text_cfg", {}):
        raise UsageError("HPSv2 needs a plain CLIP text tower (no Hugging Face text model)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = CLIP(**cfg)
    return net, cfg


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict with ``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unreadable or not a plain tensor checkpoint
        raise AssetError(f"{path}: cannot read the {what} checkpoint as plain tensors ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AssetError(f"{path}: not a {what} checkpoint (expected a state dict of tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


class HPSv2Scorer(RewardScorer):
    """HPSv2(.1) score = cos(image features, text features) of the HPS-tuned OpenCLIP ViT-H-14."""

    Params = HPSv2Params
    version = "1"

    def __init__(self, params: HPSv2Params, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        from open_clip.tokenizer import SimpleTokenizer

        net, cfg = build_open_clip(params.model, params.model_config, params.random_seed)
        if ctx.weights == "random":
            self._hash = f"random-{params.random_seed}"
            self._path: Optional[Path] = None
        else:
            from ..assets import file_sha256, require

            self._path = require("hpsv2.1", params.checkpoint)
            state = load_state_dict_file(self._path, "HPSv2")
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise AssetError(f"{self._path} does not fit open_clip {params.model_config or params.model} "
                                 f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
            self._hash = file_sha256(self._path)
        self.dtype = resolve_precision(params.precision, ctx.device)
        self.model = net.to(ctx.device, self.dtype).eval().requires_grad_(False)
        if params.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.image_size = int(cfg["vision_cfg"].get("image_size", 224))
        self.tokenizer = SimpleTokenizer(context_length=int(cfg["text_cfg"].get("context_length", 77)))
        self._arch = params.model_config or params.model

    def weights_hash(self) -> str:
        return self._hash

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backbone": f"open_clip {self._arch}", "hps_version": self.params.version,
                "weights": self._path.name if self._path else "random", "image_size": self.image_size,
                "preprocess": "resize bicubic + center crop + CLIP normalisation (on the tensor)",
                "score": "cosine of normalised image and text features (no logit scale)"}

    def reward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        x = clip_preprocess(images.to(device=device, dtype=torch.float32), self.image_size).to(self.dtype)
        img = self.model.encode_image(x, normalize=True).float()
        return (img * self.text_features(prompts, device)).sum(-1)

    def text_features(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """Normalised text features of ``prompts`` (float32, no gradient: the text tower is frozen and its input is
        tokens). The last prompts' features are kept: maskunet-free asks for the same prompt at every inner update."""
        key = (tuple(prompts), str(device))
        cached = getattr(self, "_text_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        with torch.no_grad():
            tokens = self.tokenizer(list(prompts)).to(device)
            txt = self.model.encode_text(tokens, normalize=True).float()
        self._text_cache = (key, txt)
        return txt
