"""FLOP counting with ``torch.utils.flop_counter.FlopCounterMode`` (dispatch level: every matmul / conv / attention
kernel that runs is counted, the mask path's adapters and generators included; elementwise ops are not counted).

FlopCounterMode counts ``2·m·n·k`` per GEMM (FLOPs = 2 × MACs). torch has no formula for the CPU flash-attention
kernel (``aten._scaled_dot_product_flash_attention_for_cpu``), so its attention would count as 0 on a CPU; we register
the same formula torch uses for the GPU SDPA kernels (``sdpa_flop_count``: QKᵀ and AV), so CPU and GPU counts agree.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

TOOL = f"torch.utils.flop_counter.FlopCounterMode (torch {torch.__version__}; + CPU flash-attention formula)"


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _extra_formulas() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_flash_attention_flop} if op is not None else {}


def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """Run ``fn`` under FlopCounterMode; returns (total FLOPs, FLOPs per aten op)."""
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op
