"""``maskunet`` the method: builds the masked model for a base bundle (:class:`~.maskunet.MaskUNet` for a UNet, our
adaptation :class:`~.transformer_masks.TransformerMaskUNet` for a DiT / PixArt transformer) and describes it;
training, the artifact and ``prepare`` come from :class:`~.training.TrainableMethod`."""
from __future__ import annotations

import torch

from ..errors import UsageError
from ..kernels.masked_weights import register_group_operator, triton_unavailable
from ..models.base import ModelBundle
from .base import MethodContext
from .masking import install_frozen_masked_layers, masked_weight_count
from .maskunet import MaskUNetParams
from .maskunet_sampling import MaskUNetPrepared, compiles
from .training import TrainableMethod
from .transformer_layers import is_transformer
from .transformer_masks import mask_model_class


class MaskUNetMethod(TrainableMethod):
    """Generator + adapter weights are the artifact; ``prepare`` (load or train on demand) comes from
    :class:`TrainableMethod`."""

    Params = MaskUNetParams
    artifact_kind = "maskunet"
    released_grad_clip = None  # the released script's clipping clipped nothing (method.md §8.16)

    @property
    def compile_safe(self) -> bool:
        p = self.params  # known before loading: the grouped path covers every layer where only linears are masked
        return compiles(p.deterministic, p.noise, fused_covers_every_layer=p.layers == "decoder-attn")

    def compiles_on(self, bundle: ModelBundle) -> bool:
        """The grouped path is MaskUNet's (UNet) own: a DiT / PixArt adaptation computes masks layer by layer."""
        p = self.params
        return compiles(p.deterministic, p.noise, p.layers == "decoder-attn" and not is_transformer(bundle.denoiser))

    def build(self, bundle: ModelBundle, ctx: MethodContext) -> MaskUNetPrepared:
        p: MaskUNetParams = self.params
        p.validate()
        unet, layers, device = install_frozen_masked_layers(bundle.denoiser, p.layers)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.train.seed)
            with torch.device("meta" if device.type == "meta" else "cpu"):
                model = mask_model_class(unet)(unet, layers, p)
        if p.kernel == "triton":
            if model._fused is None:
                raise UsageError("kernel=triton covers the masked linears of a UNet; transformer masks use "
                                 "kernel=torch")
            why = triton_unavailable(device) if device.type != "meta" else None
            if why is not None:
                raise UsageError(f"kernel=triton: {why}")
            register_group_operator()  # before any call: a compiled denoiser cannot register it while tracing
        model.generators.to(device)
        model.adapters.to(device)
        added = sum(t.numel() for t in model.trainable_parameters())
        info = {
            "change": "maskunet", "mode": p.mode, "layers": p.layers, "factor": p.factor, "hidden": p.hidden,
            "deterministic": p.deterministic,
            "sampler": "logit > 0" if p.deterministic else "single Gumbel draw, P(keep) = 1 - exp(-e^logit)",
            "mask_scope": ("per denoiser row (each CFG row its own mask, as released)" if p.mask_scope == "row" else
                           "per image: both CFG rows use the conditional row's mask (ours, not released)"),
            "noise": ("Philox counter keyed by (image stream and call, layer, weight, row slot)"
                      if p.noise == "counter" else "per-image generator streams"),
            "kernel": p.kernel,
            "masked_layers": len(layers), "masked_weights": masked_weight_count(layers),
            "generators": len(model.generators), **getattr(model, "extra_info", {}),
        }
        return MaskUNetPrepared(model, added_params=added, trainable_params=added, info=info,
                                layers=[layer.describe() for layer in layers])
