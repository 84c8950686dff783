"""``imagereward``: ImageReward v1.0, without the ``image-reward`` package (../shared/deps.md §3b, protocols.md §5.2).

ImageReward = BLIP (a ViT-L/16 image encoder at 224 px and a BERT-base text encoder whose layers cross-attend to the
image tokens) + an MLP head 768→1024→128→64→16→1 on the text [CLS] state; the reward is that output standardised
with the package's constants, ``(r − 0.16717362830052426) / 1.0333394966054072``. Its package cannot be imported
with transformers 5 (its vendored BLIP imports helpers that moved) and pins timm 0.6.13 against open_clip's
timm>=1.0.17, so mubench rebuilds the same network from transformers' BLIP modules and loads ``ImageReward.pt``
with a key remap:

- ``blip.visual_encoder.*`` (BLIP's timm-style ViT: ``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``) → ``BlipVisionModel``
  (``embeddings.class_embedding``, ``embeddings.position_embedding``, ``embeddings.patch_embedding``,
  ``encoder.layers.N.{layer_norm1,self_attn.qkv,self_attn.projection,layer_norm2,mlp.fc1,mlp.fc2}``,
  ``post_layernorm``); LayerNorm eps 1e-6 as in BLIP's ViT;
- ``blip.text_encoder.*`` (BLIP's ``med.py`` BertModel without pooler) → ``BlipTextModel`` (the same names);
- ``mlp.layers.{0,2,4,6,7}`` → the head's linears (the dropouts in between hold no weights).

Other keys of the checkpoint (if any) are ignored and listed in ``describe()``; every parameter of the rebuilt
network must be found. The prompt is tokenized by BERT's uncased WordPiece tokenizer plus BLIP's two added tokens
(``[DEC]`` as bos, ``[ENC]``), padded/truncated to 35 tokens, as ``ImageReward.score`` does (its first token stays
[CLS]). The gradient path ("score_gard" in the package) is :meth:`ImageRewardScorer.reward`: the image goes through
Resize(224, bicubic) → CenterCrop → CLIP normalisation on the tensor (method.md §4.3). Files: the ``imagereward``
checkpoint, ``imagereward-med-config`` (BLIP's text config) and ``bert-base-uncased`` (the tokenizer's vocab.txt),
all local (:func:`mubench.assets.require`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import LOCATION_ONLY
from ..errors import AssetError, UsageError
from .base import ScorerContext
from .hpsv2 import load_state_dict_file
from .rewards import RewardScorer, clip_preprocess, resolve_precision

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
# BLIP "large" image encoder (ImageReward: BLIP_Pretrain(image_size=224, vit="large"))
VIT_LARGE = {"width": 1024, "layers": 24, "heads": 16, "patch_size": 16, "mlp_ratio": 4.0}
# med_config.json of ImageReward (BERT-base with cross-attention); used with weights=random when none is given
DEFAULT_MED_CONFIG = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "max_position_embeddings": 512, "vocab_size": 30524,
                      "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0}


@dataclass
class ImageRewardParams:
    # ImageReward.pt (default: the imagereward asset's places)
    checkpoint: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    med_config: Optional[str] = None  # med_config.json (default: the imagereward-med-config asset)
    tokenizer: Optional[str] = None  # folder with bert-base-uncased's vocab.txt (default: the bert-base-uncased asset)
    image_size: int = 224
    vision_width: int = VIT_LARGE["width"]  # BLIP ViT-L; smaller values build tiny test networks
    vision_layers: int = VIT_LARGE["layers"]
    vision_heads: int = VIT_LARGE["heads"]
    patch_size: int = VIT_LARGE["patch_size"]
    max_length: int = 35  # prompt tokens, as ImageReward.score
    precision: str = "auto"  # auto (fp16 on a GPU, fp32 on CPU) | float32 | float16 | bfloat16
    random_seed: int = 0  # seed of the random weights when the run has weights=random


class RewardHead(nn.Module):
    """ImageReward's MLP: 768→1024→128→64→16→1 (dropouts between, no activations), indices as released."""

    def __init__(self, width: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))
        for name, p in self.layers.named_parameters():
            if "weight" in name:
                nn.init.normal_(p, mean=0.0, std=1.0 / (width + 1))
            else:
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class ImageRewardNet(nn.Module):
    """BLIP image encoder + image-grounded text encoder + reward head (transformers modules)."""

    def __init__(self, med: dict[str, Any], p: ImageRewardParams) -> None:
        super().__init__()
        from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        vcfg = BlipVisionConfig(hidden_size=p.vision_width, intermediate_size=int(p.vision_width * 4),
                                num_hidden_layers=p.vision_layers, num_attention_heads=p.vision_heads,
                                image_size=p.image_size, patch_size=p.patch_size, hidden_act="gelu",
                                layer_norm_eps=1e-6)
        tcfg = BlipTextConfig(vocab_size=med["vocab_size"], hidden_size=med["hidden_size"],
                              encoder_hidden_size=p.vision_width, intermediate_size=med["intermediate_size"],
                              num_hidden_layers=med["num_hidden_layers"],
                              num_attention_heads=med["num_attention_heads"],
                              max_position_embeddings=med["max_position_embeddings"],
                              hidden_act=med.get("hidden_act", "gelu"),
                              layer_norm_eps=med.get("layer_norm_eps", 1e-12), pad_token_id=med.get("pad_token_id", 0),
                              bos_token_id=None, sep_token_id=None, eos_token_id=None, is_decoder=True)
        self.vision = BlipVisionModel(vcfg)
        self.text = BlipTextModel(tcfg, add_pooling_layer=False)
        self.head = RewardHead(med["hidden_size"])

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixels).last_hidden_state
        image_atts = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                        encoder_attention_mask=image_atts, is_decoder=False)
        raw = self.head(out.last_hidden_state[:, 0, :]).float().squeeze(-1)
        return (raw - REWARD_MEAN) / REWARD_STD


def remap_checkpoint(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """ImageReward.pt keys → :class:`ImageRewardNet` keys; returns (remapped, ignored original keys)."""
    vis_block = {"norm1": "layer_norm1", "attn.qkv": "self_attn.qkv", "attn.proj": "self_attn.projection",
                 "norm2": "layer_norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    vis_top = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
               "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
               "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
               "norm.weight": "post_layernorm.weight", "norm.bias": "post_layernorm.bias"}
    out, ignored = {}, []
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            rest = key[len("blip.visual_encoder."):]
            if rest in vis_top:
                out["vision." + vis_top[rest]] = value
                continue
            parts = rest.split(".")
            if parts[0] == "blocks" and len(parts) >= 4:
                sub, leaf = ".".join(parts[2:-1]), parts[-1]
                if sub in vis_block:
                    out[f"vision.encoder.layers.{parts[1]}.{vis_block[sub]}.{leaf}"] = value
                    continue
        elif key.startswith("blip.text_encoder."):
            rest = key[len("blip.text_encoder."):]
            if not rest.startswith("pooler.") and not rest.endswith("position_ids"):
                out["text." + rest] = value
                continue
        elif key.startswith("mlp.layers."):
            out["head." + key[len("mlp."):]] = value
            continue
        ignored.append(key)
    return out, ignored


def blip_tokenizer(vocab_dir: Path, max_length: int):
    """BERT uncased WordPiece from ``vocab.txt`` + BLIP's added tokens ([DEC] as bos, [ENC])."""
    from transformers import BertTokenizer

    vocab = vocab_dir / "vocab.txt" if vocab_dir.is_dir() else vocab_dir
    if not vocab.is_file():
        raise AssetError(f"{vocab_dir}: no vocab.txt (bert-base-uncased tokenizer)")
    words = vocab.read_text(encoding="utf-8").splitlines()
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words) if w}, do_lower_case=True,
                        model_max_length=max_length)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    if len(tok) < 10:  # transformers 5 can silently build a near-empty tokenizer
        raise AssetError(f"{vocab}: tokenizer came out with only {len(tok)} tokens")
    return tok


class ImageRewardScorer(RewardScorer):
    """ImageReward v1.0: the standardised reward of BLIP + MLP (higher is better)."""

    Params = ImageRewardParams
    version = "1"

    def __init__(self, params: ImageRewardParams, ctx: ScorerContext, name: str) -> None:
        super().__init__(params, ctx, name)
        from ..assets import file_sha256, require

        random = ctx.weights == "random"
        if params.med_config or not random:
            med_path = require("imagereward-med-config", params.med_config)
            try:
                med = {**DEFAULT_MED_CONFIG, **json.loads(Path(med_path).read_text())}
            except (OSError, ValueError) as err:
                raise AssetError(f"{med_path}: unreadable med_config.json ({err})") from None
        else:
            med = dict(DEFAULT_MED_CONFIG)
        self.tokenizer = blip_tokenizer(require("bert-base-uncased", params.tokenizer), params.max_length)
        if len(self.tokenizer) > med["vocab_size"]:
            raise UsageError(f"the tokenizer has {len(self.tokenizer)} tokens, the text encoder only "
                             f"{med['vocab_size']}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(params.random_seed))
            net = ImageRewardNet(med, params)
        self.ignored: list[str] = []
        if random:
            self._hash = f"random-{params.random_seed}"
            self._path: Optional[Path] = None
        else:
            self._path = require("imagereward", params.checkpoint)
            remapped, self.ignored = remap_checkpoint(load_state_dict_file(self._path, "ImageReward"))
            expected = net.state_dict()
            missing = sorted(set(expected) - set(remapped))
            unexpected = sorted(set(remapped) - set(expected))
            wrong = sorted(k for k in set(expected) & set(remapped) if expected[k].shape != remapped[k].shape)
            if missing or unexpected or wrong:
                raise AssetError(f"{self._path} does not fit ImageReward's BLIP + MLP (missing {missing[:3]}, "
                                 f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
            net.load_state_dict(remapped, strict=True)
            self._hash = file_sha256(self._path)
        self.dtype = resolve_precision(params.precision, ctx.device)
        self.net = net.to(ctx.device, self.dtype).eval().requires_grad_(False)

    def weights_hash(self) -> str:
        return self._hash

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "backbone": "BLIP ViT-L/16 + BERT-base cross-attention + MLP (ImageReward v1.0)",
                "weights": self._path.name if self._path else "random", "image_size": self.params.image_size,
                "standardised": {"mean": REWARD_MEAN, "std": REWARD_STD}, "max_length": self.params.max_length,
                "ignored_checkpoint_keys": len(self.ignored)}

    def reward(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        device = next(self.net.parameters()).device
        x = clip_preprocess(images.to(device=device, dtype=torch.float32), self.params.image_size).to(self.dtype)
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.params.max_length,
                             return_tensors="pt")
        return self.net(x, tok["input_ids"].to(device), tok["attention_mask"].to(device)).float()
