"""Which linears of a transformer denoiser (DiT, PixArt-α) a mask covers: our transformer layer sets.

The paper masks the *decoder* of SD 1.5's UNet (the up-block attention q/k/v/o) and gives no rule for its DiT /
PixArt results (method.md §5, §8.14). A DiT-style denoiser is a stack of ``transformer_blocks`` with no encoder or
decoder, so *our adaptation* takes the second half of the stack as the "decoder" analogue (blocks
``N // 2 … N − 1``; 14–27 of DiT-XL/2's and PixArt-α's 28) and keeps the UNet rule inside it: the attention
projections ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` and nothing else (feed-forward, adaLN modulation, timestep /
class embeddings, patch embedding and the output projection stay unmasked). Sets:

``decoder-attn`` (default)
    every attention of the second half: DiT's self-attention ``attn1``; PixArt's self-attention ``attn1`` and
    cross-attention ``attn2`` (the analogue of SD's attn1 + attn2).
``decoder-self-attn`` / ``decoder-cross-attn``
    only ``attn1`` / only ``attn2`` of the second half (cross-attention exists in PixArt only).
``decoder-attn+ff``
    ``decoder-attn`` plus the feed-forward linears (``ff.net.0.proj``, ``ff.net.2``) of the same blocks — the
    transformer counterpart of ``decoder-attn+conv`` (a transformer block has no convolution).
``encoder-attn``
    the attention of the first half (an ablation: the "encoder" analogue).
``all-attn`` / ``all``
    the attention (``all``: and the feed-forward) linears of every block.
"""
from __future__ import annotations

import re

from torch import nn

from ..errors import UsageError
from .params import TRANSFORMER_LAYER_SETS

ATTN_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FF_LINEARS = ("ff.net.0.proj", "ff.net.2")
_LAYER_RE = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


def is_transformer(model: nn.Module) -> bool:
    """True for DiT-style denoisers (a ``transformer_blocks`` stack and no UNet ``up_blocks``)."""
    return isinstance(getattr(model, "transformer_blocks", None), nn.ModuleList) and not hasattr(model, "up_blocks")


def decoder_blocks(num_blocks: int) -> range:
    """The "decoder" half of a stack of ``num_blocks`` blocks: ``num_blocks // 2 … num_blocks − 1``."""
    return range(num_blocks // 2, num_blocks)


def _wanted(rest: str, layer_set: str) -> bool:
    """Whether the in-block name ``rest`` (``attn1.to_q``, ``ff.net.2``...) belongs to ``layer_set``."""
    attn = next((a for a in ("attn1", "attn2") if rest in {f"{a}.{p}" for p in ATTN_PROJECTIONS}), None)
    if attn is not None:
        if layer_set == "decoder-self-attn":
            return attn == "attn1"
        if layer_set == "decoder-cross-attn":
            return attn == "attn2"
        return True
    return rest in FF_LINEARS and layer_set in ("decoder-attn+ff", "all")


def select_transformer_layers(model: nn.Module, layer_set: str = "decoder-attn") -> list[tuple[str, nn.Module]]:
    """The (qualified name, ``nn.Linear``) pairs of ``layer_set`` in a transformer denoiser, in module order."""
    if layer_set not in TRANSFORMER_LAYER_SETS:
        hint = " (a transformer block has no convolution; try decoder-attn+ff)" if "conv" in layer_set else ""
        raise UsageError(f"layer set {layer_set!r} does not apply to the transformer {type(model).__name__}"
                         f"{hint}; expected one of {', '.join(TRANSFORMER_LAYER_SETS)}")
    n = len(model.transformer_blocks)
    if layer_set.startswith("decoder"):
        blocks = set(decoder_blocks(n))
    elif layer_set == "encoder-attn":
        blocks = set(range(n // 2))
    else:
        blocks = set(range(n))
    chosen = []
    for name, module in model.named_modules():
        m = _LAYER_RE.match(name)
        if not m or not isinstance(module, nn.Linear) or int(m.group(1)) not in blocks:
            continue
        if _wanted(m.group(2), layer_set):
            chosen.append((name, module))
    if not chosen:
        raise UsageError(f"layer set {layer_set!r} selects no layer in {type(model).__name__} with {n} blocks"
                         + (" (it has no cross-attention)" if layer_set == "decoder-cross-attn" else ""))
    return chosen
