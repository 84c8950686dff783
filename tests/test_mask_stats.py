"""Mask statistics: per-layer ratios average over every row of every call, spreads are standard deviations, per-step
and overall ratios weight layers by their weight counts, each trajectory restarts at step 0, and the observer is
attached to the masked model; plus the transformer "decoder" half of an odd-depth stack."""
from __future__ import annotations

import types

import pytest
import torch

from mubench.errors import UsageError
from mubench.methods.mask_stats import MaskRecorder

LAYERS = [{"name": "up_blocks.1.a", "block": "b0", "kind": "linear", "weights": 100},
          {"name": "up_blocks.2.b", "block": "b1", "kind": "linear", "weights": 300}]


def _prepared():
    return types.SimpleNamespace(layers=LAYERS, info={}, on_mask=None)


def _mask(*zeroed_fractions):
    """One row per fraction, 10 weights a row, that fraction of them zero."""
    rows = torch.ones(len(zeroed_fractions), 10)
    for r, f in enumerate(zeroed_fractions):
        rows[r, :round(10 * f)] = 0
    return rows


def _trajectory(rec):
    rec.new_trajectory()
    rec.observe(0, _mask(0.2, 0.6))
    rec.observe(0, _mask(0.1))  # a second denoiser call in the same step
    rec.observe(1, _mask(0.0, 0.4))
    rec.next_step(0)
    rec.observe(0, _mask(1.0, 1.0))
    rec.observe(1, _mask(0.5, 0.5))
    rec.next_step(1)


@pytest.mark.parametrize("trajectories", [1, 2])
def test_recorder_summary_is_row_weighted_and_weight_weighted(trajectories):
    """Per-layer ratio = mean over all rows and steps (spread: std over rows); per-step and overall ratios weight each
    layer by its number of weights; every trajectory starts again at step 0 with its step's timestep."""
    rec = MaskRecorder(_prepared(), "fake")
    for _ in range(trajectories):
        _trajectory(rec)
    s = rec.summary([900, 500])
    a, b = s["layers"]
    assert a["mask_ratio"] == pytest.approx(0.58)  # (0.2 + 0.6 + 0.1 + 1 + 1) / 5 rows
    assert a["mask_ratio_std_over_rows"] == pytest.approx((2.41 / 5 - 0.58 ** 2) ** 0.5)
    assert a["per_step"] == pytest.approx([0.3, 1.0])
    assert b["mask_ratio"] == pytest.approx(0.35) and b["per_step"] == pytest.approx([0.2, 0.5])
    assert [(st["step"], st["timestep"]) for st in s["steps"]] == [(0, 900), (1, 500)]
    assert [st["mask_ratio"] for st in s["steps"]] == pytest.approx([(100 * 0.3 + 300 * 0.2) / 400,
                                                                    (100 * 1.0 + 300 * 0.5) / 400])
    assert s["mask_ratio"] == pytest.approx((100 * 0.58 + 300 * 0.35) / 400)


def test_nothing_recorded_is_a_usage_error_and_the_model_gets_the_observer():
    """A run that recorded no mask says so; the observer goes on the masked model when the method has one."""
    with pytest.raises(UsageError, match="no masks were recorded"):
        MaskRecorder(_prepared()).summary([1])
    model = types.SimpleNamespace(on_mask=None)
    prepared = types.SimpleNamespace(layers=LAYERS, info={}, model=model)
    rec = MaskRecorder(prepared)
    assert model.on_mask == rec.observe


def test_the_decoder_half_of_an_odd_depth_stack_starts_at_n_over_2():
    """Blocks N // 2 … N − 1 are the transformer "decoder" (DiT-XL/2's 28: 14–27; a 5-block stack: 2–4)."""
    from torch import nn

    from mubench.methods.transformer_layers import decoder_blocks, select_transformer_layers

    assert list(decoder_blocks(5)) == [2, 3, 4] and list(decoder_blocks(28)) == list(range(14, 28))

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.to_q, self.to_k, self.to_v = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
            self.to_out = nn.ModuleList([nn.Linear(2, 2)])

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn1 = Attn()

    model = nn.Module()
    model.transformer_blocks = nn.ModuleList([Block() for _ in range(5)])
    names = [n for n, _ in select_transformer_layers(model, "decoder-attn")]
    assert sorted({int(n.split(".")[1]) for n in names}) == [2, 3, 4] and len(names) == 12
