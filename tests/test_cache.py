"""The sample and score cache's own contracts: pixels as written (rounded, not truncated; height and width kept),
reproducible PNG bytes, score files read back as written and kept apart per scorer, and what a scorer's key holds."""
from __future__ import annotations

import numpy as np
import torch


def test_to_uint8_rounds_to_nearest_and_keeps_height_and_width():
    from mubench.cache import to_uint8

    x = torch.zeros(1, 3, 2, 3)  # H=2, W=3: not square
    x[0, 0, 0, 2] = 0.6 / 255  # rounds up to 1 (truncation would give 0)
    x[0, 1, 1, 0] = 1.2  # clipped to 255
    out = to_uint8(x)
    assert out.shape == (1, 2, 3, 3) and out.dtype == np.uint8
    assert out[0, 0, 2, 0] == 1 and out[0, 1, 0, 1] == 255 and int(out.sum()) == 256


def test_png_bytes_use_the_fixed_zlib_level():
    from mubench.cache import png_bytes

    data = png_bytes(np.zeros((4, 4, 3), dtype=np.uint8))
    idat = data.index(b"IDAT") + 4
    assert data[idat:idat + 2] == b"\x78\x9c"  # zlib header of compress_level 6 (FLEVEL=2): reproducible bytes


def test_score_round_trip_returns_exactly_what_was_written(tmp_path):
    from mubench.cache import Cache

    cache = Cache(tmp_path)
    cache.write_score("s-1", "ab12", {"x": np.float32(0.5), "n": 3, "v": np.arange(3)})
    got = cache.read_score("s-1", "ab12")
    assert set(got) == {"x", "n", "v"} and got["x"] == 0.5 and got["n"] == 3
    assert np.array_equal(got["v"], np.arange(3))


def test_two_scorers_scores_of_one_image_are_kept_apart(tmp_path):
    from mubench.cache import Cache

    cache = Cache(tmp_path)
    cache.write_score("clip-aa", "ab12", {"s": 1.0})
    cache.write_score("oracle-bb", "ab12", {"s": 2.0})
    assert cache.read_score("clip-aa", "ab12")["s"] == 1.0 and cache.read_score("oracle-bb", "ab12")["s"] == 2.0


def test_the_scoring_dtype_is_in_the_scorer_key():
    from dataclasses import replace

    from mubench.cache import scorer_key
    from mubench.scorers.base import ScorerContext
    from mubench.scorers.fid_features import FidFeaturesParams, InceptionFeatures

    def make():
        return InceptionFeatures(FidFeaturesParams(resolution=64), ScorerContext(torch.device("cpu"), weights="random"),
                                 "fid")

    a, half = make(), make()
    half.ctx = replace(half.ctx, dtype=torch.float16)
    assert scorer_key(half) != scorer_key(a)
