"""Counter-based mask noise: Philox-4x32-10 in plain PyTorch (the reference the Triton kernel is tested against).

A counter-based generator computes the random number of element ``n`` directly from a key and a counter, with no
state carried between draws. That lets a fused GPU kernel draw a mask's noise in registers, tile by tile, and still
give every weight of every layer and row the same number on every device, for any tiling, batch or process layout.

Keying (``noise: counter`` of ``maskunet``): key = a 63-bit seed drawn once per image and denoiser call from the
image's stream (so the step is in the key); counter = (weight index ``o·in + i``, layer index in the method's
``masked`` order, row slot of the image (its CFG rows 0, 1, ...), 0). The first 32-bit output word ``r`` gives the
uniform ``U = (r >> 8) · 2⁻²⁴``, a multiple of 2⁻²⁴ in [0, 1), so ``1 − U`` is exact in fp32 and the exponential
noise is ``E = −log(1 − U)`` (finite, ≤ 24·ln 2).

Philox-4x32 is Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC 2011): ten rounds of two 32×32→64
bit multiplications with the round constants below and a Weyl key schedule. Here uint32 arithmetic is done in int64
tensors; the high word of a 32×32 product is formed from 16-bit halves so nothing overflows.
"""
from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57  # multipliers of the two lanes
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85  # Weyl increments of the key words
ROUNDS = 10
UNIFORM_BITS = 24


def _mul_hi_lo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of ``a · b`` for a 32-bit constant ``a`` and a tensor of 32-bit values ``b``."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    p_hi, p_lo = a * b_hi, a * b_lo  # each < 2**48
    hi = (p_hi + (p_lo >> 16)) >> 16
    lo = (((p_hi & 0xFFFF) << 16) + p_lo) & MASK32
    return hi, lo


def philox4x32(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: torch.Tensor,
               k1: torch.Tensor, rounds: int = ROUNDS) -> tuple[torch.Tensor, ...]:
    """Philox-4x32 of the counter ``(c0, c1, c2, c3)`` under the key ``(k0, k1)`` (int64 tensors holding uint32
    values, broadcast together); returns the four output words the same way."""
    c0, c1, c2, c3, k0, k1 = torch.broadcast_tensors(c0, c1, c2, c3, k0, k1)
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo(ROUND_B, c2)
        hi_a, lo_a = _mul_hi_lo(ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + KEY_A) & MASK32
        k1 = (k1 + KEY_B) & MASK32
    return c0, c1, c2, c3


def counter_uniform(keys: torch.Tensor, slots: torch.Tensor, layer: int, numel: int) -> torch.Tensor:
    """``U`` of shape ``[rows, numel]`` (fp32, multiples of 2⁻²⁴ in [0, 1)): row ``r`` keyed by ``keys[r]`` (int64,
    63-bit), counter ``(element, layer, slots[r], 0)``."""
    device = keys.device
    keys = keys.to(torch.int64)[:, None]
    idx = torch.arange(numel, dtype=torch.int64, device=device)[None, :]
    zero = torch.zeros((), dtype=torch.int64, device=device)
    word, _, _, _ = philox4x32(idx, zero + int(layer), slots.to(torch.int64)[:, None], zero,
                               keys & MASK32, (keys >> 32) & MASK32)
    return (word >> (32 - UNIFORM_BITS)).to(torch.float32) * (2.0 ** -UNIFORM_BITS)


def counter_exponential(keys: torch.Tensor, slots: torch.Tensor, layer: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``E = −log(1 − U)`` of shape ``[rows, *shape]`` from :func:`counter_uniform` (one mask's noise per row)."""
    u = counter_uniform(keys, slots, layer, math.prod(shape))
    return torch.log(1.0 - u).neg_().view(keys.shape[0], *shape)
