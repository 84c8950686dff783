"""MaskUNet's masked weights in one pass: adapter logits, counter-based noise, threshold and ``W ⊙ M`` fused.

For one masked linear and ``G`` rows (or images, under ``mask_scope: image``) the sampling path needs
``W ⊙ M_g`` with ``M_g = 1[E_g < e^{ℓ_g}]`` and ``ℓ_g = h_g A_inᵀ + b_in`` (``h_g = A_out · grid_g + b_out``, the first
adapter conv, is small: ``out × in/4``). Computed with tensor operations that is one GEMM writing the fp32 logits and
then a noise draw, a log, an exp, a compare and a ``where``, each a full pass over ``G × out × in`` values in memory.
:func:`masked_weights_triton` does all of it in registers, tile by tile: it reads ``h``, ``A_in``, ``b_in`` and ``W``,
computes the logits tile with ``tl.dot`` (fp32, IEEE), draws the tile's noise from Philox
(:mod:`~mubench.kernels.philox`: nothing is stored, every element's number depends only on its key and counter) and
writes ``W ⊙ M`` once, in ``W``'s dtype, ready for the batched GEMM of :func:`~mubench.methods.masking.masked_linear`.

:func:`masked_weights_reference` is the same computation with PyTorch operations (any device); tests compare the two
(the Triton interpreter, ``TRITON_INTERPRET=1``, runs the kernel on a CPU). The logits GEMM sums in another order in
the kernel, so a mask bit can differ where the noise falls within that rounding of its threshold; with inputs whose
products and sums are exact in fp32 the masks agree bit for bit.

The kernel is built on first use, so importing this module needs no Triton and no GPU.

:func:`masked_group_weights` runs the kernel for every layer of a group (layers of one shape) behind one PyTorch
operator, ``mubench::masked_group_weights`` (``torch.library.custom_op`` with a fake implementation that gives the
output's shape; :func:`register_group_operator`): ``torch.compile`` keeps the operator in its graph as one opaque
call instead of breaking the graph at Triton's Python launcher, so ``kernel: triton`` and ``compile=`` (CUDA graphs
included) go together.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from .philox import KEY_A, KEY_B, ROUND_A, ROUND_B, UNIFORM_BITS, counter_exponential


def interpreter_on() -> bool:
    """Whether Triton kernels run in its interpreter (``TRITON_INTERPRET=1``: numpy on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_unavailable(device: torch.device) -> Optional[str]:
    """Why the Triton kernel cannot run on ``device`` (None: it can)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "the triton package is not installed (pip install triton; it comes with torch's CUDA wheels)"
    if device.type == "cuda" or interpreter_on():
        return None
    return (f"Triton kernels run on CUDA devices (this run is on {device.type}); set TRITON_INTERPRET=1 to run "
            "them in Triton's interpreter on the CPU (slow: for tests)")


def masked_weights_reference(h: torch.Tensor, a_in: torch.Tensor, b_in: torch.Tensor, weight: torch.Tensor,
                             keys: Optional[torch.Tensor], slots: Optional[torch.Tensor], layer: int,
                             deterministic: bool = False) -> torch.Tensor:
    """``[G, out, in]`` masked weights: ``h`` ``[G, out, gi]``, ``a_in`` ``[in, gi]`` (the second adapter conv),
    ``b_in`` ``[in]``, ``weight`` ``[out, in]``; row ``g``'s noise keyed by ``keys[g]`` and ``slots[g]``
    (unused when ``deterministic``)."""
    logits = torch.baddbmm(b_in.float(), h.float(), a_in.float().t().expand(h.shape[0], *a_in.t().shape))
    if deterministic:
        keep = logits > 0
    else:
        noise = counter_exponential(keys, slots, layer, tuple(weight.shape))
        keep = torch.lt(noise, logits.exp_())
    return torch.where(keep, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))


@functools.lru_cache(maxsize=2)
def _kernel(interpret: bool):
    """The jitted kernel (one per interpreter setting: ``triton.jit`` reads TRITON_INTERPRET when it decorates)."""
    import triton
    import triton.language as tl

    inv = 1.0 / float(2 ** UNIFORM_BITS)
    shift = 32 - UNIFORM_BITS

    @triton.jit
    def masked_weights_kernel(h_ptr, a_ptr, b_ptr, w_ptr, keys_ptr, slots_ptr, out_ptr, OUT, IN, GI, layer,
                              s_hg, s_ho, s_hk, s_ai, s_ak, s_wo, s_wi, s_og, s_oo, s_oi,
                              DETERMINISTIC: tl.constexpr, BO: tl.constexpr, BI: tl.constexpr, BK: tl.constexpr,
                              SHIFT: tl.constexpr, INV: tl.constexpr, ROUND_A: tl.constexpr,
                              ROUND_B: tl.constexpr, KEY_A: tl.constexpr, KEY_B: tl.constexpr):
        pid_o = tl.program_id(0)
        pid_i = tl.program_id(1)
        g = tl.program_id(2)
        offs_o = pid_o * BO + tl.arange(0, BO)
        offs_i = pid_i * BI + tl.arange(0, BI)
        acc = tl.zeros((BO, BI), dtype=tl.float32)
        for k0 in range(0, GI, BK):
            offs_k = k0 + tl.arange(0, BK)
            h = tl.load(h_ptr + g * s_hg + offs_o[:, None] * s_ho + offs_k[None, :] * s_hk,
                        mask=(offs_o[:, None] < OUT) & (offs_k[None, :] < GI), other=0.0)
            a = tl.load(a_ptr + offs_i[None, :] * s_ai + offs_k[:, None] * s_ak,
                        mask=(offs_i[None, :] < IN) & (offs_k[:, None] < GI), other=0.0)
            acc += tl.dot(h.to(tl.float32), a.to(tl.float32), input_precision="ieee")
        bias = tl.load(b_ptr + offs_i, mask=offs_i < IN, other=0.0).to(tl.float32)
        logits = acc + bias[None, :]
        inside = (offs_o[:, None] < OUT) & (offs_i[None, :] < IN)
        w = tl.load(w_ptr + offs_o[:, None] * s_wo + offs_i[None, :] * s_wi, mask=inside, other=0.0)
        if DETERMINISTIC:
            keep = logits > 0
        else:
            key = tl.load(keys_ptr + g)
            slot = tl.load(slots_ptr + g)
            idx = offs_o[:, None] * IN + offs_i[None, :]
            zero = (idx * 0).to(tl.uint32)
            # Philox-4x32-10 (mubench.kernels.philox), written out so that nothing but core ops runs in the kernel
            # `zero + layer`, not `layer.to(...)`: Triton passes an int argument equal to 1 as a constant (no `.to`)
            c0, c1, c2, c3 = idx.to(tl.uint32), zero + layer, zero + slot.to(tl.uint32), zero
            k0 = zero + (key & 0xFFFFFFFF).to(tl.uint32)
            k1 = zero + ((key >> 32) & 0xFFFFFFFF).to(tl.uint32)
            for _ in tl.static_range(10):
                p0, p2 = c0, c2
                c0 = tl.umulhi(p2, ROUND_B) ^ c1 ^ k0
                c2 = tl.umulhi(p0, ROUND_A) ^ c3 ^ k1
                c1 = p2 * ROUND_B
                c3 = p0 * ROUND_A
                k0 = k0 + KEY_A
                k1 = k1 + KEY_B
            u = (c0 >> SHIFT).to(tl.float32) * INV
            noise = -tl.log(1.0 - u)
            keep = noise < tl.exp(logits)
        masked = tl.where(keep, w, tl.zeros_like(w))
        tl.store(out_ptr + g * s_og + offs_o[:, None] * s_oo + offs_i[None, :] * s_oi, masked, mask=inside)

    def launch(h, a_in, b_in, weight, keys, slots, layer, deterministic, out):
        G, OUT, GI = h.shape
        IN = weight.shape[1]
        BO, BI, BK = 32, 32, 16
        grid = (triton.cdiv(OUT, BO), triton.cdiv(IN, BI), G)
        masked_weights_kernel[grid](h, a_in, b_in, weight, keys, slots, out, OUT, IN, GI, layer,
                                    h.stride(0), h.stride(1), h.stride(2), a_in.stride(0), a_in.stride(1),
                                    weight.stride(0), weight.stride(1), out.stride(0), out.stride(1), out.stride(2),
                                    DETERMINISTIC=deterministic, BO=BO, BI=BI, BK=BK, SHIFT=shift, INV=inv,
                                    ROUND_A=ROUND_A, ROUND_B=ROUND_B, KEY_A=KEY_A, KEY_B=KEY_B)
        return out

    return launch


def masked_weights_triton(h: torch.Tensor, a_in: torch.Tensor, b_in: torch.Tensor, weight: torch.Tensor,
                          keys: Optional[torch.Tensor], slots: Optional[torch.Tensor], layer: int,
                          deterministic: bool = False, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The fused kernel; same arguments and result as :func:`masked_weights_reference`. ``out``: a ``[G, out, in]``
    tensor of ``weight``'s dtype to write into (e.g. one layer's slice of a group's weights), else a new one."""
    why = triton_unavailable(weight.device)
    if why is not None:
        raise RuntimeError(why)
    G = h.shape[0]
    if out is None:
        out = torch.empty((G, *weight.shape), dtype=weight.dtype, device=weight.device)
    if deterministic or keys is None:
        keys = torch.zeros(G, dtype=torch.int64, device=weight.device)
        slots = torch.zeros(G, dtype=torch.int64, device=weight.device)
    return _kernel(interpreter_on())(h.contiguous(), a_in.contiguous(), b_in.contiguous(), weight.contiguous(),
                                     keys.to(torch.int64).contiguous(), slots.to(torch.int64).contiguous(),
                                     int(layer), bool(deterministic), out)


GROUP_SCHEMA = ("(Tensor h, Tensor a_in, Tensor b_in, Tensor weight, Tensor? keys, Tensor? slots, int[] layers, "
                "bool deterministic) -> Tensor")


def _group_weights(h: torch.Tensor, a_in: torch.Tensor, b_in: torch.Tensor, weight: torch.Tensor,
                   keys: Optional[torch.Tensor], slots: Optional[torch.Tensor], layers: list[int],
                   deterministic: bool) -> torch.Tensor:
    """The operator's implementation: each layer's kernel writes its slice of one ``[L, G, out, in]`` tensor."""
    out = torch.empty((len(layers), h.shape[1], *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    for k, layer in enumerate(layers):
        masked_weights_triton(h[k], a_in[k], b_in[k], weight[k], keys, slots, layer, deterministic, out=out[k])
    return out


def _group_weights_shape(h: torch.Tensor, a_in: torch.Tensor, b_in: torch.Tensor, weight: torch.Tensor,
                         keys: Optional[torch.Tensor], slots: Optional[torch.Tensor], layers: list[int],
                         deterministic: bool) -> torch.Tensor:
    """The operator's fake implementation (what ``torch.compile`` traces with): the output's shape and dtype."""
    return weight.new_empty((len(layers), h.shape[1], *weight.shape[1:]))


@functools.lru_cache(maxsize=1)
def register_group_operator() -> None:
    """Registers ``mubench::masked_group_weights`` with PyTorch's dispatcher (once per process). ``torch.compile``
    cannot trace a registration, so it must happen before a compiled call: maskunet does it when it builds a
    ``kernel: triton`` model. Eager calls do not need it (:func:`masked_group_weights`)."""
    op = torch.library.custom_op("mubench::masked_group_weights", _group_weights, mutates_args=(),
                                 schema=GROUP_SCHEMA)
    op.register_fake(_group_weights_shape)


def masked_group_weights(h: torch.Tensor, a_in: torch.Tensor, b_in: torch.Tensor, weight: torch.Tensor,
                         keys: Optional[torch.Tensor], slots: Optional[torch.Tensor], layers: list[int],
                         deterministic: bool = False) -> torch.Tensor:
    """``[L, G, out, in]`` masked weights of a group of ``L`` layers of one shape, through the fused kernel:
    ``h`` ``[L, G, out, gi]``, ``a_in`` ``[L, in, gi]``, ``b_in`` ``[L, in]``, ``weight`` ``[L, out, in]``; layer
    ``k``'s noise is keyed by ``layers[k]`` (its index among the model's masked layers), row ``g``'s by ``keys[g]``
    and ``slots[g]``. Slice ``k`` equals :func:`masked_weights_triton` of layer ``k``'s tensors (which raises where
    the kernel cannot run; maskunet checks that when it is built)."""
    layers = [int(i) for i in layers]
    if torch.compiler.is_compiling():  # the operator: one opaque node of the graph
        return torch.ops.mubench.masked_group_weights.default(h, a_in, b_in, weight, keys, slots, layers,
                                                              bool(deterministic))
    # eager: its implementation, without the dispatcher's ~10 us a call (measured on this CPU; ~70 groups a forward)
    return _group_weights(h, a_in, b_in, weight, keys, slots, layers, bool(deterministic))
