"""``maskunet-free``: training-free MaskUNet (method.md §4) — per-prompt, per-step mask logits optimised at sampling
time against rewards on the decoded predicted x0.

For every image and every denoising step (inside :meth:`MaskUNetFreePrepared.predict`, the sampler's hook):

1. the mask logits (one per weight of every masked layer, ``decoder-attn`` by default: 49,029,120 on SD 1.5, the
   paper's "49.03M") are reset to ``init_logit`` (1.0);
2. ``K`` times (``K = early_updates`` (1) for the first ``early_steps`` (7) steps, ``late_updates`` (10) after):
   draw hard masks from the logits (the released single-Gumbel hard sigmoid, straight-through; one mask per image
   and forward, shared by both classifier-free-guidance rows, as released), run the CFG denoiser call, turn the
   guided prediction into the predicted x0 at this timestep, decode it, compute the reward loss and take one AdamW
   step (lr 1e-2, weight decay 0.01) on the logits;
3. the prediction of the K-th forward (made with the logits after K−1 updates) drives the sampler's step. As
   released, the K-th update is still taken (it only moves AdamW's moments, which persist over the steps of an
   image while the logits are reset); ``final_update: false`` skips it and runs the K-th forward without gradients.

Loss: ``Σ_terms weight · h(target − reward)`` with ``h = ReLU`` for hinged terms and the identity otherwise; the
paper's ``ReLU(2 − ImageReward) + 5·(1 − HPSv2.1)`` is ``[{imagereward, weight 1, target 2, hinge}, {hpsv2, weight 5,
target 1}]``; in the micro world ``micro-clip`` stands in. Rewards are reward scorers (:mod:`mubench.scorers.rewards`).

Only the logits require gradients: the denoiser, decoder, text encoder and reward models are frozen (the released
code computed and kept gradients for all of them, method.md §4.2 v). All randomness (Gumbel noise) comes from the
per-image streams, so images are reproducible per seed and independent of batching. The method samples with its
own protocol (``sampler``: 15 first-order DPM-Solver++ steps by default, what the released code effectively ran —
it re-entered the pipeline each step, which cleared the multistep history; ``dpmsolver++`` gives the second-order
solver), recorded in results.json's protocol.

Cost (docs/efficiency.md): only the logits get gradients, and the straight-through mask is one autograd node per
layer (forward ``W ⊙ 1[E < e^ℓ]`` exactly, backward ``(∂L/∂(W⊙M) · W) · σ'(ℓ − log E)``, the released estimator's
gradient); ``E`` is drawn by inversion of one uniform (:func:`~mubench.methods.maskunet_fast.exponential_noise`); the
front of the denoiser before the first masked layer (``reuse_unmasked``: a UNet's encoder and mid block) runs once
per step and is replayed for the step's other inner updates (:mod:`.prefix_cache`, bitwise the same outputs); the
optimizers use torch's multi-tensor AdamW.
"""
from __future__ import annotations

import contextlib
from dataclasses import fields
from typing import Any, Callable, Optional

import torch

from ..errors import UsageError
from ..models.base import ModelBundle
from .base import Method, MethodContext, Prepared, RowInfo, StepState
from .masking import (MaskedLayer, MaskedWeights, RowGroups, derived_generator,
                      install_frozen_masked_layers, masked_product, masked_weight_count, set_mask_fn)
from .maskunet_fast import exponential_noise
from .prefix_cache import PrefixCache
from .params import MaskUNetFreeParams, RewardTerm

X0_SCHEDULERS = ("ddim", "ddpm", "dpmsolver++", "dpmsolver++1")  # samplers on the DDPM x_t = √ᾱ x0 + √(1−ᾱ) ε grid


def reward_locations(resolved: list[tuple[RewardTerm, type, Any]]) -> tuple[str, ...]:
    """The dotted paths of the rewards' scorer params that are :data:`~mubench.config.LOCATION_ONLY` (a checkpoint's
    path), from :meth:`MaskUNetFree.reward_scorers`: their weights hashes are in the key (``weights_used``), so their
    places are not."""
    return tuple(f"rewards.{i}.params.{f.name}" for i, (term, cls, _) in enumerate(resolved)
                 for f in fields(cls.Params) if f.metadata.get("location_only") and f.name in term.params)


class StraightThroughMaskedWeight(torch.autograd.Function):
    """``(W ⊙ hard, hard)`` with ``hard = 1[E < e^ℓ]``: the weight exactly, or 0. Backward is the gradient of the
    released straight-through mask ``hard − sg(s) + s``, ``s = σ((ℓ − log E)/τ)``: ``∂L/∂ℓ = (∂L/∂(W⊙M) · W) ·
    s(1 − s)/τ``. One node instead of the estimator's chain of elementwise ops (the forward value is exactly
    ``W ⊙ hard``, where the released arithmetic gives it up to a rounding of ``hard − s + s``)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, noise: torch.Tensor, weight: torch.Tensor, tau: float):
        hard = torch.lt(noise, torch.exp(logits))
        ctx.save_for_backward(logits, noise, weight)
        ctx.tau = float(tau)
        ctx.mark_non_differentiable(hard)
        return masked_product(weight, hard), hard

    @staticmethod
    def backward(ctx, grad_masked: torch.Tensor, grad_hard: Optional[torch.Tensor]):
        logits, noise, weight = ctx.saved_tensors
        s = torch.sigmoid((logits - torch.log(noise)) / ctx.tau)
        grad = grad_masked.float() * weight.float() * (s * (1 - s) / ctx.tau)
        return grad, None, None, None


class _ImageState:
    """One image's logits (one tensor per masked layer) and its AdamW, alive for the image's whole trajectory."""

    def __init__(self, layers: list[MaskedLayer], p: MaskUNetFreeParams) -> None:
        self.logits = [torch.full(layer.shape, float(p.init_logit), dtype=torch.float32,
                                  device=layer.module.weight.device, requires_grad=True) for layer in layers]
        self.optimizer = torch.optim.AdamW(self.logits, lr=p.lr, betas=p.betas, weight_decay=p.weight_decay,
                                           eps=p.eps, foreach=True)

    def reset(self, value: float) -> None:
        with torch.no_grad():
            for t in self.logits:
                t.fill_(value)


class MaskUNetFreePrepared(Prepared):
    """The masked denoiser plus the per-step optimisation of :meth:`predict`."""

    compile_safe = False  # each step optimises the masks with autograd in predict (not one traceable call)

    def __init__(self, denoiser, layers: list[MaskedLayer], params: MaskUNetFreeParams, bundle: ModelBundle,
                 rewards: list[tuple[RewardTerm, Any]], info: dict[str, Any]) -> None:
        super().__init__(denoiser, added_params=masked_weight_count(layers), trainable_params=0, info=info,
                         layers=[layer.describe() for layer in layers])
        from diffusers import DDPMScheduler

        self.masked = layers
        self.params = params
        self.bundle = bundle
        self.rewards = rewards
        self.alphas_cumprod = DDPMScheduler.from_config(bundle.scheduler_config).alphas_cumprod.clone()
        self.prediction_type = bundle.scheduler_config.get("prediction_type", "epsilon")
        self.sampler_overrides = {k: v for k, v in (("scheduler", params.sampler.scheduler),
                                                    ("steps", params.sampler.steps)) if v is not None}
        self.on_mask: Optional[Callable[[int, torch.Tensor], None]] = None  # sees the masks that drive the trajectory
        self.last_losses: list[float] = []  # the reward losses of the last predict() (diagnostics, tests)
        self._images: dict[int, _ImageState] = {}
        self._call: Optional[tuple[list[int], RowGroups, list[torch.Generator]]] = None
        self._observe = False
        self._prefix = PrefixCache(denoiser, [layer.module for layer in layers]) if params.reuse_unmasked else None
        set_mask_fn(layers, lambda i, layer: (lambda module, i=i: self._weights(i, module)))

    # ---- sampler hooks
    def begin_batch(self, generators: list[torch.Generator], rows: list[RowInfo]) -> None:
        self._images = {}

    def end_batch(self) -> None:
        self._images = {}
        self._call = None

    def predict(self, state: StepState, model_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        p = self.params
        scheduler = state.extras.get("scheduler")
        if scheduler is not None and scheduler not in X0_SCHEDULERS:
            raise UsageError(f"maskunet-free computes the predicted x0 on the DDPM grid; scheduler {scheduler!r} is not "
                             f"supported (use one of {', '.join(X0_SCHEDULERS)})")
        prompts = state.extras.get("prompts")
        if prompts is None:
            raise RuntimeError("maskunet-free needs the batch's prompts in StepState.extras")
        guidance = float(state.extras.get("guidance", 1.0))
        images, groups = self._start_step(state)
        device = self.masked[0].module.weight.device
        k_total = p.early_updates if state.step_index < p.early_steps else p.late_updates
        self.last_losses = []
        out = None
        for k in range(k_total):
            last = k == k_total - 1
            gens = [derived_generator(state.generators[img], device) for img in images]
            self._call = (images, groups, gens)
            self._observe = last
            update = not last or p.final_update
            with torch.enable_grad() if update else torch.no_grad(), self._front(k, k_total):
                out = model_fn()
                if update:
                    loss = self._loss(out, state, images, [prompts[img] for img in images], guidance)
                    for img in images:
                        self._images[img].optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    for img in images:
                        self._images[img].optimizer.step()
                    self.last_losses.append(float(loss.detach()))
        self._call = None
        self._observe = False
        if self._prefix is not None:
            self._prefix.clear()
        return out.detach()

    def _front(self, k: int, k_total: int):
        """Record the unmasked front of the denoiser at a step's first forward, replay it at the others."""
        if self._prefix is None or k_total == 1:
            return contextlib.nullcontext()
        return self._prefix.record() if k == 0 else self._prefix.replay()

    def forward_once(self, state: StepState, model_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One masked forward from the step's starting logits, nothing optimised (per-forward cost figures)."""
        images, groups = self._start_step(state)
        device = self.masked[0].module.weight.device
        self._call = (images, groups, [derived_generator(state.generators[img], device) for img in images])
        try:
            with torch.no_grad():
                return model_fn()
        finally:
            self._call = None

    def _start_step(self, state: StepState) -> tuple[list[int], RowGroups]:
        """The call's images (in the order of ``state.latents``' rows) and row layout; their logits reset."""
        images = [r.image for r in state.rows if r.cond]  # the order of state.latents' rows
        if len(images) != state.latents.shape[0]:
            raise RuntimeError("maskunet-free: every image of the call needs a conditional row")
        order: dict[int, int] = {img: g for g, img in enumerate(images)}
        groups = RowGroups([order[r.image] for r in state.rows])
        for img in images:
            if img not in self._images:
                self._images[img] = _ImageState(self.masked, self.params)
            self._images[img].reset(self.params.init_logit)
        return images, groups

    # ---- masks
    def _weights(self, i: int, module) -> MaskedWeights:
        if self._call is None:
            raise RuntimeError("maskunet-free: the masked denoiser was called outside predict()")
        images, groups, gens = self._call
        # [G, *W.shape]: one mask per image (both CFG rows share it), its noise from the image's stream
        logits = torch.stack([self._images[img].logits[i] for img in images])
        noise = torch.stack([exponential_noise(torch.empty(logits.shape[1:], dtype=torch.float32,
                                                           device=logits.device), gen) for gen in gens])
        weight = module.weight
        if torch.is_grad_enabled() and logits.requires_grad:
            masked, hard = StraightThroughMaskedWeight.apply(logits, noise, weight, self.params.tau)
        else:
            hard = torch.lt(noise, logits.detach().exp())
            masked = masked_product(weight, hard)
        if self._observe and self.on_mask is not None:
            self.on_mask(i, hard[groups.index.to(hard.device)])
        return MaskedWeights(masked, groups)

    # ---- the objective
    def _x0(self, out: torch.Tensor, state: StepState, guidance: float) -> torch.Tensor:
        rows = state.rows
        c = state.latents.shape[1]
        cond_idx = [k for k, r in enumerate(rows) if r.cond]
        pred = out[cond_idx, :c]
        if any(not r.cond for r in rows):
            by_image = {r.image: k for k, r in enumerate(rows) if not r.cond}
            uncond = out[[by_image[rows[k].image] for k in cond_idx], :c]
            pred = uncond + guidance * (pred - uncond)
        t = int(state.timestep)
        a = self.alphas_cumprod[t].to(device=out.device, dtype=torch.float32)
        x = state.latents.to(device=out.device, dtype=torch.float32)
        if self.prediction_type == "epsilon":
            return (x - (1 - a).sqrt() * pred) / a.sqrt()
        if self.prediction_type == "v_prediction":
            return a.sqrt() * x - (1 - a).sqrt() * pred
        return pred

    def _loss(self, out: torch.Tensor, state: StepState, images: list[int], prompts: list[Any],
              guidance: float) -> torch.Tensor:
        x0 = self._x0(out.float(), state, guidance)
        decoded = self.bundle.codec.decode_differentiable(x0)
        texts = [str(p) for p in prompts]
        total = torch.zeros((), device=decoded.device)
        for term, scorer in self.rewards:
            r = scorer.reward(decoded, texts).to(decoded.device)
            gap = term.target - r
            total = total + term.weight * (torch.relu(gap) if term.hinge else gap).sum()
        return total


class MaskUNetFree(Method):
    """Training-free: nothing to train or load; the masks are optimised while sampling."""

    compile_safe = False  # MaskUNetFreePrepared.compile_safe

    Params = MaskUNetFreeParams

    def build(self, bundle: ModelBundle, ctx: MethodContext) -> MaskUNetFreePrepared:
        from ..registry import load_registries
        from ..scorers.base import ScorerContext

        p: MaskUNetFreeParams = self.params
        p.validate()
        unet, layers, device = install_frozen_masked_layers(bundle.denoiser, p.layers)
        regs = load_registries()
        rewards = []
        resolved = self.reward_scorers(regs)
        for term, cls, scorer_params in resolved:
            if device.type != "meta":
                rewards.append((term, cls(scorer_params, ScorerContext(device, torch.float32, ctx.weights),
                                          term.scorer)))
        info = {
            "change": "maskunet-free", "layers": p.layers, "masked_layers": len(layers),
            "masked_weights": masked_weight_count(layers), "init_logit": p.init_logit, "lr": p.lr,
            "optimizer": f"AdamW(betas={list(p.betas)}, weight_decay={p.weight_decay}), one per image, "
                         "moments kept over the steps",
            "updates": {"early_steps": p.early_steps, "early": p.early_updates, "late": p.late_updates,
                        "final_update": p.final_update},
            "mask_scope": "per image and forward (both CFG rows share it, as released)",
            "sampler": "single Gumbel draw, P(keep) = 1 - exp(-e^logit), straight-through",
            "loss": " + ".join(f"{t.weight:g}*{'relu' if t.hinge else ''}({t.target:g} - {t.scorer})"
                               for t in p.rewards),
            "rewards": {t.scorer: s.describe() for t, s in rewards},
        }
        prepared = MaskUNetFreePrepared(unet, layers, p, bundle, rewards, info)
        prepared.weights_used = {t.scorer: s.weights_hash() for t, s in rewards}
        prepared.location_params = reward_locations(resolved)
        return prepared

    def prepare(self, bundle: ModelBundle, ctx: MethodContext) -> MaskUNetFreePrepared:
        return self.build(bundle, ctx)

    def reward_scorers(self, regs: Any) -> list[tuple[RewardTerm, type, Any]]:
        """(term, scorer class, its typed params) of every reward term; UsageError for a scorer without a
        differentiable reward or an unknown param key."""
        from ..config import build_params

        out = []
        for term in self.params.rewards:
            cls = regs.scorers.get(term.scorer)
            if not hasattr(cls, "reward"):
                raise UsageError(f"scorer {term.scorer!r} has no differentiable reward (reward scorers: hpsv2, "
                                 "imagereward, micro-clip)")
            out.append((term, cls, build_params(cls.Params, dict(term.params),
                                                where=f"method.rewards[{term.scorer}].params.")))
        return out

    def scorer_params(self) -> dict[str, tuple[str, dict[str, Any]]]:
        from ..config import to_plain
        from ..registry import load_registries

        return {f"reward {i} ({term.scorer})": (term.scorer, to_plain(params))
                for i, (term, _, params) in enumerate(self.reward_scorers(load_registries()))}
