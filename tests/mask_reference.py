"""The plain (released-style) MaskUNet computation, written out on purpose, and helpers to run a call through it and
through mubench's grouped path (test_mask_speedups.py, test_mask_path_state.py).

:class:`PlainMasks`, for every masked layer, re-runs the block's mask generator on the block's raw features, runs the
adapter, draws the layer's noise from each row's stream with the same generator calls, forms a float mask from the
single-Gumbel event, multiplies ``W ⊙ M`` in float and applies it row by row with ``F.linear``.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
import torch.nn.functional as F

from mubench.methods.base import MethodContext
from mubench.methods.maskunet import MaskUNetParams
from mubench.methods.maskunet_method import MaskUNetMethod


def prepared_maskunet(bundle, tmp_path: Path, **kw):
    method = MaskUNetMethod(MaskUNetParams(**kw), "maskunet")
    prepared = method.build(bundle, MethodContext(artifacts_dir=tmp_path, train="never", model_name="tiny-sd"))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # trained-looking adapters: logits spread around 0, so masks really vary
        for adapter in prepared.model.adapters:
            for lin in (adapter.rows, adapter.cols):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.3)
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen) * 0.5)
        for g in prepared.model.generators.values():
            g.conv2.weight.copy_(torch.randn(g.conv2.weight.shape, generator=gen) * 0.2)
    return prepared


def noise_groups(model) -> list[list[int]]:
    """The documented draw order: the linears of one UNet block with one weight shape draw their noise together
    (``[layers, rows of the image, out, in]``), when the first of them runs (small models: no group is split)."""
    groups: dict[tuple, list[int]] = {}
    for i, layer in enumerate(model.masked):
        groups.setdefault((layer.block, tuple(layer.shape)), []).append(i)
    return list(groups.values())


class PlainMasks:
    """The plain computation as a mask function: per-layer generator re-run, float masks, per-row linear."""

    def __init__(self, model, tau: float = 1.0) -> None:
        self.model = model
        self.tau = tau
        self.raw: dict[str, tuple] = {}
        self.masks: list[torch.Tensor] = []
        self.handles = []
        self.first_of_group = {g[0]: g for g in noise_groups(model)}
        self.noise: dict[int, torch.Tensor] = {}
        for key in model.blocks:
            block = model.unet.get_submodule(key)
            sig = inspect.signature(block.forward)
            self.handles.append(block.register_forward_pre_hook(self._capture(key, sig), with_kwargs=True))

    def _capture(self, key, sig):
        def hook(module, args, kwargs):
            bound = sig.bind_partial(*args, **kwargs).arguments
            skips = bound.get("res_hidden_states_tuple")
            self.raw[key] = (bound["hidden_states"], skips[-1] if skips else None, bound["temb"])
        return hook

    def logits(self, i: int) -> torch.Tensor:
        layer = self.model.masked[i]
        h, skip, temb = self.raw[layer.block]
        feats = [h] if skip is None else [h, skip]
        pooled = torch.cat([F.adaptive_avg_pool2d(f, (1, 1)) for f in feats], 1)
        grid = self.model.generators[layer.block.replace(".", "-")](pooled, temb)  # re-run for every layer
        adapter = self.model.adapters[i]
        h_rows = F.linear(grid.transpose(-1, -2), adapter.rows.weight, adapter.rows.bias).transpose(-1, -2)
        return F.linear(h_rows, adapter.cols.weight, adapter.cols.bias)

    def draw(self, group: list[int], rows: int) -> None:
        """E = -log(1 - U) for every layer of the group: each image's stream draws [layers, its rows, out, in]."""
        gens = self.model.row_generators
        streams: dict[int, list[int]] = {}
        for r in range(rows):
            streams.setdefault(id(gens[r]), []).append(r)
        shape = tuple(self.model.masked[group[0]].shape)
        for row_ids in streams.values():
            u = torch.empty(len(group), len(row_ids), *shape).uniform_(0.0, 1.0, generator=gens[row_ids[0]])
            e = -torch.log1p(-u)
            for k, i in enumerate(group):
                self.noise.setdefault(i, torch.empty(rows, *shape))[row_ids] = e[k]

    def forward_layer(self, i: int, module, x: torch.Tensor) -> torch.Tensor:
        logits = self.logits(i)
        if i in self.first_of_group:
            self.draw(self.first_of_group[i], x.shape[0])
        noise = self.noise.pop(i)
        mask = (noise < torch.exp(logits)).float()
        self.masks.append(mask.bool())
        w = module.weight * mask
        return torch.stack([F.linear(x[r], w[r], module.bias) for r in range(x.shape[0])])

    def install(self):
        for i, layer in enumerate(self.model.masked):
            module = layer.module
            module.forward = (lambda x, i=i, module=module: self.forward_layer(i, module, x))

    def remove(self):
        for layer in self.model.masked:
            del layer.module.forward
        for h in self.handles:
            h.remove()


def unmasked_output(model, x, t, ctx) -> torch.Tensor:
    """The UNet's output with every mask taken off (the model is unmasked afterwards)."""
    from mubench.methods.masking import set_mask_fn

    set_mask_fn(model.masked, None)
    with torch.no_grad():
        return model.unet(x, t, ctx).sample


def row_streams(n: int, seed: int):
    return [torch.Generator().manual_seed(seed + r) for r in range(n)]


def fast_and_plain(model, x, t, ctx, streams):
    """One call through the grouped path and one through :class:`PlainMasks`, each with fresh generators from
    ``streams()``: (grouped output, its masks, plain output, plain masks)."""
    fast_masks = []
    model.on_mask = lambda i, m: fast_masks.append(m)
    with torch.no_grad():
        model.row_generators = streams()
        fast = model(x, t, ctx).sample
        plain = PlainMasks(model)
        plain.install()
        try:
            model.row_generators = streams()
            model.on_mask = None
            ref = model(x, t, ctx).sample
        finally:
            plain.remove()
    return fast, fast_masks, ref, plain.masks


def fresh_output(bundle, tmp_path, x, t, ctx, seed: int = 11, **kw) -> torch.Tensor:
    """The output of a newly built model (nothing cached) for one call with stream noise."""
    model = prepared_maskunet(bundle, tmp_path, **kw).model
    model.row_generators = row_streams(x.shape[0], seed)
    with torch.no_grad():
        return model(x, t, ctx).sample
