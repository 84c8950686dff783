"""``clip-score``: per-image raw cosine between CLIP image and caption embeddings.

The backbone is a transformers CLIPModel from a local folder (asset ``clip-vit-l-14``: OpenAI ViT-L/14,
the weights of open_clip's ``ViT-L-14-quickgelu``/``openai``). Images are fed to the model's
CLIPImageProcessor as **uint8** arrays (a float image would be rescaled by 1/255 twice), captions are
truncated to 77 tokens, an optional ``prefix`` is prepended (GigaGAN uses "A photo depicts "). The
scorer stores the raw cosine; the suite reports it raw (as the paper) and as torchmetrics' 100·cos
(mean clamped at 0). ``weights=random`` uses a tiny random CLIP (tests).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from ..config import LOCATION_ONLY
from ..errors import AssetError
from ..suites.base import PromptItem
from .base import Scorer, ScorerContext


@dataclass
class ClipScoreParams:
    # local transformers CLIP folder (else assets / HF cache)
    path: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    backbone: str = "openai/clip-vit-large-patch14"  # recorded name of the weights
    prefix: str = ""
    batch_size: int = 32


class ClipScore(Scorer):
    Params = ClipScoreParams
    version = "1"

    def __init__(self, params: ClipScoreParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        from transformers import CLIPImageProcessor

        if ctx.weights == "random":
            from .geneval_detector import tiny_clip

            self.model, self.tokenizer = tiny_clip(0)
            self.processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
            self._hash = "random:tiny-clip:seed0"
        else:
            from transformers import AutoTokenizer, CLIPModel

            from ..assets import require, weights_files_hash

            path = require("clip-vit-l-14", params.path)
            try:
                self.model = CLIPModel.from_pretrained(path, local_files_only=True)
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                self.processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
            except (OSError, ValueError) as err:
                raise AssetError(f"cannot load CLIP from {path}: {err}") from None
            if len(self.tokenizer) < 1000:
                raise AssetError(f"the CLIP tokenizer in {path} has only {len(self.tokenizer)} tokens")
            self._hash = weights_files_hash(path)
        self.model.to(ctx.device).eval()

    def weights_hash(self) -> str:
        return self._hash

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backbone": self.params.backbone if not self._hash.startswith("random")
                else "tiny random CLIP", "prefix": self.params.prefix, "stored": "raw cosine"}

    @torch.no_grad()
    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        out = []
        dev = self.ctx.device
        for s in range(0, len(items), self.params.batch_size):
            imgs = images[s:s + self.params.batch_size]
            arrays = [(im.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                      for im in imgs]
            px = self.processor(images=arrays, return_tensors="pt").pixel_values.to(dev)
            texts = [self.params.prefix + str(it.prompt) for it in items[s:s + self.params.batch_size]]
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(dev)
            img = self.model.visual_projection(self.model.vision_model(pixel_values=px).pooler_output)
            txt = self.model.text_projection(self.model.text_model(input_ids=enc.input_ids,
                                                                   attention_mask=enc.attention_mask).pooler_output)
            cos = torch.nn.functional.cosine_similarity(img.double(), txt.double(), dim=-1)
            out += [{"clip_cosine": float(c)} for c in cos.cpu()]
        return out
