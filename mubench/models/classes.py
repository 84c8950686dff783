"""Class conditioning for class-conditional denoisers (DiT on ImageNet, the micro world's ``micro-dit``)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from ..errors import UsageError
from .base import Conditioner, Conditioning


class ClassConditioner(Conditioner):
    """Prompts are class labels → :class:`Conditioning` with ``class_labels`` (long tensor ``[B]``).

    A prompt is a label index (``int``, or a string of digits) or, when ``names`` are given, a class name
    (``"a red circle"``). The unconditional "prompt" of classifier-free guidance is the null class, index
    ``num_classes`` (DiT's convention: its label table has ``num_classes + 1`` rows); the empty prompt ``""`` (what
    a training loss's caption dropout produces) is that null class too.
    """

    def __init__(self, num_classes: int, device: torch.device, names: Optional[Sequence[str]] = None) -> None:
        self.num_classes = int(num_classes)
        self.device = device if torch.device(device).type != "meta" else torch.device("cpu")
        self.names = list(names) if names is not None else None
        self._index = {n: i for i, n in enumerate(self.names or [])}

    @property
    def null_label(self) -> int:
        return self.num_classes

    def label(self, prompt: Any) -> int:
        """The class index of one prompt (raises UsageError for anything that is not a class of this model)."""
        if isinstance(prompt, str) and prompt in self._index:
            return self._index[prompt]
        if isinstance(prompt, str) and prompt == "":
            return self.null_label
        try:
            value = int(prompt)
        except (TypeError, ValueError):
            known = f" or one of its {len(self._index)} class names" if self._index else ""
            raise UsageError(f"class-conditional model: prompt {prompt!r} is not a class index (0..{self.num_classes - 1})"
                             f"{known}") from None
        if isinstance(prompt, float) and value != prompt or not 0 <= value < self.num_classes:
            raise UsageError(f"class label {prompt!r} is outside 0..{self.num_classes - 1}")
        return value

    def check_prompts(self, prompts: list[Any]) -> None:
        for prompt in dict.fromkeys(prompts):
            self.label(prompt)

    def encode(self, prompts: list[Any]) -> Conditioning:
        labels = torch.tensor([self.label(p) for p in prompts], dtype=torch.long, device=self.device)
        return Conditioning(class_labels=labels)

    def unconditional(self, n: int) -> Conditioning:
        return Conditioning(class_labels=torch.full((n,), self.null_label, dtype=torch.long, device=self.device))


def disable_label_dropout(denoiser: torch.nn.Module) -> int:
    """Set every diffusers ``LabelEmbedding``'s dropout to 0; returns how many were changed.

    diffusers' DiT embeds (timestep, class) in every block's adaLN-Zero, each with its own ``LabelEmbedding`` whose
    dropout (0.1, for classifier-free guidance) fires in train mode with the global RNG — independently in every
    block. mubench drops labels once per example in the training loss instead (from the trainer's generator); the
    null-class row of the table is kept (the table size does not depend on the dropout once built).
    """
    from diffusers.models.embeddings import LabelEmbedding

    changed = 0
    for module in denoiser.modules():
        if isinstance(module, LabelEmbedding) and module.dropout_prob > 0:
            module.dropout_prob = 0.0
            changed += 1
    return changed
