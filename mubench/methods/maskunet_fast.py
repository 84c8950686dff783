"""MaskUNet's sampling-time mask path, computed a group of layers at a time (no gradients; same masks as per layer).

At sampling time a masked linear needs, for every row of the denoiser call, ``W ⊙ M`` with ``M = 1[E < e^ℓ]``,
``ℓ = adapter(grid)``. Done one layer at a time that is some 25 small tensor operations per layer, which on a small
UNet (the micro model: 32 masked linears, 30 ms a forward) costs more than the arithmetic. Here the linears are taken
in *groups*: the masked linears of one UNet block that have the same weight shape (SD 1.5's ``up_blocks.1``: its 18
``C×C`` attention linears, then its 6 cross-attention k/v), split so that no group holds more than
``MAX_GROUP_WEIGHTS`` weights (larger layers are computed one at a time). When a layer of a group runs first for the
block's current features, the whole group is computed with stacked tensors:

- logits of every layer and row by two batched GEMMs, each with its adapter bias folded in (``baddbmm``; the stacked
  adapter weights are cached until a parameter changes);
- the noise, ``E = −log(1 − U)``, drawn for the group at once from each image's stream: ``[layers, rows of the
  image, out, in]`` in memory order (layers in ``MaskUNet.masked`` order);
- the mask ``E < e^ℓ`` (``ℓ > 0`` when deterministic) written as 1.0 / 0.0 over the logits and the masked weights
  of all of them in one ``addcmul`` (:func:`~mubench.methods.masking.thresholded_product`; a bool mask only where
  ``on_mask`` asks for it);

and each layer of the group then takes its ``[rows, out, in]`` slice. The stacked GEMMs sum in another order than the
per-layer adapter, so a logit may differ from it in the last bits: a mask can only differ where the noise falls within
that rounding of its threshold (tests check masks and outputs against the plain per-layer computation; on the
CPUs we tried the logits came out bitwise equal). Transient memory is one group's logits, noise, mask and masked
weights.

Used by :class:`~mubench.methods.maskunet.MaskUNet` for its linears when gradients are off; conv layers, training
(straight-through masks) and subclasses that compute logits their own way keep the per-layer path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import torch
from torch import nn

from ..kernels.masked_weights import masked_group_weights
from ..kernels.philox import counter_exponential
from .masking import MaskedLayer, MaskedWeights, keep_mask, masked_product, thresholded_product

# weights (per row) in one group. Small layers gain from grouping (fewer tensor operations: the micro model's 32
# linears become 3 groups); large ones do not (a group's logits, noise, mask and masked weights then leave the CPU
# caches between passes; measured on sd15-reduced: no gain from grouping its 65k-weight layers). 2**16 weights is
# ~1.7 MB of working set at 2 rows.
MAX_GROUP_WEIGHTS = 2**16


@dataclass
class LinearGroup:
    """Masked linears (indices into ``MaskUNet.masked``, in order) of one UNet block with one weight shape."""

    block: str
    shape: tuple[int, int]
    layers: list[int]


def plan_groups(layers: Sequence[MaskedLayer], max_weights: int = MAX_GROUP_WEIGHTS) -> list[LinearGroup]:
    """Group the linears of each block by weight shape (in ``layers`` order), at most ``max_weights`` per group."""
    groups: list[LinearGroup] = []
    open_groups: dict[tuple[str, tuple[int, int]], LinearGroup] = {}
    for i, layer in enumerate(layers):
        if layer.kind != "linear":
            continue
        shape = (int(layer.shape[0]), int(layer.shape[1]))
        key = (layer.block, shape)
        group = open_groups.get(key)
        if group is None or (len(group.layers) + 1) * shape[0] * shape[1] > max_weights:
            group = LinearGroup(layer.block, shape, [])
            open_groups[key] = group
            groups.append(group)
        group.layers.append(i)
    return groups


def streams_of_rows(generators: Optional[list[torch.Generator]], rows: int) -> list[tuple[Optional[torch.Generator],
                                                                                            list[int]]]:
    """``[(generator, its rows)]`` in order of first appearance (rows sharing a generator object share a stream);
    no generators: the global RNG for all rows."""
    if generators is None:
        return [(None, list(range(rows)))]
    if len(generators) != rows:
        raise RuntimeError(f"{len(generators)} row generators for a batch of {rows} rows")
    order: dict[int, tuple[torch.Generator, list[int]]] = {}
    for r, g in enumerate(generators):
        order.setdefault(id(g), (g, []))[1].append(r)
    return list(order.values())


def exponential_noise(out: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fill ``out`` in place with ``E ~ Exp(1)`` by inversion, ``E = −log(1 − U)``, ``U ~ U[0, 1)`` (one uniform
    draw per element from ``generator``, or the global RNG; 4-6× cheaper on a CPU than ``exponential_``); returns
    ``out``.

    ``1 − U`` lies in ``(0, 1]``, so ``E`` is finite (at most 24·ln 2 ≈ 16.6 in fp32): a logit above ln 16.6 ≈ 2.8
    is always kept, where the exact law drops it with probability ``exp(−e^ℓ)`` < 6e-8.
    """
    out.uniform_(0.0, 1.0, generator=generator)
    return _to_exponential(out)


def _to_exponential(u: torch.Tensor) -> torch.Tensor:
    return torch.log1p(u.neg_(), out=u).neg_()


def draw_group_noise(shape: tuple[int, ...], streams, device: torch.device) -> torch.Tensor:
    """``E ~ Exp(1)`` of shape ``[L, B, out, in]``: for each stream, ``[L, its rows, out, in]`` in memory order."""
    L, B = shape[0], shape[1]
    noise = torch.empty(shape, dtype=torch.float32, device=device)
    for gen, rows in streams:
        if len(rows) == B:
            noise.uniform_(0.0, 1.0, generator=gen)
        else:
            part = torch.empty((L, len(rows), *shape[2:]), dtype=torch.float32, device=device)
            part.uniform_(0.0, 1.0, generator=gen)
            noise[:, rows] = part
    return _to_exponential(noise)


class Packed(NamedTuple):
    """A group's stacked adapter factors and biases and its layer weights (``L`` layers, ``B`` rows)."""

    b_out: torch.Tensor  # [L·B, out, 1]
    a_out: torch.Tensor  # [L·B, out, go]
    b_in: torch.Tensor  # [L·B, 1, in]; fused: [L, in]
    a_in: torch.Tensor  # [L·B, gi, in] (A_inᵀ); fused: [L, in, gi] (A_in)
    weight: torch.Tensor  # [L, 1, out, in]


def _pack(shape: tuple[int, int], adapters: Sequence[nn.Module], weights: Sequence[torch.Tensor],
          rows: int, fused: bool = False) -> Packed:
    """A group's adapter factors and biases stacked over its ``L`` layers and expanded to ``rows`` for the batched
    logit GEMMs, and its layer weights. ``fused``: the second GEMM runs in the Triton kernel, which reads each layer's
    ``A_in`` and ``b_in`` once for all rows: those two are stacked only, not copied ``rows`` times."""
    L, B = len(adapters), rows
    (out_f, in_f), go, gi = shape, adapters[0].rows.in_features, adapters[0].cols.in_features
    a_out = _stack([a.rows.weight for a in adapters])  # [L, out, go]
    b_out = _stack([a.rows.bias for a in adapters])  # [L, out]
    a_in = _stack([a.cols.weight for a in adapters])  # [L, in, gi]
    b_in = _stack([a.cols.bias for a in adapters])  # [L, in]
    if not fused:
        b_in = b_in[:, None, None, :].expand(L, B, 1, in_f).reshape(L * B, 1, in_f)
        a_in = a_in.transpose(1, 2)[:, None].expand(L, B, gi, in_f).reshape(L * B, gi, in_f)
    return Packed(
        b_out[:, None, :, None].expand(L, B, out_f, 1).reshape(L * B, out_f, 1),
        a_out[:, None].expand(L, B, out_f, go).reshape(L * B, out_f, go),
        b_in, a_in,
        _stack(list(weights))[:, None],  # [L, 1, out, in]
    )


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack``; of one tensor a view of it, ``[1, ...]`` (the same values and strides, no copy: a group of one
    large layer then keeps no second copy of its weight in the cache)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(list(tensors))


class FusedMasks:
    """Per-forward cache of group masked weights for a MaskUNet (see module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.groups = plan_groups(model.masked)
        self.where: dict[int, tuple[int, int]] = {}  # layer index → (group index, position in the group)
        for g, group in enumerate(self.groups):
            for pos, i in enumerate(group.layers):
                self.where[i] = (g, pos)
        self._of_block: dict[str, list[int]] = {}  # block → its groups
        for g, group in enumerate(self.groups):
            self._of_block.setdefault(group.block, []).append(g)
        # per-call state only, empty again after every forward (no counters that grow from call to call, so a
        # compiled denoiser sees the same state, and its guards hold, at every call)
        self._weights: dict[int, torch.Tensor] = {}  # group → [L, B, out, in] masked weights of this call
        self._masks: dict[int, torch.Tensor] = {}  # group → [L, B, out, in] bool masks (only when on_mask is set)
        self._left: dict[int, int] = {}  # group → layers not yet served
        self._stacked: dict[tuple[int, int, bool], tuple[tuple, Packed]] = {}  # (group, B, fused) → cache
        # stream noise of the current call drawn before it (:meth:`predraw`), one tensor per group; None: drawn as
        # each group is computed
        self.predrawn: Optional[list[torch.Tensor]] = None

    def drop_caches(self) -> None:
        """Forget the stacked adapter and layer weights (rebuilt at the next call). The cache is what the method holds
        from its first sampling call on; the efficiency suite drops it before measuring peak memory so that the
        measured call allocates it, as a run's first call does, whatever was measured before (it is kept per row
        count: a FLOP count at one row would leave entries a run at another never makes)."""
        self._stacked.clear()

    @property
    def covers_every_layer(self) -> bool:
        """Every masked layer is a grouped linear (no conv layers): a call's noise draws are the groups' in order."""
        return len(self.where) == len(self.model.masked)

    @torch.no_grad()
    def predraw(self) -> list[torch.Tensor]:
        """This call's stream noise, ``[L, B, out, in]`` per group, drawn now and in the order the forward would draw
        it (group by group in plan order, which is the order the UNet first uses them: module order), from the same
        generators: the same bits as drawing during the forward. ``torch.compile`` cannot put a ``torch.Generator``
        in a graph, so a compiled call reads its noise from these tensors; the price is holding a whole call's noise
        at once (fp32, one value per masked weight and row) instead of one group's."""
        generators = self._noise_generators()
        if generators is None:
            raise RuntimeError("maskunet: predraw needs the rows' generators (set by the sampler hooks)")
        B = len(generators)
        device = self.model.masked[0].module.weight.device
        streams = streams_of_rows(generators, B)
        return [draw_group_noise((len(group.layers), B, *group.shape), streams, device) for group in self.groups]

    def _noise_generators(self) -> Optional[list[torch.Generator]]:
        """The generators of the rows whose masks are drawn: every row's, or with ``mask_scope: image`` those of the
        images' representative rows (None: the global RNG)."""
        generators, share = self.model.row_generators, self.model.share
        return generators if generators is None or share is None else [generators[r] for r in share[0]]

    def _group_noise(self, g: int, keys: Optional[torch.Tensor], slots: Optional[torch.Tensor],
                     logits: torch.Tensor) -> torch.Tensor:
        """``E ~ Exp(1)`` shaped like group ``g``'s logits ``[L, B, out, in]``: Philox keyed by (row key, layer,
        weight, row slot) with ``noise: counter``, else the stream noise drawn before the call (a compiled call) or
        drawn now from the rows' streams."""
        group = self.groups[g]
        if keys is not None:
            return torch.stack([counter_exponential(keys, slots, i, group.shape) for i in group.layers])
        if self.predrawn is not None:
            noise = self.predrawn[g]
            if noise.shape != logits.shape:
                raise RuntimeError(f"maskunet: noise drawn before the call for group {g} has shape "
                                   f"{tuple(noise.shape)}, its logits {tuple(logits.shape)}")
            return noise
        return draw_group_noise(tuple(logits.shape), streams_of_rows(self._noise_generators(), logits.shape[1]),
                                logits.device)

    def new_features(self, block: str) -> None:
        """The block was called (new features): its groups are recomputed when next used."""
        for g in self._of_block.get(block, ()):
            self._weights.pop(g, None)
            self._masks.pop(g, None)

    def weights(self, i: int, module: nn.Module) -> Optional[MaskedWeights]:
        """Layer ``i``'s masked weights ``[B, out, in]`` (None: not a grouped layer)."""
        found = self.where.get(i)
        if found is None:
            return None
        g, pos = found
        if g not in self._weights:
            self._compute(g)
        wm = self._weights[g][pos]
        if self.model.on_mask is not None:
            self.model.on_mask(i, self._masks[g][pos])
        self._left[g] -= 1
        if self._left[g] == 0:  # every layer of the group has its slice: let the group go with the last use
            self._weights.pop(g, None)
            self._masks.pop(g, None)
        share = self.model.share
        return MaskedWeights(wm, share[1] if share is not None else None)

    def _stacked_params(self, g: int, rows: int, fused: bool = False) -> Packed:
        """The group's adapter and layer weights, stacked and expanded to ``rows`` (:func:`_pack`; cached until one
        changes; under ``torch.compile`` stacked in the graph, where inductor folds the stacking into the kernels
        that read it)."""
        group = self.groups[g]
        adapters = [self.model.adapters[i] for i in group.layers]
        weights = [self.model.masked[i].module.weight for i in group.layers]
        if torch.compiler.is_compiling():  # dynamo cannot trace the data-pointer stamp
            return _pack(group.shape, adapters, weights, rows, fused)
        tensors = [t for a in adapters for t in (a.rows.weight, a.rows.bias, a.cols.weight, a.cols.bias)] + weights
        stamp = tuple((t.data_ptr(), t._version) for t in tensors)
        hit = self._stacked.get((g, rows, fused))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        packed = _pack(group.shape, adapters, weights, rows, fused)
        self._stacked[(g, rows, fused)] = (stamp, packed)
        return packed

    @torch.no_grad()
    def _compute(self, g: int) -> None:
        model = self.model
        group = self.groups[g]
        grid = model._grids.get((group.block, (1, 1)))
        if grid is None:
            raise RuntimeError(f"maskunet: no features captured for {group.block} (is the hook bypassed?)")
        keys, slots = model.row_keys, model.row_slots
        if model.share is not None:  # mask_scope=image: one mask per image, from its representative row
            rows = model.share[0]
            grid = grid[rows]
            keys, slots = (None, None) if keys is None else (keys[rows], slots[rows])
        L, (B, go, gi), (out_f, in_f) = len(group.layers), grid.shape, group.shape
        fused = model.kernel == "triton" and model.on_mask is None  # one operator call: one opaque node when compiled
        b_out, a_out, b_in, a_in, weight = self._stacked_params(g, B, fused)
        # h[l, b] = A_out[l] @ grid[b] + b_out[l];  logits[l, b] = h[l, b] @ A_in[l]^T + b_in[l]  (biases folded)
        h = torch.baddbmm(b_out, a_out, grid.to(a_out.dtype)[None].expand(L, B, go, gi).reshape(L * B, go, gi))
        self._left[g] = L
        if fused:
            self._weights[g] = masked_group_weights(h.view(L, B, out_f, gi), a_in, b_in, weight[:, 0], keys, slots,
                                                    list(group.layers), model.deterministic)
            return
        logits = torch.baddbmm(b_in, h, a_in).view(L, B, out_f, in_f).float()
        noise = None if model.deterministic else self._group_noise(g, keys, slots, logits)
        if model.on_mask is None:
            self._weights[g] = thresholded_product(weight, logits, noise)
            return
        mask = keep_mask(logits, noise)
        self._weights[g] = masked_product(weight, mask)
        self._masks[g] = mask
