"""MaskUNet's learned parts and its binarisation (method.md §3.1-3.2), without the UNet wiring (:mod:`.maskunet`).

- :class:`MaskGenerator`: one per block, pooled block features + ``FC_t(temb)`` → 1×1 convs → a ``[B, go, gi]`` grid;
- :class:`FactorisedAdapter`: one per masked layer, the grid → that layer's logits ``[B, out, in]``;
- :func:`sample_hard_mask`: the released single-Gumbel hard sigmoid (straight-through with gradients, the bare
  event ``E < e^ℓ`` without), and :func:`keep_probability`, its ``P(keep) = 1 − exp(−e^ℓ)``.

The transformer variant (:mod:`.transformer_masks`) uses the same generator and adapter.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

__all__ = ["FactorisedAdapter", "MaskGenerator", "keep_probability", "sample_hard_mask"]


class MaskGenerator(nn.Module):
    """Block-level generator: pooled block features + FC_t(temb) → 1×1 convs → a ``[B, go, gi(, k, k)]`` grid."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, hidden: int, factor: int, mode: str,
                 init_std: float) -> None:
        super().__init__()
        if in_ch % factor or out_ch % factor:
            raise UsageError(f"block channels {in_ch}/{out_ch} are not divisible by factor {factor}")
        self.in_ch, self.out_ch = in_ch, out_ch
        self.go, self.gi = out_ch // factor, in_ch // factor
        self.final_relu = mode == "faithful"
        self.fc_t = nn.Linear(temb_dim, in_ch, bias=False)
        self.conv1 = nn.Conv2d(in_ch, hidden, 1)
        self.conv2 = nn.Conv2d(hidden, self.go * self.gi, 1)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv1.bias)
        if mode == "faithful":
            nn.init.zeros_(self.conv2.weight)
        else:
            nn.init.normal_(self.conv2.weight, std=init_std)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, pooled: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``pooled``: ``[B, in_ch, s, s]`` block features; ``temb``: ``[B, temb_dim]``."""
        z = pooled + self.fc_t(temb)[:, :, None, None]
        z = self.conv2(F.relu(self.conv1(z)))
        if self.final_relu:
            z = F.relu(z)
        b, _, kh, kw = z.shape
        grid = z.reshape(b, self.go, self.gi, kh, kw)
        return grid[..., 0, 0] if (kh, kw) == (1, 1) else grid


class FactorisedAdapter(nn.Module):
    """Grid ``[B, go, gi(, k, k)]`` → logits ``[B, out, in(, k, k)]``: a 1×1 conv over go, then one over gi."""

    def __init__(self, go: int, gi: int, out_features: int, in_features: int, bias: float) -> None:
        super().__init__()
        self.rows = nn.Linear(go, out_features)  # the 1×1 conv over the grid's output axis
        self.cols = nn.Linear(gi, in_features)  # the 1×1 conv over the grid's input axis
        for lin in (self.rows, self.cols):
            nn.init.zeros_(lin.weight)
            nn.init.constant_(lin.bias, bias)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        g = grid if grid.ndim == 3 else grid.permute(0, 3, 4, 1, 2)  # [..., go, gi]
        h = self.rows(g.transpose(-1, -2)).transpose(-1, -2)  # [..., out, gi]
        logits = self.cols(h)  # [..., out, in]
        return logits if grid.ndim == 3 else logits.permute(0, 3, 4, 1, 2)


def keep_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(keep) of the released single-Gumbel hard sigmoid: ``1 − exp(−e^ℓ)``."""
    return -torch.expm1(-torch.exp(logits))


def sample_hard_mask(logits: torch.Tensor, noise: torch.Tensor, tau: float = 1.0,
                     straight_through: Optional[bool] = None) -> torch.Tensor:
    """Hard Gumbel-sigmoid mask from ``logits`` and ``noise`` = E ~ Exp(1) (``g = −log E``).

    With ``straight_through`` (default: when gradients are being recorded) returns the float
    ``hard − sg(s) + s``, ``s = σ((ℓ + g)/τ)``, as the released code; otherwise the bool event ``E < e^ℓ``
    (the same event as ``ℓ + g > 0``, without the log, the sigmoid and the straight-through arithmetic).
    """
    if straight_through is None:
        straight_through = torch.is_grad_enabled() and logits.requires_grad
    if not straight_through:
        return noise < torch.exp(logits)
    soft = torch.sigmoid((logits - torch.log(noise)) / tau)
    hard = (soft > 0.5).to(soft.dtype)
    return hard - soft.detach() + soft
