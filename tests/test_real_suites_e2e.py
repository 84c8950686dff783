"""Every real suite end to end through the CLI on the tiny random SD-style pipeline with tiny random scorers.

Numbers are meaningless (random weights); the code path is the real one. Real prompt files are read from
../shared/data and these tests skip when it is absent.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from coco_fakes import coco_folder
from conftest import SHARED_DATA, run_cli

TINY = ["model=tiny-sd", "weights=random", "--no-progress", "suite.sampler.steps=2", "suite.sampler.resolution=32"]
COMPBENCH = SHARED_DATA / "t2i-compbench"
GENEVAL = SHARED_DATA / "geneval" / "evaluation_metadata.jsonl"


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(not COMPBENCH.is_dir(), reason="../shared/data/t2i-compbench is absent")
def test_compbench_end_to_end_and_rescoring_its_reference_folder(tmp_path):
    suite = ["suite=compbench", "limit=2", "suite.categories=[color]", "suite.images_per_prompt=2",
             f"suite.prompts_dir={COMPBENCH}"]
    out = tmp_path / "out"
    proc = run_cli("run", *suite, *TINY, f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = _results(out)
    assert set(res["metrics"]) == {"color"} and res["metrics"]["color"]["n"] == 4
    samples = [json.loads(s) for s in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(s["seed"] for s in samples) == [42, 42, 43, 43]  # the reference's seeds
    # the same images in T2I-CompBench's folder naming score to the same number
    folder = tmp_path / "color" / "samples"
    folder.mkdir(parents=True)
    for s in samples:
        k = 2 * int(s["prompt_id"].split("-")[1]) + s["image_index"]
        shutil.copyfile(s["path"], folder / f"{s['prompt']}_{k:06d}.png")
    proc = run_cli("score", *suite, "weights=random", f"images={tmp_path / 'color'}", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["metrics"] == res["metrics"]


@pytest.mark.slow
@pytest.mark.skipif(not GENEVAL.is_file(), reason="../shared/data/geneval is absent")
def test_geneval_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", "suite=geneval", "limit=3", "suite.images_per_prompt=1", f"suite.metadata={GENEVAL}",
                   *TINY, f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _results(out)["metrics"]
    assert "overall" in metrics and 0.0 <= metrics["overall"]["value"] <= 1.0


@pytest.mark.slow
def test_coco_end_to_end(tmp_path):
    cap, img_dir = coco_folder(tmp_path, 6, 100)
    out = tmp_path / "out"
    proc = run_cli("run", "suite=coco", "limit=4", f"suite.captions={cap}", f"suite.images={img_dir}",
                   "suite.fid.resolution=32", "suite.fid_force=true", *TINY, f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _results(out)["metrics"]
    assert {"fid", "clip", "clip_x100"} <= set(metrics)
    assert metrics["fid"]["higher_is_better"] is False and metrics["fid"]["n"] == 4
    # the same data mounted elsewhere: the same protocol (the selection manifest pins the captions), the same numbers
    moved = tmp_path / "mnt"
    shutil.copytree(img_dir, moved / "val2017")
    shutil.copyfile(cap, moved / "captions_val2017.json")
    proc = run_cli("run", "suite=coco", "limit=4", f"suite.captions={moved / 'captions_val2017.json'}",
                   f"suite.images={moved / 'val2017'}", "suite.fid.resolution=32", "suite.fid_force=true", *TINY,
                   "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout)
    assert again["protocol_hash"] == _results(out)["protocol_hash"] and again["metrics"] == metrics
    assert again["config"]["suite"]["params"]["images"] == str(moved / "val2017")  # the config says where it was


@pytest.mark.parametrize("args, needle", [
    (["suite=toy", "model=sd15", "model.path=/nonexistent/sd15"], "/nonexistent/sd15"),
    (["suite=compbench", "model=tiny-sd", "suite.prompts_dir=/nonexistent/prompts"], "color_val.txt"),
    (["suite=geneval", "model=tiny-sd", "suite.metadata=/nonexistent/meta.jsonl"], "meta.jsonl"),
])
def test_missing_real_assets_stop_with_the_assets_message(args, needle):
    proc = run_cli("run", *args, "--no-progress")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr and "Traceback" not in proc.stderr
