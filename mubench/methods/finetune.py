"""``full-ft``: fine-tune every weight of the denoiser (the paper's full fine-tuning baseline), optionally with dropout.

The trainable denoiser is a real copy of the base denoiser (its own weights; the base bundle is left as is). Its
artifact is the whole denoiser state dict (safetensors).

Dropout (the ``dropout`` spec, paper supp. B.7 "fine-tuning with dropout, ratio 0.1", placement not stated;
method.md §5 recommends resnet and attention-output dropout): ``dropout: p`` sets the probability of the
``torch.nn.Dropout`` modules diffusers already places in the UNet, at the sites listed in ``dropout_at``:

``resnet``
    ``ResnetBlock2D.dropout``: after the second norm + SiLU, before ``conv2``, in every resnet of the down, mid
    and up blocks;
``attention``
    ``Attention.to_out[1]``: after the output projection of every self- (``attn1``) and cross-attention
    (``attn2``) of the transformer blocks;
``feedforward``
    ``FeedForward.net[1]``: after the GEGLU of every transformer block's feed-forward (off by default).

Dropout only acts in training mode: sampling (eval mode) uses the whole network, as a dropout-trained model does.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import UsageError
from ..models.base import ModelBundle
from .artifacts import copy_matching_state
from .base import MethodContext, Prepared
from .training import TrainableMethod
from .params import FullFTParams

def dropout_site(name: str) -> str | None:
    """Which :data:`DROPOUT_SITES` entry the ``nn.Dropout`` named ``name`` belongs to (None: another one)."""
    if ".resnets." in f".{name}" and name.endswith(".dropout"):
        return "resnet"
    if name.endswith(("attn1.to_out.1", "attn2.to_out.1")):
        return "attention"
    if ".ff.net." in name:
        return "feedforward"
    return None


def set_dropout(module: nn.Module, p: float, sites: list[str]) -> dict[str, int]:
    """Set ``p`` on the denoiser's dropout modules at ``sites``; returns how many were set per site."""
    counts = {s: 0 for s in sites}
    for name, m in module.named_modules():
        if isinstance(m, nn.Dropout):
            site = dropout_site(name)
            if site in counts:
                m.p = float(p)
                counts[site] += 1
    return counts


class FullFTPrepared(Prepared):
    """A fine-tuned copy of the denoiser: every parameter is trainable and part of the artifact."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    def artifact_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.denoiser.state_dict().items()}

    def load_artifact_state(self, tensors: dict[str, torch.Tensor]) -> None:
        copy_matching_state(self.denoiser.state_dict(), tensors, "this denoiser")


class FullFineTune(TrainableMethod):
    """Every denoiser weight is trained (``dropout``: with dropout at the chosen sites during training)."""

    Params = FullFTParams
    artifact_kind = "full-ft"
    released_grad_clip = 1.0  # the released full fine-tune script clips at 1 (and it works there)

    def build(self, bundle: ModelBundle, ctx: MethodContext) -> FullFTPrepared:
        p: FullFTParams = self.params
        p.validate()
        denoiser = copy.deepcopy(bundle.denoiser)
        denoiser.requires_grad_(True)
        denoiser.eval()
        counts = set_dropout(denoiser, p.dropout, list(p.dropout_at)) if p.dropout else {}
        if p.dropout and not sum(counts.values()):
            raise UsageError(f"{self.name}: no dropout module at {', '.join(p.dropout_at)} in this denoiser")
        n = sum(t.numel() for t in denoiser.parameters())
        info = {"change": "full-ft", "dropout": p.dropout}
        if p.dropout:
            info["dropout_sites"] = counts
        return FullFTPrepared(denoiser, added_params=0, trainable_params=n, info=info)
