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
tensors (see :func:`philox4x32` for the products).
"""
from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57  # multipliers of the two lanes
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85  # Weyl increments of the key words
ROUNDS = 10
UNIFORM_BITS = 24


def philox4x32(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor, k0: torch.Tensor,
               k1: torch.Tensor, rounds: int = ROUNDS) -> tuple[torch.Tensor, ...]:
    """Philox-4x32 of the counter ``(c0, c1, c2, c3)`` under the key ``(k0, k1)`` (int64 tensors holding uint32
    values, broadcast together); returns the four output words the same way.

    A round's 32×32→64 bit products are formed in int64, which wraps modulo 2⁶⁴ on overflow (products above 2⁶³
    come out negative); the low 64 bits are then exact, so ``(p >> 32) & MASK32`` (arithmetic shift, then mask) is
    the high word and ``p & MASK32`` the low one. The keys stay at their own (broadcastable) shape."""
    shape = torch.broadcast_shapes(c0.shape, c1.shape, c2.shape, c3.shape, k0.shape, k1.shape)
    c0, c2 = c0.expand(shape), c2.expand(shape)
    for _ in range(rounds):
        p_b = c2 * ROUND_B
        p_a = c0 * ROUND_A
        c0 = ((p_b >> 32) & MASK32).bitwise_xor_(c1).bitwise_xor_(k0)
        c2 = ((p_a >> 32) & MASK32).bitwise_xor_(c3).bitwise_xor_(k1)
        c1, c3 = p_b.bitwise_and_(MASK32), p_a.bitwise_and_(MASK32)
        k0 = (k0 + KEY_A) & MASK32
        k1 = (k1 + KEY_B) & MASK32
    return tuple(c.expand(shape) for c in (c0, c1, c2, c3))


#: elements per row computed at once by :func:`counter_uniform`: a block's int64 temporaries stay in the CPU's
#: caches across the ten rounds (the whole row at once went to memory and back some 120 times)
BLOCK = 2**14


def counter_uniform(keys: torch.Tensor, slots: torch.Tensor, layer: int, numel: int) -> torch.Tensor:
    """``U`` of shape ``[rows, numel]`` (fp32, multiples of 2⁻²⁴ in [0, 1)): row ``r`` keyed by ``keys[r]`` (int64,
    63-bit), counter ``(element, layer, slots[r], 0)``."""
    device = keys.device
    keys = keys.to(torch.int64)[:, None]
    k0, k1 = keys & MASK32, (keys >> 32) & MASK32
    c1 = torch.full((), int(layer), dtype=torch.int64, device=device)
    c2 = slots.to(torch.int64)[:, None]
    c3 = torch.zeros((), dtype=torch.int64, device=device)
    out = torch.empty((keys.shape[0], numel), dtype=torch.float32, device=device)
    # blocks keep eager temporaries in cache; a compiled graph fuses the rounds and needs none
    block = numel if device.type != "cpu" or torch.compiler.is_compiling() else BLOCK
    for start in range(0, numel, block):
        idx = torch.arange(start, min(start + block, numel), dtype=torch.int64, device=device)[None, :]
        word = philox4x32(idx, c1, c2, c3, k0, k1)[0]
        out[:, start:start + idx.shape[1]] = (word >> (32 - UNIFORM_BITS)).to(torch.float32) * (2.0 ** -UNIFORM_BITS)
    return out


def counter_exponential(keys: torch.Tensor, slots: torch.Tensor, layer: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``E = −log(1 − U)`` of shape ``[rows, *shape]`` from :func:`counter_uniform` (one mask's noise per row)."""
    u = counter_uniform(keys, slots, layer, math.prod(shape))
    return torch.log(1.0 - u).neg_().view(keys.shape[0], *shape)
