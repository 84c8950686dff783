"""Canonical chunks: the fixed-shape groups every denoiser, decoder and scorer call sees.

A matrix product's result for one row depends on the shapes of the call (CPU GEMM / conv kernels pick their
blocking by shape), not on the other rows' values. So if every call has exactly ``K`` rows — ``K`` images, padded
when short — and the chunks are cut from the run's global sample order (not from ``batch_size``, not per process
shard), an image's bits depend only on (seed, prompt, ``K``, device, dtype):

- ``chunks(samples, K)`` cuts the global order into consecutive chunks of ``K`` (the last may be short; the calls
  pad it to ``K`` and drop the padding);
- ``shard_chunks`` gives process ``rank`` of ``world`` the chunks whose index ``% world == rank``: whole chunks, so
  sharding never changes a chunk's contents;
- ``batch_size`` only sets how many chunks are in flight at once (memory): ``chunks_in_flight``.

Scorers get the same treatment with their own chunk, :data:`SCORE_CHUNK` images (recorded in the score cache key
and in the protocol), so a per-image score does not depend on which other images were scored with it.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import torch

T = TypeVar("T")

#: images per denoiser call when ``chunk=`` is not given, by device type (measured: docs/efficiency.md)
DEFAULT_CHUNK = {"cpu": 8, "cuda": 32}
#: images per scorer call (padded): part of every score's cache key and of the run protocol
SCORE_CHUNK = 16


def default_chunk(device: torch.device) -> int:
    return DEFAULT_CHUNK.get(device.type, 8)


def chunks(samples: Sequence[T], size: int) -> list[list[T]]:
    """Consecutive chunks of ``size`` in the given (global) order; only the last may be shorter."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(samples[i:i + size]) for i in range(0, len(samples), size)]


def shard_chunks(all_chunks: Sequence[list[T]], rank: int, world: int) -> list[list[T]]:
    """The chunks of process ``rank`` of ``world``: index ``% world == rank`` (whole chunks)."""
    return [c for i, c in enumerate(all_chunks) if i % world == rank]


def chunks_in_flight(batch_size: int, size: int) -> int:
    """Chunks per call for ``batch_size`` images held at once (at least one whole chunk)."""
    return max(1, batch_size // size)


def pad(items: Sequence[T], size: int) -> list[T]:
    """``items`` padded to a multiple of ``size`` with copies of its last element (padding is computed and dropped)."""
    items = list(items)
    if not items:
        return items
    short = -len(items) % size
    return items + [items[-1]] * short
