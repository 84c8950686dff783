"""Issue 16's counter-based mask noise: Philox-4x32-10 in PyTorch (``mubench.kernels.philox``), its known answers,
its keying and its laws; the Triton kernel's use of it is in test_fused_masks.py."""
from __future__ import annotations

import math

import pytest
import torch

from mubench.kernels.philox import counter_exponential, counter_uniform, philox4x32
from mubench.methods.maskunet import keep_probability


def _u32(v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int64)


@pytest.mark.parametrize("counter,key,expected", [
    # Random123's known-answer vectors for Philox-4x32-10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    out = philox4x32(*map(_u32, counter), *map(_u32, key))
    assert tuple(int(w) for w in out) == expected


def test_counter_noise_does_not_depend_on_the_cpu_block_size(monkeypatch):
    # the CPU computes rows in blocks of BLOCK elements; element n's number is n's whatever the blocks
    from mubench.kernels import philox

    keys, slots = torch.tensor([7, 2**61 + 3], dtype=torch.int64), torch.tensor([0, 1])
    whole = counter_uniform(keys, slots, 5, 1000)
    monkeypatch.setattr(philox, "BLOCK", 37)
    assert torch.equal(counter_uniform(keys, slots, 5, 1000), whole)
    # ... and the products above 2^63 (int64 wraps) give the exact high words: every word against Python integers
    c0 = torch.tensor([0xFFFFFFFF, 0x80000001, 12345], dtype=torch.int64)
    hi = ((c0 * philox.ROUND_A) >> 32) & philox.MASK32
    assert [int(h) for h in hi] == [(int(c) * philox.ROUND_A) >> 32 for c in c0]


def test_counter_noise_is_uniform_exponential_and_keyed():
    keys = torch.tensor([12345, 2**62 + 17], dtype=torch.int64)
    slots = torch.tensor([0, 1])
    u = counter_uniform(keys, slots, layer=3, numel=200_000)
    assert u.dtype == torch.float32 and (u >= 0).all() and (u < 1).all()
    assert torch.equal(u, u * 2**24 // 1 / 2**24)  # multiples of 2^-24
    n = u.shape[1]
    for row in u:
        assert abs(row.mean().item() - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert torch.corrcoef(u)[0, 1].abs() < 5 / math.sqrt(n)
    # every part of the key and counter changes the numbers; the same ones give the same numbers
    base = counter_uniform(keys[:1], slots[:1], 3, 64)
    assert torch.equal(base, counter_uniform(keys[:1], slots[:1], 3, 64))
    assert torch.equal(base[:, :10], counter_uniform(keys[:1], slots[:1], 3, 10))  # element n is n's, any size
    for other in (counter_uniform(keys[:1] + 1, slots[:1], 3, 64), counter_uniform(keys[:1], slots[:1] + 1, 3, 64),
                  counter_uniform(keys[:1], slots[:1], 4, 64)):
        assert (other != base).float().mean() > 0.9
    # the event E < e^l keeps with probability 1 - exp(-e^l), as the stream noise does
    e = counter_exponential(keys[:1], slots[:1], 0, (3, 100_000))[0]
    logits = torch.tensor([-2.0, 0.0, 1.0])[:, None]
    keep = (e < logits.exp()).float().mean(1)
    torch.testing.assert_close(keep, keep_probability(logits[:, 0]), atol=5e-3, rtol=0)


def test_counter_uniforms_are_the_first_philox_word_of_element_layer_slot_under_the_key():
    """The documented keying, pinned: row ``r``'s element ``n`` of layer ``l`` is the first output word of
    Philox-4x32-10 at counter ``(n, l, slots[r], 0)`` under key ``(low, high 32 bits of keys[r])``, its top 24 bits
    times 2⁻²⁴ (golden: key 0 and counter 0 give Random123's first known answer, word 0x6627E8D5)."""
    assert counter_uniform(torch.tensor([0]), torch.tensor([0]), 0, 1).item() == 0x6627E8 / 2**24
    keys, slots, layer, numel = torch.tensor([5 + (9 << 32), 2**62 + 12345]), torch.tensor([1, 3]), 7, 50
    u = counter_uniform(keys, slots, layer, numel)
    n = torch.arange(numel)
    for r in range(2):
        key = int(keys[r])
        word = philox4x32(n, _u32(layer), _u32(int(slots[r])), _u32(0), _u32(key & 0xFFFFFFFF), _u32(key >> 32))[0]
        assert torch.equal(u[r], (word >> 8).float() / 2**24)
    e = counter_exponential(keys, slots, layer, (5, 10))
    assert torch.equal(e, -torch.log(1.0 - u).view(2, 5, 10))
