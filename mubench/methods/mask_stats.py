"""Mask statistics of a masking method's run: per-layer and per-timestep mask ratios, and their plots.

:class:`MaskRecorder` attaches to a prepared masking method (``maskunet``: ``MaskUNet.on_mask``; ``maskunet-free``:
``on_mask``, which sees the masks that drive the trajectory) and accumulates, for every denoising step and masked
layer, the fraction of weights the masks zero (the *mask ratio*) over every row of every denoiser call, plus its
spread over rows (how much the mask depends on the sample). :func:`plot_layer_ratios` draws the per-layer bar chart
(as the paper's supplementary Fig. 2b) and :func:`plot_timestep_ratios` the mask ratio against the timestep
(overall and per block), with matplotlib's object API (no global backend state).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import UsageError
from .base import Prepared


def attach_mask_observer(prepared: Prepared, fn, name: Optional[str] = None) -> None:
    """Make ``fn(layer_index, mask)`` see every mask ``prepared`` applies (UsageError naming the method, ``name`` or
    what its info says it changes, if it applies none)."""
    model = getattr(prepared, "model", None)
    if model is not None and hasattr(model, "on_mask"):
        model.on_mask = fn
    elif hasattr(prepared, "on_mask"):
        prepared.on_mask = fn
    else:
        shown = name or prepared.info.get("change", "?")
        raise UsageError(f"method {shown!r} exposes no masks to record (mask statistics "
                         "work for maskunet and maskunet-free)")


class MaskRecorder:
    """Accumulates mask ratios per (step, layer): sum over rows, sum of squares, row count."""

    def __init__(self, prepared: Prepared, name: Optional[str] = None) -> None:
        self.layers = [dict(layer) for layer in prepared.layers]
        self.step = 0
        self._sum: dict[tuple[int, int], float] = {}
        self._sq: dict[tuple[int, int], float] = {}
        self._n: dict[tuple[int, int], int] = {}
        attach_mask_observer(prepared, self.observe, name)

    def observe(self, layer: int, mask: torch.Tensor) -> None:
        zeroed = 1.0 - mask.detach().float().flatten(1).mean(1).cpu()  # per row
        key = (self.step, layer)
        self._sum[key] = self._sum.get(key, 0.0) + float(zeroed.sum())
        self._sq[key] = self._sq.get(key, 0.0) + float((zeroed ** 2).sum())
        self._n[key] = self._n.get(key, 0) + int(zeroed.numel())

    def next_step(self, step_index: int) -> None:
        """The sampler's ``step_callback``: step ``step_index`` is done."""
        self.step = step_index + 1

    def new_trajectory(self) -> None:
        self.step = 0

    def summary(self, timesteps: list[int]) -> dict[str, Any]:
        """Per-layer ratios (over all steps and rows), per-step ratios (weighted by weights), per (layer, step)."""
        steps = sorted({s for s, _ in self._n})
        if not steps:
            raise UsageError("no masks were recorded (did the method run?)")
        weights = [int(layer.get("weights", 0)) for layer in self.layers]
        layers_out = []
        for i, layer in enumerate(self.layers):
            n = sum(self._n.get((s, i), 0) for s in steps)
            if n == 0:
                continue
            total = sum(self._sum.get((s, i), 0.0) for s in steps)
            sq = sum(self._sq.get((s, i), 0.0) for s in steps)
            mean = total / n
            per_step = [self._sum[(s, i)] / self._n[(s, i)] if self._n.get((s, i)) else None for s in steps]
            layers_out.append({"index": i, "name": layer.get("name"), "block": layer.get("block"),
                               "kind": layer.get("kind"), "weights": weights[i], "mask_ratio": mean,
                               "mask_ratio_std_over_rows": max(0.0, sq / n - mean * mean) ** 0.5,
                               "per_step": per_step})
        per_step_out = []
        for s in steps:
            num = sum(weights[i] * self._sum[(s, i)] / self._n[(s, i)] for i in range(len(weights)) if (s, i) in self._n)
            den = sum(weights[i] for i in range(len(weights)) if (s, i) in self._n)
            per_step_out.append({"step": s, "timestep": timesteps[s] if s < len(timesteps) else None,
                                 "mask_ratio": num / den if den else None})
        total_w = sum(layer["weights"] for layer in layers_out)
        overall = sum(layer["weights"] * layer["mask_ratio"] for layer in layers_out) / total_w if total_w else None
        return {"mask_ratio": overall, "definition": "fraction of a layer's weights the mask sets to zero",
                "layers": layers_out, "steps": per_step_out}


def _short(name: Optional[str]) -> str:
    """``up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k`` → ``u1.a0.attn2.k``."""
    if not name:
        return "?"
    s = name.replace("up_blocks.", "u").replace("down_blocks.", "d").replace("mid_block", "m")
    s = s.replace("attentions.", "a").replace(".transformer_blocks.0", "").replace("resnets.", "r")
    return s.replace("to_out.0", "o").replace("to_q", "q").replace("to_k", "k").replace("to_v", "v")


def plot_layer_ratios(stats: dict[str, Any], path: Path, title: str) -> Path:
    """Bar chart: mask ratio of every masked layer (error bars: std over rows), coloured by block."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = stats["layers"]
    blocks = sorted({str(layer["block"]) for layer in layers})
    colours = {b: f"C{k % 10}" for k, b in enumerate(blocks)}
    fig = Figure(figsize=(max(6.0, 0.18 * len(layers) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(len(layers)))
    ax.bar(xs, [100 * layer["mask_ratio"] for layer in layers],
           yerr=[100 * layer["mask_ratio_std_over_rows"] for layer in layers],
           color=[colours[str(layer["block"])] for layer in layers], capsize=1.5, linewidth=0)
    ax.set_xticks(xs)
    ax.set_xticklabels([_short(layer["name"]) for layer in layers], rotation=90, fontsize=5)
    ax.set_ylabel("mask ratio (% of weights zeroed)")
    ax.set_title(title, fontsize=9)
    for b in blocks:
        ax.bar([], [], color=colours[b], label=b)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    return path


def plot_timestep_ratios(stats: dict[str, Any], path: Path, title: str) -> Path:
    """Mask ratio against the timestep: all masked weights, and per block."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = stats["steps"]
    ts = [s["timestep"] if s["timestep"] is not None else s["step"] for s in steps]
    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(ts, [100 * s["mask_ratio"] for s in steps], "k-o", markersize=3, label="all masked weights")
    blocks = sorted({str(layer["block"]) for layer in stats["layers"]})
    for k, b in enumerate(blocks):
        members = [layer for layer in stats["layers"] if str(layer["block"]) == b]
        w = sum(layer["weights"] for layer in members)
        ys = [100 * sum(layer["weights"] * (layer["per_step"][j] or 0.0) for layer in members) / w
              for j in range(len(steps))]
        ax.plot(ts, ys, "--", color=f"C{k % 10}", label=b, linewidth=1)
    ax.set_xlabel("timestep t")
    ax.set_ylabel("mask ratio (% of weights zeroed)")
    ax.invert_xaxis()  # sampling runs from high t to low t
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    return path
