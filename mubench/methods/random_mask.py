"""``random-mask``: Bernoulli masks with an explicit ratio over a layer set (the paper's supp. Table 4 baseline).

Each masked weight is zeroed independently with probability ``ratio``. The paper gives neither the ratio, the layers
nor the resampling policy (method.md §5, §8.13), so all three are parameters and recorded in ``Prepared.info``:

- ``resample: step`` draws a fresh mask for every denoising step, ``resample: image`` one mask per image for the whole
  trajectory;
- a mask belongs to an *image*: both classifier-free-guidance rows of an image use the same mask (the guided
  prediction then comes from one masked network), applied as one grouped GEMM;
- the mask of image ``j`` is drawn only from that image's random stream (one seed draw per draw event, then a
  generator on the weights' device), so images do not depend on batch size or order.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..models.base import ModelBundle
from .base import Method, MethodContext, Prepared, RowInfo, StepState
from .masking import (MaskedLayer, MaskedWeights, RowGroups, check_layer_set, derived_generator,
                      install_masked_layers, masked_weight_count, set_mask_fn)
from .params import RandomMaskParams

class RandomMaskPrepared(Prepared):
    """Draws the Bernoulli masks from the per-image streams and hands ``W ⊙ M`` to the masked layers."""

    def __init__(self, denoiser, layers: list[MaskedLayer], params: RandomMaskParams, info: dict) -> None:
        super().__init__(denoiser, info=info, layers=[layer.describe() for layer in layers])
        self.masked = layers
        self.params = params
        self._generators: list[torch.Generator] = []
        self._masks: dict[int, list[torch.Tensor]] = {}  # image → one bool keep-mask per layer
        # the current call's keep-masks per layer, [distinct images of the call, *weight] (stacked before the call,
        # so the layers read tensors by layer index only: a compiled denoiser sees no image numbers to guard on)
        self._call_keep: list[torch.Tensor] = []
        self._groups: Optional[RowGroups] = None
        set_mask_fn(layers, lambda i, layer: (lambda module, i=i: self._weights(i, module)))

    def draw(self, image: int) -> list[torch.Tensor]:
        """Fresh keep-masks (True = keep) for every layer, from image ``image``'s stream."""
        device = self.masked[0].module.weight.device
        gen = derived_generator(self._generators[image], device)
        return [torch.rand(layer.shape, generator=gen, device=gen.device).to(device) >= self.params.ratio
                for layer in self.masked]

    def begin_batch(self, generators: list[torch.Generator], rows: list[RowInfo]) -> None:
        self._generators = list(generators)
        self._masks = {}
        if self.params.resample == "image":
            for image in sorted({r.image for r in rows}):
                self._masks[image] = self.draw(image)

    def before_step(self, state: StepState) -> None:
        images = list(dict.fromkeys(r.image for r in state.rows))
        if self.params.resample == "step":
            self._masks = {image: self.draw(image) for image in images}
        self._call_keep = [torch.stack([self._masks[image][i] for image in images]) for i in range(len(self.masked))]
        self._groups = RowGroups.by_key([r.image for r in state.rows])

    def _weights(self, i: int, module) -> Optional[MaskedWeights]:
        if self._groups is None:
            return None  # outside the sampler's hooks the layers behave as the base model
        return MaskedWeights(module.weight * self._call_keep[i].to(module.weight.dtype), self._groups)

    def end_batch(self) -> None:
        self._masks, self._generators, self._call_keep, self._groups = {}, [], [], None


class RandomMask(Method):
    Params = RandomMaskParams

    def prepare(self, bundle: ModelBundle, ctx: MethodContext) -> Prepared:
        p: RandomMaskParams = self.params
        check_layer_set(p.layers)
        denoiser, layers = install_masked_layers(bundle.denoiser, p.layers)
        info = {
            "change": "random-mask", "ratio": p.ratio, "resample": p.resample, "layers": p.layers,
            "masked_layers": len(layers), "masked_weights": masked_weight_count(layers),
            "mask_scope": "per image (both CFG rows share it)",
            "noise": "per-image stream (one seed draw per draw event)",
        }
        return RandomMaskPrepared(denoiser, layers, p, info)
