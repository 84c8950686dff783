"""``geneval-detector``: GenEval's per-image verdict from a Mask2Former detector and a CLIP colour classifier.

Backend ``mask2former``: transformers ``Mask2FormerForUniversalSegmentation`` from a local folder (asset
``mask2former-hf``, the transformers port of the Swin-S COCO instance model; the official evaluator uses
the mmdetection 2.x checkpoint, and the two are not verified to give identical detections). Instances
come from ``post_process_instance_segmentation`` (score = class probability × mask score, as mmdet's
Mask2Former); boxes are the tight boxes of the instance masks (mmdet also derives them from masks).
Label i of an 80-class COCO model is GenEval's ``object_names.txt`` entry i.

Colour (:class:`ClipColorClassifier`): each object is composited over a flat ``#999`` background with
its mask, cropped to its box, and classified zero-shot by CLIP ViT-L/14 (asset ``clip-vit-l-14``)
over GenEval's ten colours with its three templates (text embeddings normalised, averaged over
templates, re-normalised; logits 100·img·W; argmax), preprocessed as open_clip's transform (bicubic
resize of the short side, centre crop, OpenAI mean/std).

``weights=random`` builds tiny random Mask2Former and CLIP models (tests: numbers meaningless).
The rules themselves live in :mod:`mubench.suites.geneval_rules`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from ..config import LOCATION_ONLY
from ..errors import AssetError, UsageError
from ..suites.base import PromptItem
from ..suites.geneval_rules import COLORS, OBJECT_NAMES, Detection, RuleParams, judge
from .base import Scorer, ScorerContext

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATES = ("a photo of a {c} {cls}", "a photo of a {c}-colored {cls}", "a photo of a {c} object")


@dataclass
class GenEvalDetectorParams:
    # transformers Mask2Former folder (else assets / HF cache)
    detector_path: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    # transformers CLIP ViT-L/14 folder (else assets / HF cache)
    clip_path: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1
    bgcolor: str = "#999"
    crop: bool = True
    clip_image_size: int = 224

    def rules(self) -> RuleParams:
        return RuleParams(self.threshold, self.counting_threshold, self.max_objects, self.max_overlap,
                          self.position_threshold)


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3,H,W] float in [0,1] → RGB PIL image (rounded to uint8, as a saved PNG holds it)."""
    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def _byte_level_clip_tokenizer():
    from transformers import CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in cs]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={s: i for i, s in enumerate(vocab)}, merges=[], model_max_length=77)


def tiny_clip(seed: int = 0):
    """A tiny random CLIPModel with a byte-level tokenizer (offline; tests)."""
    from transformers import CLIPConfig, CLIPModel

    tok = _byte_level_clip_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                pad_token_id=513)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(seed)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval(), tok


def tiny_mask2former(seed: int = 0, num_labels: int = 80):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                          window_size=4, out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = Mask2FormerConfig(backbone_config=backbone, num_labels=num_labels, num_queries=8, hidden_dim=32,
                            mask_feature_size=32, feature_size=32, encoder_layers=1, decoder_layers=2,
                            encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2, common_stride=4,
                            use_pretrained_backbone=False)
    torch.manual_seed(seed)
    return Mask2FormerForUniversalSegmentation(cfg).eval()


class ClipColorClassifier:
    """GenEval's zero-shot colour classifier over a transformers CLIPModel."""

    def __init__(self, model, tokenizer, image_size: int = 224, device: torch.device = torch.device("cpu"),
                 bgcolor: str = "#999", crop: bool = True) -> None:
        self.model, self.tokenizer, self.size = model.to(device).eval(), tokenizer, image_size
        self.device, self.bgcolor, self.crop = device, bgcolor, crop
        self._weights: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_weights(self, classname: str) -> torch.Tensor:
        """[10, D]: per colour, the mean of the normalised template embeddings, re-normalised."""
        if classname not in self._weights:
            rows = []
            for c in COLORS:
                texts = [t.format(c=c, cls=classname) for t in TEMPLATES]
                enc = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
                pooled = self.model.text_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).pooler_output
                emb = self.model.text_projection(pooled)
                emb = emb / emb.norm(dim=-1, keepdim=True)
                mean = emb.mean(0)
                rows.append(mean / mean.norm())
            self._weights[classname] = torch.stack(rows)
        return self._weights[classname]

    def crops(self, image: Image.Image, objects: list[Detection]) -> list[Image.Image]:
        image = image.convert("RGB")
        blank = image.copy() if self.bgcolor == "original" else Image.new("RGB", image.size, color=self.bgcolor)
        out = []
        for obj in objects:
            im = image
            if obj.mask is not None:
                if tuple(obj.mask.shape) != (image.size[1], image.size[0]):
                    raise ValueError(f"mask {obj.mask.shape} does not match image {image.size[::-1]}")
                im = Image.composite(image, blank, Image.fromarray(np.asarray(obj.mask, dtype=bool)))
            if self.crop:
                im = im.crop(tuple(obj.box[:4]))
            out.append(im)
        return out

    def preprocess(self, im: Image.Image) -> torch.Tensor:
        """open_clip's transform (torchvision ``Resize(size)`` + ``CenterCrop(size)``): bicubic resize of the short
        side to ``size``, the long side truncated to ``int(size * long / short)`` as torchvision computes it, centre
        crop, OpenAI normalisation."""
        w, h = im.size
        short, long = min(w, h), max(w, h)
        new_long = int(self.size * long / short)
        size = (self.size, new_long) if w <= h else (new_long, self.size)
        im = im.convert("RGB").resize(size, Image.BICUBIC)
        w, h = im.size
        left, top = int(round((w - self.size) / 2.0)), int(round((h - self.size) / 2.0))
        im = im.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(3, 1, 1)

    @torch.no_grad()
    def __call__(self, image: Image.Image, objects: list[Detection], classname: str) -> list[str]:
        if not objects:
            return []
        px = torch.stack([self.preprocess(c) for c in self.crops(image, objects)]).to(self.device)
        feats = self.model.visual_projection(self.model.vision_model(pixel_values=px).pooler_output)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        logits = 100.0 * feats @ self.text_weights(classname).T
        return [COLORS[int(i)] for i in logits.argmax(dim=1)]


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The box of a non-empty bool mask [H, W] as mmdet's ``mask2bbox`` gives it to the reference evaluator:
    ``(x_min, y_min, x_max + 1, y_max + 1)``, right and bottom edges exclusive (as PIL's ``crop`` reads them)."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


class Mask2FormerDetector:
    """Instances of an 80-class COCO Mask2Former as GenEval-named :class:`Detection` lists."""

    def __init__(self, model, processor, device: torch.device = torch.device("cpu"),
                 class_names: tuple[str, ...] = OBJECT_NAMES) -> None:
        if model.config.num_labels != len(class_names):
            raise UsageError(f"the detector has {model.config.num_labels} labels; GenEval needs the "
                             f"{len(class_names)} COCO classes")
        self.model, self.processor, self.device, self.names = model.to(device).eval(), processor, device, class_names

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> dict[str, list[Detection]]:
        inputs = self.processor(images=[np.array(image.convert("RGB"))], return_tensors="pt").to(self.device)
        out = self.model(**inputs)
        res = self.processor.post_process_instance_segmentation(
            out, threshold=0.0, target_sizes=[(image.size[1], image.size[0])], return_binary_maps=True)[0]
        dets: dict[str, list[Detection]] = {}
        seg = res.get("segmentation")
        for k, info in enumerate(res["segments_info"]):
            mask = seg[k].cpu().numpy().astype(bool) if seg is not None else None
            if mask is None or not mask.any():
                continue
            detection = Detection(mask_box(mask), float(info["score"]), mask)
            dets.setdefault(self.names[int(info["label_id"])], []).append(detection)
        return dets


class GenEvalDetector(Scorer):
    Params = GenEvalDetectorParams
    version = "2"  # 2: mmdet-style exclusive box edges, torchvision-style resize of the crops

    def __init__(self, params: GenEvalDetectorParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        from transformers import Mask2FormerImageProcessor

        if ctx.weights == "random":
            model = tiny_mask2former(0)
            processor = Mask2FormerImageProcessor(size={"height": 64, "width": 64})
            clip, tok = tiny_clip(0)
            self._hash = "random:tiny-mask2former+tiny-clip:seed0"
            size = 32
        else:
            model, processor, clip, tok = self._load(params)
            size = params.clip_image_size
        self.detector = Mask2FormerDetector(model, processor, ctx.device)
        self.colors = ClipColorClassifier(clip, tok, size, ctx.device, params.bgcolor, params.crop)

    def _load(self, params: GenEvalDetectorParams):
        from transformers import AutoTokenizer, CLIPModel, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        from ..assets import require, weights_files_hash

        det_path = require("mask2former-hf", params.detector_path)
        clip_path = require("clip-vit-l-14", params.clip_path)
        try:
            model = Mask2FormerForUniversalSegmentation.from_pretrained(det_path, local_files_only=True)
            processor = Mask2FormerImageProcessor.from_pretrained(det_path, local_files_only=True)
            clip = CLIPModel.from_pretrained(clip_path, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(clip_path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise AssetError(f"cannot load the GenEval detector or CLIP: {err}") from None
        if len(tok) < 1000:
            raise AssetError(f"the CLIP tokenizer in {clip_path} has only {len(tok)} tokens; its files are missing")
        self._hash = weights_files_hash(det_path, clip_path)
        return model, processor, clip, tok

    def weights_hash(self) -> str:
        return self._hash

    def describe(self) -> dict[str, Any]:
        p = self.params
        return {**super().describe(), "detector": "Mask2Former (transformers) COCO instance",
                "color_classifier": "CLIP ViT-L/14 zero-shot, GenEval templates", "threshold": p.threshold,
                "counting_threshold": p.counting_threshold, "max_objects": p.max_objects,
                "max_overlap": p.max_overlap, "position_threshold": p.position_threshold}

    def score(self, images: torch.Tensor, items: list[PromptItem]) -> list[dict[str, Any]]:
        out = []
        for img, item in zip(images, items):
            pil = to_pil(img)
            verdict = judge(item.meta, self.detector(pil), lambda objs, cls: self.colors(pil, objs, cls),
                            self.params.rules())
            out.append({"correct": bool(verdict.correct), "reason": verdict.reason, "tag": item.meta["tag"],
                        "details": {c: [list(d.box) for d in ds] for c, ds in verdict.kept.items()}})
        return out
