"""MaskUNet at sampling time: which noise and which mask layout each row of a denoiser call gets.

:class:`MaskUNetPrepared` is what :class:`~mubench.methods.maskunet_method.MaskUNetMethod` prepares: before every
call it tells the model (a :class:`~mubench.methods.maskunet.MaskUNet` or its transformer variant) where each row's
Gumbel noise comes from — a generator per image seeded from the image's stream (``noise: stream``), or a Philox key
per image and a slot per row (``noise: counter``) — and, with ``mask_scope: image``, which rows share an image's mask.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Prepared, RowInfo, StepState
from .masking import RowGroups, derived_generator, derived_seed


def compiles(deterministic: bool, noise: str, fused_covers_every_layer: bool) -> bool:
    """Whether maskunet's denoiser call traces into one ``torch.compile`` graph: masks without noise, counter noise
    (Philox words from tensors), or stream noise drawn before the call, which needs the grouped path to cover every
    masked layer (``torch.Generator`` objects cannot enter a graph)."""
    return deterministic or noise == "counter" or fused_covers_every_layer


class MaskUNetPrepared(Prepared):
    """Sampling hooks: the Gumbel noise of an image's rows comes from its stream (one seed draw per image and call;
    its CFG rows draw their noise together, ``[rows, ...]`` in memory order, each row its own mask)."""

    def __init__(self, model: nn.Module, **kwargs) -> None:
        super().__init__(model, **kwargs)
        self.model = model
        # stream noise comes from torch.Generator objects, which dynamo cannot put in a graph: a compiled call reads
        # it drawn before the call, which the fused path can do when it covers every masked layer (linears only)
        fused = model._fused
        self._fused = fused if fused is not None and fused.covers_every_layer else None
        self.compile_safe = compiles(model.deterministic, model.noise, self._fused is not None)
        self._predraw = False

    def use_compiled(self, compiled: bool) -> None:
        self._predraw = compiled

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.model.trainable_parameters()

    def artifact_state(self) -> dict[str, torch.Tensor]:
        return self.model.trainable_state_dict()

    def load_artifact_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.model.load_trainable_state_dict(tensors)

    def begin_batch(self, generators: list[torch.Generator], rows: list[RowInfo]) -> None:
        self.end_batch()

    def before_step(self, state: StepState) -> None:
        images = list(dict.fromkeys(r.image for r in state.rows))
        if self.model.mask_scope == "image":  # an image's mask comes from its cond row (else first)
            rep = {}
            for k, r in enumerate(state.rows):
                if r.image not in rep or (r.cond and not state.rows[rep[r.image]].cond):
                    rep[r.image] = k
            self.model.share = ([rep[image] for image in images], RowGroups.by_key([r.image for r in state.rows]))
        if self.model.deterministic:
            return
        device = next(self.model.adapters.parameters()).device
        if self.model.noise == "counter":  # one key per image and call, a slot per row
            keys = {image: derived_seed(state.generators[image]) for image in images}
            seen: dict[int, int] = {}
            slots = []
            for r in state.rows:
                slots.append(seen.get(r.image, 0))
                seen[r.image] = slots[-1] + 1
            self.model.row_keys = torch.tensor([keys[r.image] for r in state.rows], dtype=torch.int64, device=device)
            self.model.row_slots = torch.tensor(slots, dtype=torch.int64, device=device)
            return
        per_image = {image: derived_generator(state.generators[image], device) for image in images}
        self.model.row_generators = [per_image[r.image] for r in state.rows]
        if self._predraw and self._fused is not None:  # a compiled call: its noise as tensors, no generators
            self._fused.predrawn = self._fused.predraw()
            self.model.row_generators = None

    def end_batch(self) -> None:
        self.model.row_generators = None
        self.model.row_keys = self.model.row_slots = None
        self.model.share = None
        if self._fused is not None:
            self._fused.predrawn = None
