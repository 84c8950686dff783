"""MaskUNet on transformer denoisers (DiT, PixArt-α): OUR adaptation of the paper's undescribed "zero-out strategy".

The paper reports masked DiT and PixArt-α numbers (supp. Table 5) without saying how the masks were attached to a
transformer (method.md §5, §8.14). We carry the UNet design over unchanged except for what a transformer lacks:

- **layers**: the attention q/k/v/o linears of the second half of the blocks (:mod:`.transformer_layers`);
- **one mask generator per transformer block** with masked layers (the UNet has one per decoder block): the same
  :class:`~mubench.methods.mask_generator.MaskGenerator`, with ``in_ch = out_ch = D`` (the token width; the UNet takes
  them from the block's first resnet) and ``grid = (D/f) × (D/f)``. Its block features are the tokens entering the
  block, mean-pooled over the sequence (the UNet's GAP of the block input; a transformer block has no skip input),
  plus ``FC_t`` of the block's conditioning vector:

  * DiT: ``c = t_emb + y_emb`` — the timestep *and class* embedding the block's adaLN-Zero consumes (its
    ``norm1.emb``), so the mask depends on the class as well as the timestep (CFG's null class included);
  * PixArt-α: the ``embedded_timestep`` of the model's adaLN-single (the D-wide timestep embedding). Text enters
    the mask only through the pooled image tokens, as in the UNet, whose generator has no text input (§8.2);

- **the same factorised adapters, hard single-Gumbel sigmoid, modes (conditional / faithful), per-row masks and
  per-image noise streams** as :class:`~mubench.methods.maskunet.MaskUNet`, whose code this class inherits; only the
  feature capture differs (forward hooks on the blocks and on the conditioning modules, and the grid is computed on
  the first masked layer of each block call).

The denoiser is a parameter-sharing clone of the base transformer (frozen). ``train()`` keeps that clone in eval
mode (only the generators and adapters change mode): the base is frozen, and diffusers' DiT would otherwise drop
class labels at random in every block on its own (its LabelEmbedding dropout); label dropout for classifier-free
guidance is the training loss's business.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .masking import MaskedLayer, set_mask_fn
from .hook_args import call_arguments, positional_names
from .mask_generator import FactorisedAdapter, MaskGenerator
from .maskunet import MaskUNet, MaskUNetParams
from .transformer_layers import decoder_blocks, is_transformer


def conditioning_source(model: nn.Module) -> str:
    """``class-emb`` (DiT: each block's adaLN-Zero embeds timestep + class) or ``adaln-single`` (PixArt)."""
    if getattr(model, "adaln_single", None) is not None:
        return "adaln-single"
    blocks = model.transformer_blocks
    if all(getattr(getattr(b, "norm1", None), "emb", None) is not None for b in blocks):
        return "class-emb"
    raise UsageError(f"{type(model).__name__}: cannot find the timestep conditioning of its blocks "
                     "(expected DiT's norm1.emb or PixArt's adaln_single)")


class TransformerMaskUNet(MaskUNet):
    """The transformer (a parameter-sharing masked clone, frozen) plus per-block generators and adapters.

    Called exactly like the transformer. Same interface as :class:`MaskUNet` (``row_generators``, ``on_mask``,
    ``layer_logits``, ``layer_mask``, ``trainable_parameters``, ``trainable_state_dict``...).
    """

    def __init__(self, unet: nn.Module, layers: list[MaskedLayer], params: MaskUNetParams) -> None:
        nn.Module.__init__(self)
        if not is_transformer(unet):
            raise UsageError(f"{type(unet).__name__} is not a transformer denoiser")
        self._init_state(unet, layers, params)
        self.source = conditioning_source(unet)
        width = int(unet.transformer_blocks[0].attn1.to_q.in_features)  # the token width D
        self.width = width
        self.blocks = {}
        for layer in layers:
            if layer.kind != "linear":
                raise UsageError(f"transformer masks cover linears only, {layer.name} is a {layer.kind}")
            self.blocks.setdefault(layer.block, None)
        self.generators = nn.ModuleDict({
            _mkey(key): MaskGenerator(width, width, width, params.hidden, params.factor, params.mode,
                                      params.init_std) for key in self.blocks})
        self.adapters = nn.ModuleList()
        for layer in layers:
            gen = self.generators[_mkey(layer.block)]
            self.adapters.append(FactorisedAdapter(gen.go, gen.gi, layer.shape[0], layer.shape[1],
                                                   params.adapter_bias))
        self._pooled: dict[str, torch.Tensor] = {}
        self._temb: dict[str, torch.Tensor] = {}
        self._grids: dict[str, torch.Tensor] = {}
        for key in self.blocks:
            block = unet.get_submodule(key)
            block.register_forward_pre_hook(self._block_hook(key, positional_names(block.forward)), with_kwargs=True)
            if self.source == "class-emb":
                block.norm1.emb.register_forward_hook(self._emb_hook(key))
        if self.source == "adaln-single":
            unet.adaln_single.register_forward_hook(self._adaln_hook)
        set_mask_fn(layers, lambda i, layer: (lambda module, i=i: self._masked_weights(i, module)))
        n = len(unet.transformer_blocks)
        d = decoder_blocks(n)
        self.extra_info = {
            "adaptation": "transformer (ours; the paper describes none): per-block generator on mean-pooled tokens "
                          "+ FC_t(conditioning), UNet adapters and Gumbel sigmoid unchanged",
            "blocks": n, "decoder_blocks": f"{d.start}-{d.stop - 1}",
            "generator_conditioning": ("t_emb + class_emb (the block's adaLN-Zero input)" if self.source == "class-emb"
                                       else "embedded timestep of adaLN-single (text only via pooled tokens)"),
        }

    def train(self, mode: bool = True) -> "TransformerMaskUNet":
        """Switch the generators and adapters; the frozen transformer stays in eval mode (see module docstring)."""
        self.training = mode
        self.generators.train(mode)
        self.adapters.train(mode)
        self.unet.eval()
        return self

    # ---- feature capture
    def _block_hook(self, key: str, names: tuple[str, ...]):
        def hook(module, args, kwargs):
            h = call_arguments(names, args, kwargs).get("hidden_states")
            if h is None:
                raise RuntimeError(f"maskunet: {key} was called without hidden_states")
            self._pooled[key] = h.mean(dim=1)  # [B, N, D] → [B, D]
            self._grids.pop(key, None)
            return None

        return hook

    def _emb_hook(self, key: str):
        def hook(module, args, output):
            self._temb[key] = output
            return None

        return hook

    def _adaln_hook(self, module, args, output) -> None:
        for key in self.blocks:
            self._temb[key] = output[1]  # (6D modulation, D-wide embedded timestep)

    def layer_logits(self, i: int) -> torch.Tensor:
        """Logits of masked layer ``i`` for the rows of the current block call: ``[B, out, in]``."""
        key = self.masked[i].block
        grid = self._grids.get(key)
        if grid is None:
            pooled, temb = self._pooled.get(key), self._temb.get(key)
            if pooled is None or temb is None:
                raise RuntimeError(f"maskunet: no features captured for {key} (is a hook bypassed?)")
            gen = self.generators[_mkey(key)]
            temb = temb.to(gen.fc_t.weight.dtype)
            grid = gen(pooled.to(temb.dtype)[:, :, None, None], temb)
            self._grids[key] = grid
        return self.adapters[i](grid)


def _mkey(block: str) -> str:
    return block.replace(".", "-")


def mask_model_class(denoiser: nn.Module) -> type:
    """The MaskUNet model class for ``denoiser``: :class:`TransformerMaskUNet` for DiT / PixArt, else MaskUNet."""
    return TransformerMaskUNet if is_transformer(denoiser) else MaskUNet

