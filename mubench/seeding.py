"""Per-image random streams.

Image ``j`` of prompt ``prompt_id`` in suite ``suite`` of a run seeded ``seed`` draws its initial
noise and any method noise (random masks, Gumbel noise, ancestral sampler noise) from one
``torch.Generator`` seeded by :func:`image_seed`. The same image therefore comes out whatever the
batch size, the number of processes or the order of work.
"""
from __future__ import annotations

import hashlib

import torch


def image_seed(run_seed: int, suite: str, prompt_id: str, image_index: int) -> int:
    """A 63-bit seed derived from (run seed, suite, prompt id, image index)."""
    blob = f"{int(run_seed)}\x1f{suite}\x1f{prompt_id}\x1f{int(image_index)}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def image_generator(seed: int) -> torch.Generator:
    """CPU generator (noise is drawn on the CPU and moved, so it is device independent)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))
