"""Shared by ``mask_ablation.py`` and ``mask_stages.py``: one CFG denoiser call (an image's two rows) of a model, and
maskunet built on that model with trained-looking adapters.

Not a module of the package: the scripts next to this file import it by path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

# torch is imported inside, after the scripts have set OMP_NUM_THREADS


class OneCFGCall:
    """The model, the latents, timestep and conditioning of one CFG call, and how to run a prepared method on it."""

    def __init__(self, model: str, weights: str, device: "torch.device",
                 dtype: Optional["torch.dtype"] = None) -> None:
        import torch

        from mubench.methods.base import MethodContext, RowInfo
        from mubench.models.base import Conditioning, LoadContext
        from mubench.registry import load_registries

        cls = load_registries().models.get(model)
        dtype = dtype or torch.float32
        self.bundle = cls.load(cls.Params(), LoadContext(device, dtype, weights))
        self.ctx = MethodContext(artifacts_dir=Path("."), train="never", weights=weights, show_progress=False)
        shape = self.bundle.codec.latent_shape(self.bundle.resolution, self.bundle.resolution)
        self.x = torch.randn((2, *shape), generator=torch.Generator().manual_seed(1)).to(device, dtype)
        self.cond = Conditioning.cat(self.bundle.conditioner.unconditional(1),
                                     self.bundle.conditioner.encode(["a red circle"]))
        self.t = torch.tensor(500, device=device)
        self.rows = [RowInfo(0, False), RowInfo(0, True)]  # [uncond, cond] of image 0

    def maskunet(self, **params):
        """maskunet built with ``params``, its adapters drawn like trained ones (logits spread around 0, so masks
        really vary; the cost does not depend on them)."""
        import torch

        from mubench.methods.maskunet import MaskUNetParams

        from mubench.methods.maskunet_method import MaskUNetMethod

        prepared = MaskUNetMethod(MaskUNetParams(**params), "maskunet").build(self.bundle, self.ctx)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for adapter in prepared.model.adapters:
                for layer in (adapter.rows, adapter.cols):
                    layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.1)
        return prepared

    def runner(self, prepared) -> Callable[[], None]:
        """One denoiser call of ``prepared`` (sampler hooks included), image 0's stream seeded 7."""
        import torch

        from mubench.methods.base import StepState
        from mubench.sampler import call_denoiser
        from mubench.seeding import image_generator

        def run() -> None:
            gens = [image_generator(7)]
            prepared.begin_batch(gens, self.rows)
            prepared.before_step(StepState(0, 50, self.t, self.x[:1], self.rows, gens))
            with torch.no_grad():
                call_denoiser(self.bundle, prepared.denoiser, self.x, self.t, self.cond)
            prepared.end_batch()
        return run
