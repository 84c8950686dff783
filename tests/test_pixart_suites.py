"""PixArt-α runs the real text-to-image suites (COCO, GenEval) through the CLI: tiny random PixArt config, tiny
random scorers, the suites' real code paths (numbers are meaningless)."""
from __future__ import annotations

import json

import pytest

from coco_fakes import coco_folder
from conftest import SHARED_DATA, run_cli

TINY_PIXART = ["model=pixart", "weights=random", "model.arch=tiny", "model.resolution=32", "model.max_length=16",
               "--no-progress", "suite.sampler.steps=2", "suite.sampler.resolution=32"]
GENEVAL = SHARED_DATA / "geneval" / "evaluation_metadata.jsonl"


@pytest.mark.slow
def test_pixart_coco_with_maskunet_end_to_end(tmp_path):
    cap, img_dir = coco_folder(tmp_path, 5, 200)
    out = tmp_path / "out"
    proc = run_cli("run", "suite=coco", "method=random-mask", "method.ratio=0.2", "limit=4", f"suite.captions={cap}",
                   f"suite.images={img_dir}", "suite.fid.resolution=32", "suite.fid_force=true", *TINY_PIXART,
                   f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert {"fid", "clip", "clip_x100"} <= set(res["metrics"]) and res["model"] == "pixart"
    assert res["protocol"]["sampler"]["scheduler"] == "dpmsolver++"  # PixArt's default sampler
    assert res["method_info"]["masked_layers"] == 16  # tiny PixArt: blocks 2-3, attn1 + attn2 q/k/v/o


@pytest.mark.slow
@pytest.mark.skipif(not GENEVAL.is_file(), reason="../shared/data/geneval is absent")
def test_pixart_geneval_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", "suite=geneval", "limit=2", "suite.images_per_prompt=1", f"suite.metadata={GENEVAL}",
                   *TINY_PIXART, f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "results.json").read_text())["metrics"]
    assert "overall" in metrics and 0.0 <= metrics["overall"]["value"] <= 1.0
