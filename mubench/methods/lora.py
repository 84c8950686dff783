"""``lora``: peft LoRA on the denoiser's attention projections (the paper's LoRA baseline, method.md §5, §8.15).

The paper's run: rank 256, alpha 512 (the script's ``--rank`` flag is ignored), gaussian init (A ~ N(0, 1/r),
B = 0, so an untrained adapter leaves the model unchanged), targets ``to_q``/``to_k``/``to_v``/``to_out.0`` of every
attention of the UNet (encoder, mid and decoder), ≈ 51.02M trainable parameters on SD 1.5.

``prepare`` injects the adapters into a parameter-sharing clone of the denoiser (the base bundle is left as is) and
loads the trained adapter weights (peft's state-dict naming, safetensors) from the content-addressed artifact.
With ``merge: true`` (the default) it then folds the factors into the target weights once (peft's layer ``merge``,
on private copies of those weights: the base bundle's stay as they are), so sampling costs what the base model
costs; ``merge: false`` keeps the factors as separate matmuls. ``merge`` is part of the method's protocol (the two
paths round differently, ~1e-6 on fp32) but not of the artifact's key: both load the same trained factors.
"""
from __future__ import annotations


import torch
from torch import nn

from ..errors import UsageError
from ..models.base import ModelBundle
from .base import MethodContext, Prepared
from .masking import clone_sharing_parameters
from .training import TrainableMethod
from .params import LoRAParams

class LoRAPrepared(Prepared):
    """The denoiser with LoRA layers injected; ``trainable_parameters()`` are the ``lora_A``/``lora_B`` weights."""

    def merge(self) -> int:
        """Fold every LoRA layer's factors into its target weight; returns how many layers were merged.

        Each target weight is first replaced by a private copy (the clone shares the base bundle's parameters, and
        peft merges in place), so the base model and any other method built from it are untouched.
        """
        from peft.tuners.lora import LoraLayer

        merged = 0
        for module in self.denoiser.modules():
            if isinstance(module, LoraLayer) and not module.merged:
                base = module.get_base_layer()
                base.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
                module.merge()
                merged += 1
        for p in self.trainable_parameters():  # merged factors are no longer used: nothing trains them by mistake
            p.requires_grad_(False)
        return merged

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.denoiser.named_parameters() if "lora_" in n]

    def artifact_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.denoiser)

    def load_artifact_state(self, tensors: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        expected = self.artifact_state()
        if set(expected) != set(tensors) or any(tuple(expected[k].shape) != tuple(tensors[k].shape)
                                                for k in expected):
            raise UsageError("artifact does not match this LoRA configuration (different targets or rank)")
        result = set_peft_model_state_dict(self.denoiser, tensors)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UsageError(f"LoRA artifact has keys the model does not: {unexpected[:3]}")


class LoRAMethod(TrainableMethod):
    """LoRA factors are the artifact; ``prepare`` (load or train on demand) comes from :class:`TrainableMethod`."""

    Params = LoRAParams
    artifact_kind = "lora"
    released_grad_clip = None  # the released LoRA script's clipping clipped nothing (method.md §8.16)

    def prepare(self, bundle: ModelBundle, ctx: MethodContext) -> LoRAPrepared:
        """Load (or train on demand) the factors, then merge them for sampling when ``merge`` is on."""
        return self.for_sampling(super().prepare(bundle, ctx))

    def for_sampling(self, prepared: LoRAPrepared) -> LoRAPrepared:  # type: ignore[override]
        prepared.info["merged_layers"] = prepared.merge() if self.params.merge else 0
        return prepared

    def build(self, bundle: ModelBundle, ctx: MethodContext) -> LoRAPrepared:
        from peft import LoraConfig, inject_adapter_in_model

        p: LoRAParams = self.params
        p.validate()
        denoiser = clone_sharing_parameters(bundle.denoiser)
        denoiser.requires_grad_(False)
        config = LoraConfig(r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=list(p.targets),
                            init_lora_weights=True if p.init == "default" else "gaussian")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.train.seed)
            try:
                denoiser = inject_adapter_in_model(config, denoiser)
            except ValueError as err:
                raise UsageError(f"lora: {err}") from None
        lora_params = [(n, t) for n, t in denoiser.named_parameters() if "lora_" in n]
        for _, t in lora_params:
            t.requires_grad_(True)
        added = sum(t.numel() for _, t in lora_params)
        layers = []
        for name, module in denoiser.named_modules():
            base = getattr(module, "base_layer", None)
            if base is not None and hasattr(module, "lora_A"):
                layers.append({"name": name, "kind": "lora", "shape": list(base.weight.shape), "rank": p.r,
                               "weights": int(base.weight.numel())})
        info = {"change": "lora", "r": p.r, "alpha": p.alpha, "init": p.init, "targets": list(p.targets),
                "lora_layers": len(layers), "merge": p.merge}
        return LoRAPrepared(denoiser, added_params=added, trainable_params=added, info=info, layers=layers)
