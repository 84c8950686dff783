"""FLOP counting with ``torch.utils.flop_counter.FlopCounterMode`` (dispatch level: every matmul / conv / attention
kernel that runs is counted, the mask path's adapters and generators included; elementwise ops are not counted).

FlopCounterMode counts ``2·m·n·k`` per GEMM (FLOPs = 2 × MACs). torch has no formula for the CPU flash-attention
kernel (``aten._scaled_dot_product_flash_attention_for_cpu``) nor for its backward, so a CPU's attention would count
as 0; we register the formulas torch uses for the GPU SDPA kernels (``sdpa_flop_count``: QKᵀ and AV;
``sdpa_backward_flop_count``: the scores recomputed and the four gradient GEMMs), so CPU and GPU counts agree, with
and without gradients.

What runs inside a Triton kernel is no aten op and is not seen; the efficiency suite counts such methods through
their torch path (:func:`torch_kernels`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

TOOL = f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}; + CPU flash-attention formula)"


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_attention_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args: Any,
                                       out_shape=None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _extra_formulas() -> dict:
    formulas = {"_scaled_dot_product_flash_attention_for_cpu": _cpu_flash_attention_flop,
                "_scaled_dot_product_flash_attention_for_cpu_backward": _cpu_flash_attention_backward_flop}
    return {op: f for name, f in formulas.items() if (op := getattr(torch.ops.aten, name, None)) is not None}


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Run ``fn`` under FlopCounterMode; returns (total FLOPs, FLOPs per aten op)."""
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


@contextlib.contextmanager
def torch_kernels(modules: Iterable[nn.Module]) -> Iterator[list[str]]:
    """Meanwhile the modules with ``kernel = "triton"`` (MaskUNet's fused masked-weights kernel, ``kernel:
    triton``) take their torch path, the same arithmetic as aten ops: FlopCounterMode does not see the GEMMs inside a
    Triton kernel (MaskUNet's logits ``h · A_inᵀ``). Restored afterwards; yields the switched modules' class names."""
    switched = [m for m in modules if getattr(m, "kernel", None) == "triton"]
    for module in switched:
        module.kernel = "torch"
    try:
        yield sorted({type(m).__name__ for m in switched})
    finally:
        for module in switched:
            module.kernel = "triton"
