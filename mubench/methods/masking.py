"""Weight masking on a diffusers ``UNet2DConditionModel``: which layers are masked, and layers that apply masks.

Layer sets (method.md §2 and §8.1):

``decoder-attn`` (default)
    every ``nn.Linear`` inside ``up_blocks`` whose qualified name contains none of ``time_emb_proj``, ``ff``,
    ``conv_shortcut``, ``proj_in``, ``proj_out`` — the released MaskUNet rule. In SD 1.5 these are the 72
    ``attn1``/``attn2`` ``to_q``/``to_k``/``to_v``/``to_out.0`` linears of up_blocks 1–3 (49,029,120 weights).
``decoder-attn+conv``
    the above plus every ``nn.Conv2d`` of ``up_blocks`` under the same exclusions (resnet ``conv1``/``conv2`` and the
    upsampler convs; never ``conv_shortcut`` or 1×1 ``proj_in``/``proj_out``).
``all``
    the same two rules applied to ``down_blocks``, ``mid_block`` and ``up_blocks`` (``conv_in``/``conv_out`` and the
    time embedding stay unmasked).

Transformer denoisers (DiT, PixArt-α) take their own sets (``decoder-attn`` = attention q/k/v/o of the second half of
the blocks, our adaptation): see :mod:`mubench.methods.transformer_layers`.

:func:`install_masked_layers` returns a copy of the UNet that *shares* every parameter with the original (no extra
memory, the original is left untouched) in which the selected layers are :class:`MaskedLinear` /
:class:`MaskedConv2d`. Such a layer behaves exactly like the original until a ``mask_fn`` is set; then, for every
forward, ``mask_fn(layer)`` returns the :class:`MaskedWeights` to use (``W ⊙ M`` computed once per layer and call, for
one or several distinct masks) and the layer applies them per sample with one batched matmul
(``y_b = x_b (W ⊙ M_b)ᵀ + bias``; biases are never masked). Rows that share a mask (e.g. the two CFG rows of one image
under a per-image random mask) are grouped into one GEMM instead of copying the weight per row.
"""
from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .params import LAYER_SETS, UNET_LAYER_SETS
from .transformer_layers import is_transformer, select_transformer_layers

EXCLUDED_SUBSTRINGS = ("time_emb_proj", "ff", "conv_shortcut", "proj_in", "proj_out")
_BLOCK_RE = re.compile(r"^(up_blocks\.\d+|down_blocks\.\d+|mid_block|transformer_blocks\.\d+)(\.|$)")


def check_layer_set(name: str) -> None:
    if name not in LAYER_SETS:
        raise ValueError(f"unknown layer set {name!r}; expected one of {', '.join(LAYER_SETS)}")


def block_of(name: str) -> str:
    """``up_blocks.1.attentions.0...`` → ``up_blocks.1`` (the UNet block a layer belongs to;
    ``transformer_blocks.14.attn1.to_q`` → ``transformer_blocks.14``)."""
    m = _BLOCK_RE.match(name)
    if not m:
        raise ValueError(f"layer {name!r} is not inside a UNet block")
    return m.group(1)


def select_layers(unet: nn.Module, layer_set: str = "decoder-attn") -> list[tuple[str, nn.Module]]:
    """The (qualified name, module) pairs of ``layer_set`` in ``unet``, in module order (a DiT / PixArt
    transformer: :func:`~mubench.methods.transformer_layers.select_transformer_layers`)."""
    check_layer_set(layer_set)
    if is_transformer(unet):
        return select_transformer_layers(unet, layer_set)
    if layer_set not in UNET_LAYER_SETS:
        raise UsageError(f"layer set {layer_set!r} is for transformer denoisers; a UNet takes one of "
                         f"{', '.join(UNET_LAYER_SETS)}")
    prefixes = ("up_blocks.",) if layer_set != "all" else ("up_blocks.", "down_blocks.", "mid_block.")
    kinds: tuple[type, ...] = (nn.Linear,) if layer_set == "decoder-attn" else (nn.Linear, nn.Conv2d)
    chosen = []
    for name, module in unet.named_modules():
        if not name.startswith(prefixes) or not isinstance(module, kinds):
            continue
        if any(s in name for s in EXCLUDED_SUBSTRINGS):
            continue
        chosen.append((name, module))
    if not chosen:
        raise UsageError(f"layer set {layer_set!r} selects no layer in {type(unet).__name__} "
                         "(is it a UNet with up_blocks?)")
    return chosen


def clone_sharing_parameters(module: nn.Module) -> nn.Module:
    """A structural copy of ``module`` whose parameters and buffers are the original tensors (no memory copied)."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    return copy.deepcopy(module, memo)


# --------------------------------------------------------------------------------------------------------------
# masked weights and how rows map to masks


class RowGroups:
    """Which mask each row of a denoiser call uses: row ``r`` → mask ``index[r]`` (masks 0..count-1).

    ``identity`` (one mask per row, in order), ``tiled`` (the masks in order, repeated: ``[0..G-1, 0..G-1]``, the CFG
    rows ``[uncond; cond]`` of images that share one mask per image) and ``even`` (every mask used by the same number
    of rows) are the fast layouts; any other layout falls back to gathering weights per row.
    """

    def __init__(self, index: Sequence[int]) -> None:
        idx = torch.as_tensor(list(index), dtype=torch.long)
        if idx.numel() == 0:
            raise ValueError("empty row layout")
        self.index = idx
        self.count = int(idx.max()) + 1
        counts = torch.bincount(idx, minlength=self.count)
        if bool((counts == 0).any()):
            raise ValueError(f"row layout {list(index)} leaves a mask unused")
        self.identity = self.count == idx.numel() and bool((idx == torch.arange(idx.numel())).all())
        self.even = bool((counts == counts[0]).all())
        reps = idx.numel() // self.count
        self.tiled = not self.identity and reps * self.count == idx.numel() and \
            bool((idx == torch.arange(self.count).repeat(reps)).all())
        self.perm = torch.sort(idx, stable=True).indices
        self.inv = torch.argsort(self.perm)
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def rows(self) -> int:
        return int(self.index.numel())

    def on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(index, perm, inv) on ``device`` (cached)."""
        if device not in self._on:
            self._on[device] = (self.index.to(device), self.perm.to(device), self.inv.to(device))
        return self._on[device]

    @staticmethod
    def by_key(keys: Sequence) -> "RowGroups":
        """Rows with equal keys share a mask; masks are numbered by first appearance."""
        order: dict = {}
        return RowGroups([order.setdefault(k, len(order)) for k in keys])


@dataclass
class MaskedWeights:
    """What a masked layer uses for one call.

    ``weight``: ``[G, *W.shape]`` — ``G`` distinct masked weights (``G == 1``: one for the whole batch).
    ``groups``: which rows use which of the ``G`` weights; ``None`` means one weight per row, in row order.
    """

    weight: torch.Tensor
    groups: Optional[RowGroups] = None


MaskFn = Callable[[nn.Module], Optional[MaskedWeights]]


def masked_product(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``W ⊙ M`` for a bool mask ``keep`` (broadcast against ``weight``): bitwise ``where(keep, W, 0)``, dropped
    weights +0, but 4-5x faster on a CPU, where ``where`` is not vectorised (``W · M`` leaves −0 for a dropped
    negative weight; adding +0 turns it into +0 and changes nothing else)."""
    return torch.mul(weight, keep).add_(0.0)


def keep_mask(logits: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The bool mask ``noise < e^logits`` (``logits > 0`` without noise), ``e^logits`` computed in place over
    ``logits`` (the caller's own)."""
    return logits > 0 if noise is None else torch.lt(noise, logits.exp_())


def thresholded_product(weight: torch.Tensor, logits: torch.Tensor,
                        noise: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``W ⊙ M`` with ``M = [noise < e^logits]`` (``[logits > 0]`` without noise), bitwise
    ``masked_product(weight, mask)``; ``logits`` (fp32, the caller's own) is overwritten.

    Sampling's hot path: with an fp32 weight the comparison writes 1.0 / 0.0 into ``logits`` (CPU comparisons are
    vectorised into a float output and not into a bool one) and ``0 + W · M`` is one ``addcmul`` over it, instead of a
    bool mask, its float copy (type promotion), a multiply and an add: on a CPU less than half the time. Products by
    1 and 0 are exact, and adding +0 turns a −0 into +0, so the weights are those of :func:`masked_product`. Other
    weight dtypes (fp16 on a GPU) keep the bool mask, which a GPU casts on the fly."""
    if weight.dtype != logits.dtype:
        return masked_product(weight, keep_mask(logits, noise))
    if noise is None:
        torch.gt(logits, 0.0, out=logits)
    else:
        torch.lt(noise, logits.exp_(), out=logits)
    return torch.addcmul(logits.new_zeros(()), weight, logits, out=logits)


def _bmm(x: torch.Tensor, w: torch.Tensor, bias: Optional[torch.Tensor],
         out: Optional[torch.Tensor] = None) -> torch.Tensor:
    wt = w.transpose(1, 2)
    if bias is None:
        return torch.bmm(x, wt, out=out)
    return torch.baddbmm(bias.to(x.dtype), x, wt, out=out)


def masked_linear(x: torch.Tensor, mw: MaskedWeights, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``y_b = x_b W_{g(b)}ᵀ + bias`` for ``x`` of shape ``[B, ..., in]`` and weights ``[G, out, in]``."""
    w = mw.weight.to(x.dtype)
    if w.shape[0] == 1:
        return F.linear(x, w[0], bias)
    rows = x.shape[0]
    x3 = x.reshape(rows, -1, x.shape[-1])
    groups = mw.groups
    if groups is None or groups.identity:
        if w.shape[0] != rows:
            raise RuntimeError(f"{w.shape[0]} per-row masks for a batch of {rows} rows")
        y = _bmm(x3, w, bias)
    else:
        if groups.rows != rows:
            raise RuntimeError(f"mask layout is for {groups.rows} rows, the batch has {rows}")
        index, perm, inv = groups.on(x.device)
        if groups.tiled:  # k blocks of rows, each using masks 0..G-1 in order: one GEMM per block, no row gathers
            k, n = rows // groups.count, x3.shape[1]
            xk = x3.reshape(k, groups.count, n, x3.shape[-1])
            if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x3, w, bias)):
                y = torch.stack([_bmm(xk[block], w, bias) for block in range(k)])  # out= does not differentiate
            else:
                y = x3.new_empty((k, groups.count, n, w.shape[1]))
                for block in range(k):
                    _bmm(xk[block], w, bias, out=y[block])
            y = y.reshape(rows, n, -1)
        elif groups.even:
            k, n = rows // groups.count, x3.shape[1]
            y = _bmm(x3[perm].reshape(groups.count, k * n, x3.shape[-1]), w, bias)
            y = y.reshape(rows, n, -1)[inv]
        else:
            y = _bmm(x3, w[index], bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def masked_conv2d(conv: nn.Conv2d, x: torch.Tensor, mw: MaskedWeights) -> torch.Tensor:
    """Per-sample masked convolution as one grouped convolution (weights ``[G, out, in/g, k, k]``)."""
    w = mw.weight.to(x.dtype)
    if w.shape[0] == 1:
        return conv._conv_forward(x, w[0], conv.bias)
    if conv.padding_mode != "zeros":
        raise NotImplementedError("per-sample masked convs support padding_mode='zeros' only")
    rows = x.shape[0]
    groups = mw.groups
    if groups is not None and not groups.identity:
        if groups.rows != rows:
            raise RuntimeError(f"mask layout is for {groups.rows} rows, the batch has {rows}")
        if groups.tiled:  # masks in order, k times: one grouped convolution per block of rows, no weight copies
            return torch.cat([_grouped_conv(conv, block, w) for block in x.chunk(rows // groups.count)])
        w = w[groups.on(x.device)[0]]
    elif w.shape[0] != rows:
        raise RuntimeError(f"{w.shape[0]} per-row masks for a batch of {rows} rows")
    return _grouped_conv(conv, x, w)


def _grouped_conv(conv: nn.Conv2d, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Row ``r`` of ``x`` convolved with ``w[r]``: one convolution with ``rows × conv.groups`` groups."""
    rows, out_ch = x.shape[0], w.shape[1]
    bias = conv.bias.to(x.dtype).repeat(rows) if conv.bias is not None else None
    y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), w.reshape(rows * out_ch, *w.shape[2:]), bias,
                 conv.stride, conv.padding, conv.dilation, conv.groups * rows)
    return y.reshape(rows, out_ch, *y.shape[2:])


class MaskedLinear(nn.Linear):
    """An ``nn.Linear`` that multiplies its weight by masks when ``mask_fn`` is set (see module docstring).

    Made by :func:`install_masked_layers` by re-classing a layer of a parameter-sharing clone, so state-dict keys
    (``...to_q.weight``) and the parameters themselves are those of the original layer.
    """

    mask_fn: Optional[MaskFn] = None
    layer_name: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mw = self.mask_fn(self) if self.mask_fn is not None else None
        if mw is None:
            return F.linear(x, self.weight, self.bias)
        return masked_linear(x, mw, self.bias)


class MaskedConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` counterpart of :class:`MaskedLinear` (per-sample masks via a grouped convolution)."""

    mask_fn: Optional[MaskFn] = None
    layer_name: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mw = self.mask_fn(self) if self.mask_fn is not None else None
        if mw is None:
            return self._conv_forward(x, self.weight, self.bias)
        return masked_conv2d(self, x, mw)


@dataclass
class MaskedLayer:
    """One masked layer: its qualified name, the module, its UNet block and its kind (linear | conv)."""

    name: str
    module: nn.Module
    block: str
    kind: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.module.weight.shape)

    @property
    def numel(self) -> int:
        return int(self.module.weight.numel())

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "block": self.block, "shape": list(self.shape),
                "weights": self.numel}


def install_masked_layers(unet: nn.Module, layer_set: str = "decoder-attn") -> tuple[nn.Module, list[MaskedLayer]]:
    """A parameter-sharing clone of ``unet`` whose ``layer_set`` layers are masked layers (no mask set yet)."""
    clone = clone_sharing_parameters(unet)
    layers = []
    for name, module in select_layers(clone, layer_set):
        if type(module) is nn.Linear:
            module.__class__ = MaskedLinear
            kind = "linear"
        elif type(module) is nn.Conv2d:
            module.__class__ = MaskedConv2d
            kind = "conv"
        else:
            raise UsageError(f"cannot mask layer {name!r} of type {type(module).__name__} "
                             "(only plain nn.Linear / nn.Conv2d)")
        module.mask_fn = None
        module.layer_name = name
        layers.append(MaskedLayer(name, module, block_of(name), kind))
    return clone, layers


def install_frozen_masked_layers(denoiser: nn.Module, layer_set: str) -> tuple[nn.Module, list[MaskedLayer],
                                                                                torch.device]:
    """:func:`install_masked_layers` for a method whose only trained or optimised tensors are its own mask
    parameters: the clone's weights (shared with ``denoiser``) frozen; with the device they are on."""
    clone, layers = install_masked_layers(denoiser, layer_set)
    clone.requires_grad_(False)
    return clone, layers, next(clone.parameters()).device


def set_mask_fn(layers: Sequence[MaskedLayer], fn_for: Optional[Callable[[int, MaskedLayer], MaskFn]]) -> None:
    """Give layer ``i`` the mask function ``fn_for(i, layer)`` (``fn_for=None`` unmasks every layer)."""
    for i, layer in enumerate(layers):
        layer.module.mask_fn = None if fn_for is None else fn_for(i, layer)


def masked_weight_count(layers: Sequence[MaskedLayer]) -> int:
    return sum(layer.numel for layer in layers)


def derived_generator(source: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded by one draw from ``source`` (a per-image stream).

    Mask noise for a whole call is drawn on the mask's device from this generator: one draw from the image's
    stream per call keeps results independent of batching, and no large CPU→device copies are needed.
    """
    seed = derived_seed(source)
    dev = torch.device(device)
    if dev.type == "meta":
        dev = torch.device("cpu")
    return torch.Generator(device=dev).manual_seed(seed)


def derived_seed(source: torch.Generator) -> int:
    """One 63-bit draw from ``source`` (a per-image stream): the seed of a call's mask noise."""
    return int(torch.randint(0, 2**63 - 1, (1,), generator=source).item())
