"""``maskunet``: the training-based MaskUNet (method.md §3) — learned, timestep- and sample-dependent binary masks.

Per UNet block that holds masked layers, a **mask generator** (``z = GAP(h_in ⊕ skip) + FC_t(temb)``, two 1×1 convs,
a ``[B, go, gi]`` grid; pooled to the kernel size for conv layers) runs once per block and forward (a forward
pre-hook); per masked layer a **factorised adapter** (``go → out``, then ``gi → in``; weights 0, bias 5: masks start
all ones) turns the grid into logits; the **hard Gumbel-sigmoid** keeps a weight when ``E < e^ℓ``, ``E ~ Exp(1)``
(a single Gumbel draw, as released: ``P(keep) = 1 − exp(−e^ℓ)``; straight-through with gradients on;
``deterministic: true`` uses ``ℓ > 0``). The parts live in :mod:`.mask_generator`; this module wires them into the
UNet. Every row of the denoiser batch gets its own mask (both CFG rows too, as released; ``mask_scope: image``
shares the conditional row's), applied by batched matmul.

Sampling (no gradients) computes the linears' masks a group at a time (:mod:`.maskunet_fast`). Noise: ``stream``
(default; every number so far) draws an image's ``E`` from a generator seeded from its stream; ``counter`` keys
Philox by (image stream and call, layer, weight index, row slot) (:mod:`mubench.kernels.philox`), so a fused kernel
can draw it in registers: ``kernel: triton`` (:mod:`mubench.kernels.masked_weights`) computes logits, noise,
threshold and ``W ⊙ M`` in one pass on a GPU.

Modes (method.md §3.3, §8.3): ``faithful`` reproduces the released code — zero-initialised last generator conv
followed by ReLU, so the generator's output and all its gradients are exactly 0 forever and the learned logits are
static; ``conditional`` (default) drops that final ReLU and initialises the last conv with N(0, ``init_std``) so the
generator learns. Only blocks with masked layers get a generator (docs/methods.md has the counts).

Training: :class:`MaskUNet` is called like the UNet; ``trainable_parameters()`` are the generators and adapters
(the UNet is frozen and shared with the base bundle); with gradients on and no per-row generators set, the Gumbel
noise comes from the global torch RNG.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.philox import counter_exponential
from .artifacts import copy_matching_state
from .hook_args import call_arguments, positional_names
from .masking import (MaskedLayer, MaskedWeights, RowGroups, keep_mask, masked_product, set_mask_fn,
                      thresholded_product)
from .mask_generator import FactorisedAdapter, MaskGenerator, keep_probability, sample_hard_mask
from .maskunet_fast import FusedMasks, draw_group_noise, exponential_noise, streams_of_rows
from .params import MaskUNetParams

__all__ = ["MaskUNet", "MaskUNetParams", "exponential_noise", "keep_probability", "sample_hard_mask"]

@dataclass
class _BlockSpec:
    key: str  # module path of the block (``up_blocks.1``)
    kernel_sizes: set  # pooled sizes its layers need ((1, 1) for linears, (k, k) for convs)


class MaskUNet(nn.Module):
    """The UNet (a parameter-sharing masked clone, frozen) plus MaskUNet's generators and adapters.

    Called exactly like the UNet. ``row_generators`` (set by the sampler hooks) makes the Gumbel noise of row ``r``
    come from ``row_generators[r]``; unset, it comes from the global torch RNG (training). ``on_mask`` (optional) is
    called as ``on_mask(layer_index, mask)`` for every mask produced (for mask statistics).
    """

    def __init__(self, unet: nn.Module, layers: list[MaskedLayer], params: MaskUNetParams) -> None:
        super().__init__()
        self._init_state(unet, layers, params)
        blocks: dict[str, _BlockSpec] = {}
        for layer in layers:
            size = (1, 1) if layer.kind == "linear" else tuple(layer.module.kernel_size)
            blocks.setdefault(layer.block, _BlockSpec(layer.block, set())).kernel_sizes.add(size)
        self.blocks = blocks
        self.generators = nn.ModuleDict()
        for key in blocks:
            block = unet.get_submodule(key)
            conv1 = block.resnets[0].conv1
            temb_dim = block.resnets[0].time_emb_proj.in_features
            self.generators[_mkey(key)] = MaskGenerator(conv1.in_channels, conv1.out_channels, temb_dim,
                                                        params.hidden, params.factor, params.mode, params.init_std)
        self.adapters = nn.ModuleList()
        for layer in layers:
            gen = self.generators[_mkey(layer.block)]
            out_f, in_f = layer.shape[0], layer.shape[1]
            self.adapters.append(FactorisedAdapter(gen.go, gen.gi, out_f, in_f, params.adapter_bias))
        self._grids: dict[tuple[str, tuple[int, int]], torch.Tensor] = {}
        self._arg_names: dict[str, tuple[str, ...]] = {}
        for key in blocks:
            block = unet.get_submodule(key)
            self._arg_names[key] = positional_names(block.forward)
            block.register_forward_pre_hook(self._make_hook(key), with_kwargs=True)
        set_mask_fn(layers, lambda i, layer: (lambda module, i=i: self._masked_weights(i, module)))
        # sampling (no gradients): linears computed a group at a time (maskunet_fast); not for subclasses that
        # compute their logits another way
        self._fused = FusedMasks(self) if type(self).layer_logits is MaskUNet.layer_logits else None

    def _init_state(self, unet: nn.Module, layers: list[MaskedLayer], params: MaskUNetParams) -> None:
        """The state every mask model has (subclasses that capture features their own way call this, not
        ``__init__``); the grouped path (``_fused``) is MaskUNet's own and starts unset."""
        self.unet = unet
        self.masked = layers
        self.mode = params.mode
        self.tau = params.tau
        self.deterministic = params.deterministic
        self.row_generators: Optional[list[torch.Generator]] = None
        self.on_mask: Optional[Callable[[int, torch.Tensor], None]] = None
        self.mask_scope = params.mask_scope
        self.noise, self.kernel = params.noise, params.kernel
        # sampling with noise=counter (set by the sampler hooks): each row's Philox key and its slot in its image
        self.row_keys: Optional[torch.Tensor] = None
        self.row_slots: Optional[torch.Tensor] = None
        # sampling with mask_scope=image (set by the sampler hooks): the rows whose masks are drawn (one per image)
        # and which rows use which of them
        self.share: Optional[tuple[list[int], RowGroups]] = None
        self._fused: Optional[FusedMasks] = None

    # ---- the UNet interface
    def forward(self, *args, **kwargs):
        return self.unet(*args, **kwargs)

    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the UNet's blocks; a recompute replays the same Gumbel noise (the RNG state is restored)."""
        self.unet.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()

    # ---- training
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The generators' and adapters' parameters (the UNet itself stays frozen)."""
        return [*self.generators.parameters(), *self.adapters.parameters()]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(("generators.", "adapters."))}

    def load_trainable_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        copy_matching_state(self.trainable_state_dict(), tensors, "this maskunet architecture")

    # ---- masks
    def _make_hook(self, key: str):
        def hook(module, args, kwargs):
            bound = call_arguments(self._arg_names[key], args, kwargs)
            h, temb = bound.get("hidden_states"), bound.get("temb")
            if h is None or temb is None:
                raise RuntimeError(f"maskunet: {key} was called without hidden_states/temb")
            feats = [h]
            skips = bound.get("res_hidden_states_tuple")
            if skips:
                feats.append(skips[-1])
            gen = self.generators[_mkey(key)]
            temb = temb.to(gen.fc_t.weight.dtype)
            for size in self.blocks[key].kernel_sizes:
                pooled = torch.cat([F.adaptive_avg_pool2d(f, size) for f in feats], 1).to(temb.dtype)
                if pooled.shape[1] != gen.in_ch:
                    raise RuntimeError(f"maskunet: {key} features have {pooled.shape[1]} channels, "
                                       f"its generator expects {gen.in_ch}")
                self._grids[(key, size)] = gen(pooled, temb)
            if self._fused is not None:
                self._fused.new_features(key)
            return None

        return hook

    def layer_logits(self, i: int) -> torch.Tensor:
        """Logits of masked layer ``i`` for the rows of the last forward: ``[B, *weight.shape]``."""
        layer = self.masked[i]
        size = (1, 1) if layer.kind == "linear" else tuple(layer.module.kernel_size)
        grid = self._grids.get((layer.block, size))
        if grid is None:
            raise RuntimeError(f"maskunet: no features captured for {layer.block} (is the hook bypassed?)")
        return self.adapters[i](grid)

    def _noise(self, logits: torch.Tensor, generators: Optional[list[torch.Generator]] = None, layer: int = 0,
               rows: Optional[list[int]] = None) -> torch.Tensor:
        """``E ~ Exp(1)`` shaped like ``logits`` (fp32). With ``row_keys`` set (``noise: counter``): Philox keyed by
        each row's key and slot and by ``layer`` (``rows``: the rows of the call these logits belong to). Else rows
        sharing a generator (of ``generators``, default ``row_generators``) draw together (``[rows, ...]`` in memory
        order), without generators from the global RNG."""
        keys = self.row_keys
        if keys is not None:
            slots = self.row_slots
            if rows is not None:
                keys, slots = keys[rows], slots[rows]
            return counter_exponential(keys, slots, layer, tuple(logits.shape[1:]))
        streams = streams_of_rows(self.row_generators if generators is None else generators, logits.shape[0])
        return draw_group_noise((1, *logits.shape), streams, logits.device)[0]

    def _mask_terms(self, i: int, rows: Optional[list[int]]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Layer ``i``'s logits (fp32, even under autocast) and noise for the rows of the current call (``rows``: only
        these rows, in this order). The noise is None when sampling ``deterministic``: an inference-only option, left
        out of the artifact key, so training (gradients on) always draws the Gumbel noise of method.md §3.2."""
        logits = self.layer_logits(i).float()
        generators = self.row_generators
        if rows is not None:
            logits = logits[rows]
            generators = None if generators is None else [generators[r] for r in rows]
        training = torch.is_grad_enabled() and logits.requires_grad
        return logits, None if self.deterministic and not training else self._noise(logits, generators, i, rows)

    def layer_mask(self, i: int, rows: Optional[list[int]] = None) -> torch.Tensor:
        """Masks of layer ``i`` for the rows of the current call (``rows``: only these rows, in this order)."""
        logits, noise = self._mask_terms(i, rows)
        if not (torch.is_grad_enabled() and logits.requires_grad):  # sampling: the bool event E < e^l (or l > 0)
            return keep_mask(logits, noise)
        return sample_hard_mask(logits, noise, self.tau, straight_through=True)

    def _masked_weights(self, i: int, module: nn.Module) -> MaskedWeights:
        fast = self._fused
        if fast is not None and not torch.is_grad_enabled():
            fused = fast.weights(i, module)
            if fused is not None:
                return fused
        share = self.share if not torch.is_grad_enabled() else None
        rows = share[0] if share is not None else None
        if self.on_mask is None and not torch.is_grad_enabled():  # sampling, no observer: no bool mask needed
            weight = thresholded_product(module.weight, *self._mask_terms(i, rows))
            return MaskedWeights(weight, share[1] if share is not None else None)
        mask = self.layer_mask(i, rows)
        if self.on_mask is not None:
            self.on_mask(i, mask.detach())
        # a bool mask multiplies without a float copy of it; a float one (training: straight-through) as it is
        weight = (masked_product(module.weight, mask) if mask.dtype == torch.bool
                  else module.weight * mask.to(module.weight.dtype))
        return MaskedWeights(weight, share[1] if share is not None else None)


def _mkey(block: str) -> str:
    return block.replace(".", "-")
