"""`mubench masks`: per-layer and per-timestep mask ratios of a masking method's run, written as JSON and PNG plots."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from mubench.errors import UsageError
from training_fakes import caption_folder


def _check_files(report: dict, out: Path) -> dict:
    assert set(report["files"]) == {"json", "per_layer", "per_timestep"}
    for name in ("mask_ratio_per_layer.png", "mask_ratio_per_timestep.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
    written = json.loads((out / "masks.json").read_text())
    assert written["mask_ratio"] == pytest.approx(report["mask_ratio"])
    return written


def test_masks_of_maskunet_free(tmp_path):
    from mubench.commands.masks import record_masks

    out = tmp_path / "free"
    report = record_masks(["method=maskunet-free", "model=tiny-sd", "suite=toy", "limit=1", "weights=random",
                           "device=cpu", f"cache={tmp_path}", f"out={out}", "method.late_updates=1",
                           "method.sampler.steps=5", "method.rewards=[{scorer: micro-clip, weight: 5.0}]"])
    written = _check_files(report, out)
    assert written["n_images"] == 2 and written["sampler"]["steps"] == 5  # toy: 2 images per prompt
    assert written["sampler"]["chunk"] == 1  # one image per denoiser call: no padding row in the statistics
    assert len(written["layers"]) == written["method_info"]["masked_layers"] == 16
    assert [s["step"] for s in written["steps"]] == list(range(5))
    assert written["steps"][0]["timestep"] > written["steps"][-1]["timestep"]
    # logits start at 1.0 every step and take few updates: about exp(-e) = 6.6% of the weights are zeroed
    assert all(abs(s["mask_ratio"] - math.exp(-math.e)) < 0.02 for s in written["steps"])
    assert all(0 <= layer["mask_ratio"] <= 1 and layer["mask_ratio_std_over_rows"] >= 0 for layer in written["layers"])
    assert sum(layer["weights"] for layer in written["layers"]) == written["method_info"]["masked_weights"]


def test_masks_of_trained_maskunet(tmp_path):
    from mubench.commands.masks import record_masks

    data = caption_folder(tmp_path / "data")
    out = tmp_path / "trained"
    report = record_masks(["method=maskunet", "model=tiny-sd", "suite=toy", "limit=1", "device=cpu",
                           f"cache={tmp_path}", f"out={out}", f"method.train.data={data}", "method.train.steps=2",
                           "method.train.batch_size=2", "method.train.resolution=32", "method.adapter_bias=0.0"])
    written = _check_files(report, out)
    assert written["artifact"] and written["sampler"]["steps"] == 4  # trained on demand; tiny-sd's 4 DDIM steps
    # adapter bias 0: P(keep) = 1 - exp(-1) = 0.632 at the start, the masks zero about 37% of the weights
    assert abs(written["mask_ratio"] - math.exp(-1)) < 0.05


def test_masks_needs_a_masking_method(tmp_path):
    from mubench.commands.masks import record_masks

    with pytest.raises(UsageError, match="method 'sd' exposes no masks"):
        record_masks(["method=sd", "model=tiny-sd", "suite=toy", "limit=1", "device=cpu", f"out={tmp_path}"])
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match="chunk=8: masks samples one image per denoiser call"):  # not ignored
        record_masks(["method=maskunet", "model=tiny-sd", "suite=toy", "limit=1", "chunk=8", f"out={tmp_path}"])
    with pytest.raises(UsageError, match="is a file; out names a folder"):  # said before any model loads
        record_masks(["method=maskunet", "model=tiny-sd", "suite=toy", "limit=1", "device=cpu", f"out={afile}"])
