"""micro-CLIP: the micro world's image–text model, trained contrastively on the micro data.

It plays CLIP's two roles in the micro world: the CLIP score (cosine between an image and its
caption) and the feature space of FID, as clean-fid offers CLIP features for FID.

* Image tower: a small CNN (GroupNorm, so an image's features never depend on its batch),
  32×32 → 4×4×C, flattened (position survives) → ``feature_dim`` "penultimate" features (the FID
  space) → linear projection to the ``embed_dim`` joint space.
* Text tower: a tiny transformers ``CLIPTextModel`` built from a config over the micro tokenizer
  (:mod:`mubench.micro.text`), pooled at the EOS token → linear projection.
* Training (:func:`train_micro_clip`): symmetric InfoNCE with soft targets: a caption's positives
  are every image in the batch it is *true of* (``"a circle"`` is true of a red circle), from the
  generator's ground truth. AdamW, cosine decay, one CPU thread in a few minutes.

Weights are saved with safetensors; the config and training facts ride in the file's metadata,
so :func:`load_micro_clip` needs nothing else. The zoo keeps them at ``zoo/micro/micro-clip.safetensors``
(:func:`zoo_dir`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn
from torch.nn import functional as F
from transformers import CLIPTextConfig, CLIPTextModel

from ..errors import AssetError
from ..fsutil import atomic_write_bytes
from . import art as A
from . import data as D
from . import scene as S
from . import text as T

CLIP_FILENAME = "micro-clip.safetensors"
FORMAT = "mubench-micro-clip/1"


@dataclass
class MicroClipConfig:
    """Architecture of micro-CLIP (stored in the weights file's metadata)."""

    widths: tuple[int, ...] = (32, 64, 96)  # conv widths at 32, 16 and 8 px (then pooled to 4×4)
    convs_per_block: int = 1
    feature_dim: int = 64  # penultimate image features: the FID feature space
    embed_dim: int = 64  # joint image–text space (CLIP score)
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_mlp: int = 128
    vocab_size: int = 0  # 0: the micro tokenizer's size
    max_length: int = T.MAX_LENGTH

    def resolved(self) -> "MicroClipConfig":
        out = MicroClipConfig(**asdict(self))
        out.widths = tuple(int(w) for w in self.widths)
        if out.vocab_size <= 0:
            out.vocab_size = len(T.vocabulary())
        return out


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU()]
    return nn.Sequential(*layers)


class MicroClip(nn.Module):
    """CNN image tower + tiny CLIP text tower with projections into one normalised space."""

    def __init__(self, config: Optional[MicroClipConfig] = None) -> None:
        super().__init__()
        self.config = (config or MicroClipConfig()).resolved()
        c = self.config
        blocks, cin = [], 3
        for w in c.widths:
            blocks += [_block(cin, w, c.convs_per_block), nn.AvgPool2d(2)]
            cin = w
        self.image_tower = nn.Sequential(*blocks)  # 32 → 4 px after three poolings
        side = S.IMAGE_SIZE // 2 ** len(c.widths)
        self.image_head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, c.feature_dim), nn.GELU())
        self.image_proj = nn.Linear(c.feature_dim, c.embed_dim)
        self.text_tower = CLIPTextModel(CLIPTextConfig(
            vocab_size=c.vocab_size, hidden_size=c.text_hidden, intermediate_size=c.text_mlp,
            num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads,
            max_position_embeddings=c.max_length, pad_token_id=T.PAD_ID, bos_token_id=T.BOS_ID,
            eos_token_id=T.EOS_ID, projection_dim=c.embed_dim))
        self.text_proj = nn.Linear(c.text_hidden, c.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    # ---- towers ------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [B, feature_dim] of float images [B, 3, 32, 32] in [0, 1] (FID space)."""
        if images.shape[-2:] != (S.IMAGE_SIZE, S.IMAGE_SIZE):
            images = F.interpolate(images, size=(S.IMAGE_SIZE, S.IMAGE_SIZE), mode="bilinear",
                                   antialias=True, align_corners=False)
        return self.image_head(self.image_tower((images - 0.5) / 0.25))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings [B, embed_dim]."""
        return F.normalize(self.image_proj(self.image_features(images)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings [B, embed_dim] (pooled at EOS)."""
        pooled = self.text_tower(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_proj(pooled), dim=-1)

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B_img, B_txt] = scale · cosine."""
        scale = self.logit_scale.exp().clamp(max=100.0)
        return scale * self.encode_image(images) @ self.encode_text(input_ids, attention_mask).T


class MicroClipEncoder:
    """micro-CLIP with its tokenizer: captions and images in, embeddings out (no gradients)."""

    def __init__(self, model: MicroClip) -> None:
        self.model = model.eval()
        self.tokenizer = T.build_tokenizer()

    @torch.no_grad()
    def texts(self, captions: list[str]) -> torch.Tensor:
        ids, mask = T.encode(self.tokenizer, captions)
        device = next(self.model.parameters()).device
        return self.model.encode_text(ids.to(device), mask.to(device))

    @torch.no_grad()
    def images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised embeddings, penultimate features) of float images [B, 3, H, W] in [0, 1]."""
        feats = self.model.image_features(images)
        return F.normalize(self.model.image_proj(feats), dim=-1), feats


def uint8_to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] → float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


# ---- training ------------------------------------------------------------------------------------


@dataclass
class MicroClipTrainParams:
    """How micro-CLIP is trained (recorded in the weights' metadata)."""

    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    seed: int = 0
    mix: dict[str, float] = field(default_factory=lambda: {"single": 0.55, "two": 0.2, "count": 0.1,
                                                           "relation": 0.15})


ProgressFn = Callable[[int, int, dict[str, float]], None]


def _truth(scenes: list[S.Scene]) -> torch.Tensor:
    """[B_txt, B_img]: 1 where caption i is true of scene j's objects."""
    n = len(scenes)
    out = torch.zeros(n, n)
    for i, s in enumerate(scenes):
        for j, o in enumerate(scenes):
            if i == j or (len(o.objects) == len(s.objects) and S.describes(s.phrases, s.relation, o.objects)):
                out[i, j] = 1.0
    return out


def _batches(split: str, batch_size: int, seed: int, mix: dict[str, float]):
    """Endless (scenes, uint8 images) batches of stream ``seed`` of ``split``."""
    for scenes in D.iterate_scene_batches(split, batch_size, seed, mix):
        yield scenes, S.render_batch(scenes)


def contrastive_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with soft targets; ``logits`` [img, txt], ``truth`` [txt, img]."""
    t2i = truth / truth.sum(1, keepdim=True)
    i2t = truth.T / truth.T.sum(1, keepdim=True)
    loss_t = -(t2i * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    loss_i = -(i2t * F.log_softmax(logits, dim=1)).sum(1).mean()
    return (loss_t + loss_i) / 2


def train_micro_clip(steps: Optional[int] = None, seed: Optional[int] = None, progress: Optional[ProgressFn] = None,
                     params: Optional[MicroClipTrainParams] = None,
                     config: Optional[MicroClipConfig] = None,
                     batches: Optional[Iterator[tuple[list[S.Scene], np.ndarray]]] = None) -> MicroClip:
    """Train micro-CLIP from scratch on the micro ``train`` split (or on ``batches``: an endless stream of
    (scenes, uint8 images) of ``params.batch_size``) and return it (eval mode, CPU).

    ``steps`` overrides ``params.steps`` (default 800: a few minutes on one CPU thread);
    ``seed`` overrides ``params.seed`` (default 0), which seeds the weights and the data stream, so a run is
    reproducible on one machine;
    ``progress(step, total, {"loss": ...})`` is called after every step. The returned model
    carries ``model.train_info`` (params, first and final loss) for the zoo manifest.
    """
    params = MicroClipTrainParams(**asdict(params)) if params is not None else MicroClipTrainParams()
    if steps is not None:
        params.steps = int(steps)
    if seed is not None:
        params.seed = int(seed)
    torch.manual_seed(params.seed)
    model = MicroClip(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": params.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=params.lr)

    def lr_at(step: int) -> float:
        if step < params.warmup:
            return (step + 1) / params.warmup
        frac = (step - params.warmup) / max(1, params.steps - params.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    tokenizer = T.build_tokenizer()
    stream = batches if batches is not None else _batches("train", params.batch_size, params.seed, params.mix)
    losses: list[float] = []
    for step in range(params.steps):
        scenes, images = next(stream)
        ids, mask = T.encode(tokenizer, [s.caption for s in scenes])
        logits = model(uint8_to_float(images), ids, mask)
        loss = contrastive_loss(logits, _truth(scenes))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1, params.steps, {"loss": losses[-1]})
    model.eval()
    # nothing of the wall clock: it is saved with the weights, whose file must not change with the machine's load
    model.train_info = {"params": asdict(params), "final_loss": float(np.mean(losses[-20:])) if losses else None,
                        "first_loss": losses[0] if losses else None}
    return model


# ---- quality -----------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_micro_clip(model: MicroClip, n: int = 600, split: str = "val", world: str = "micro") -> dict[str, float]:
    """Zero-shot accuracy of micro-CLIP on single-object ``split`` images: colour, shape and fill
    (caption templates "a {colour} {shape}", "a {fill} {shape}"), and caption retrieval among
    ``n`` mixed-kind scenes (the best caption must be true of the image), the mean cosine of
    images with their own captions, and ``fid_real_vs_real``: FID between the ``n`` scenes and
    another real render of each of their captions (the floor a perfect generator reaches). ``world="micro-art"``
    evaluates on the art distribution's ``split`` instead."""
    if world not in ("micro", "micro-art"):
        raise ValueError(f"unknown micro world {world!r}")
    make = A.make_art_scenes if world == "micro-art" else D.make_scenes
    enc = MicroClipEncoder(model)
    scenes = make(split, n, {"single": 1.0})
    img_emb, _ = enc.images(uint8_to_float(S.render_batch(scenes)))
    out: dict[str, float] = {}
    pairs = [(c, s) for c in S.COLORS for s in S.SHAPES]
    sims = img_emb @ enc.texts([f"{'an' if c[0] in 'aeiou' else 'a'} {c} {s}" for c, s in pairs]).T
    pred = [pairs[k] for k in sims.argmax(1).tolist()]
    out["color_acc"] = float(np.mean([p[0] == s.objects[0].color for p, s in zip(pred, scenes)]))
    out["shape_acc"] = float(np.mean([p[1] == s.objects[0].shape for p, s in zip(pred, scenes)]))
    fills = [(f, s) for f in S.FILLS for s in S.SHAPES]
    sims = img_emb @ enc.texts([f"a {f} {s}" for f, s in fills]).T
    pred_f = [fills[k] for k in sims.argmax(1).tolist()]
    out["fill_acc"] = float(np.mean([p[0] == s.objects[0].fill for p, s in zip(pred_f, scenes)]))
    mixed = make(split, n, {"single": 0.25, "two": 0.25, "count": 0.25, "relation": 0.25})
    img_emb, _ = enc.images(uint8_to_float(S.render_batch(mixed)))
    captions = sorted({s.caption for s in mixed})
    sims = img_emb @ enc.texts(captions).T
    best = [captions[k] for k in sims.argmax(1).tolist()]
    out["retrieval_acc"] = float(np.mean([S.describes(*S.parse_caption(b), s.objects) for b, s in zip(best, mixed)]))
    own = (img_emb * enc.texts([s.caption for s in mixed])).sum(1)
    out["mean_cosine"] = float(own.mean())
    # the FID floor: two independent real renders of the same captions
    from ..metrics.fid import fid_from_features

    if world == "micro-art":
        again = [A.realize_art(s.phrases, s.relation, A.art_rng(split, i, 99)) for i, s in enumerate(mixed)]
    else:
        again = [D.realize(s.phrases, s.relation, D.scene_rng(split, i, 99), split) for i, s in enumerate(mixed)]
    _, f1 = enc.images(uint8_to_float(S.render_batch(mixed)))
    _, f2 = enc.images(uint8_to_float(S.render_batch(again)))
    out["fid_real_vs_real"] = fid_from_features(f1.double().numpy(), f2.double().numpy(), force=True)
    return {k: round(v, 4) for k, v in out.items()}


# ---- files -------------------------------------------------------------------------------------


def zoo_dir(world: str = "micro") -> Path:
    """The shipped zoo folder of ``world``: ``zoo/<world>`` in a source checkout, package data
    ``mubench._zoo/<world>`` after installation (:func:`mubench.micro.assets.default_zoo_root`)."""
    from .assets import default_zoo_root

    return default_zoo_root() / world


def save_micro_clip(model: MicroClip, path: str | Path, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write weights as safetensors with the config (and training info, ``extra``) as metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": json.dumps(asdict(model.config)),
            "train_info": json.dumps(getattr(model, "train_info", {}), sort_keys=True)}
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # one metadata key: safetensors writes a metadata map in hash order, so several keys give a different file
    # (and sha256) on every save of the same weights
    return atomic_write_bytes(path, save(state, metadata={"mubench": json.dumps(meta, sort_keys=True)}))


def load_micro_clip(path: str | Path, device: str | torch.device = "cpu") -> MicroClip:
    """Load weights written by :func:`save_micro_clip` (eval mode)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AssetError(f"micro-CLIP weights not found: {path}\n  build them with `mubench zoo build micro`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "mubench" in meta:  # written since the one-key layout; the shipped file has the keys at the top level
        meta = json.loads(meta["mubench"])
    if meta.get("format") != FORMAT:
        raise AssetError(f"{path}: not a micro-CLIP weights file (format {meta.get('format')!r}, expected {FORMAT!r})")
    cfg = json.loads(meta["config"])
    cfg["widths"] = tuple(cfg["widths"])
    model = MicroClip(MicroClipConfig(**cfg))
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise AssetError(f"{path}: weights do not match the micro-CLIP config (missing {missing}, unexpected {unexpected})")
    model.train_info = json.loads(meta.get("train_info", "{}"))
    return model.to(device).eval()


def random_micro_clip(seed: int = 0) -> MicroClip:
    """micro-CLIP with seeded random weights (tests, ``weights=random``)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return MicroClip().eval()
    finally:
        torch.random.set_rng_state(gen_state)
