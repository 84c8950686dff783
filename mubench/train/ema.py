"""Exponential moving average of a list of parameters (fp32 shadow copies)."""
from __future__ import annotations

from typing import Iterable

import torch


class EMA:
    """Holds ``shadow[i] ≈ EMA(params[i])``; decay warms up as ``min(decay, (1 + n) / (10 + n))``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = float(decay)
        self.shadow = [p.detach().float().clone() for p in self.params]
        self.num_updates = 0

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        d = self.current_decay()
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach().float(), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Write the averaged values into ``params`` (same order as at construction)."""
        for s, p in zip(self.shadow, list(params)):
            p.copy_(s.to(p.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError("EMA state does not match the trainable parameters")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = [s.clone().float() for s in state["shadow"]]
