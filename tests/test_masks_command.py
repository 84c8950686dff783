"""`mubench masks`: per-layer and per-timestep mask ratios of a masking method's run, written as JSON and PNG plots;
its defaults (method, limit, out folder), one recorded trajectory per batch with the run's seeds and timesteps, and
what the command prints, without and with --json."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from cli_fakes import invoke_faked
from mubench.commands.masks import record_masks
from mubench.errors import UsageError
from mubench.models.tiny import SD_SCHEDULER_CONFIG
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


class _Stop(Exception):
    pass


@pytest.fixture
def resolved(monkeypatch):
    """Stop record_masks where the runner would be built; records the out path it checked and the config."""
    seen = SimpleNamespace(out=None, cfg=None)
    from mubench import pathcheck

    real_check = pathcheck.check_path

    def check_path(need):
        seen.out = need.path
        return real_check(need)

    def runner(cfg, regs):
        seen.cfg = cfg
        raise _Stop

    monkeypatch.setattr(pathcheck, "check_path", check_path)
    monkeypatch.setattr("mubench.runner.Runner", runner)
    return seen


def test_defaults_and_out_folder(resolved, monkeypatch, tmp_path):
    """method defaults to maskunet and limit to 16 prompts (as its help says); out defaults to
    masks-<method>-<model> in the working folder, and a ~ in out= is the home folder; chunk=1 is accepted."""
    from mubench.commands.masks import MASKS_HELP

    monkeypatch.chdir(tmp_path)
    with pytest.raises(_Stop):
        record_masks(["model=tiny-sd", "suite=toy", "chunk=1"])
    assert resolved.cfg.method.name == "maskunet" and resolved.cfg.run.chunk == 1
    assert f"limit=N      prompts to sample (default {resolved.cfg.run.limit})" in MASKS_HELP
    assert resolved.cfg.run.limit == 16
    assert resolved.out == Path("masks-maskunet-tiny-sd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(_Stop):
        record_masks(["method=maskunet-free", "model=tiny-sd", "suite=toy", "out=~/mine"])
    assert resolved.out == tmp_path / "home" / "mine"


def test_one_trajectory_per_batch(monkeypatch, tmp_path):
    """Every planned image is sampled once, in batches of batch_size, with the seed masks.json reports; each batch's
    trajectory restarts at step 0 (as many steps as the sampler takes), and the steps' timesteps are the sampler's.
    The suite's sampler settings apply."""
    import mubench.sampler as sampler_module

    sampled = []
    real_sample = sampler_module.sample_images

    def spy(bundle, prepared, prompts, seeds, cfg, **kw):
        sampled.append((list(prompts), list(seeds)))
        return real_sample(bundle, prepared, prompts, seeds, cfg, **kw)

    monkeypatch.setattr(sampler_module, "sample_images", spy)
    monkeypatch.chdir(tmp_path)
    steps, batch_size = 2, 3  # toy: 2 prompts x 2 images = batches of 3 and 1
    report = record_masks(["method=maskunet-free", "model=tiny-sd", "suite=toy", "limit=2", "weights=random",
                           "device=cpu", f"batch_size={batch_size}", f"cache={tmp_path}", "method.late_updates=1",
                           f"method.sampler.steps={steps}", "method.rewards=[{scorer: micro-clip, weight: 5.0}]",
                           "suite.sampler.guidance=2.0"])
    out = tmp_path / "masks-maskunet-free-tiny-sd"
    assert json.loads((out / "masks.json").read_text())["seeds"] == report["seeds"]
    assert (report["method"], report["model"], report["suite"]) == ("maskunet-free", "tiny-sd", "toy")
    assert report["sampler"]["guidance"] == 2.0  # the suite's sampler setting, under the method's own
    n = report["n_images"]
    assert [len(prompts) for prompts, _ in sampled] == [min(batch_size, n - i) for i in range(0, n, batch_size)]
    assert [s for _, seeds in sampled for s in seeds] == report["seeds"]
    assert len(report["seeds"]) == n > batch_size and len(set(report["seeds"])) == n
    assert [s["step"] for s in report["steps"]] == list(range(steps))
    scheduler = sampler_module.make_scheduler(report["sampler"]["scheduler"], SD_SCHEDULER_CONFIG)  # tiny-sd's
    scheduler.set_timesteps(steps)
    assert [s["timestep"] for s in report["steps"]] == [int(t) for t in scheduler.timesteps]


REPORT = {"method": "maskunet", "model": "tiny-sd", "n_images": 2, "mask_ratio": 0.25,
          "layers": [{"name": "a"}, {"name": "b"}],
          "steps": [{"step": 0, "timestep": 900, "mask_ratio": 0.5}, {"step": 1, "timestep": 500, "mask_ratio": 0.125}],
          "files": {"json": "/o/masks.json", "per_layer": "/o/l.png", "per_timestep": "/o/t.png"}}


def _invoke(monkeypatch, args):
    calls = []
    result = invoke_faked(monkeypatch, "masks", args, "mubench.commands.masks.record_masks",
                          lambda a, show_progress=False: calls.append(list(a)) or json.loads(json.dumps(REPORT)))
    assert result.exit_code == 0, result.output
    return result.stdout, calls


def test_cli_json_and_text(monkeypatch):
    """--json prints the report (with its files) and nothing else; the text form gives the overall ratio in percent,
    one line per step and every written file. Every KEY=VALUE reaches record_masks."""
    out, calls = _invoke(monkeypatch, ["method=maskunet", "model=tiny-sd", "--json"])
    assert json.loads(out) == REPORT and calls == [["method=maskunet", "model=tiny-sd"]]
    out, calls = _invoke(monkeypatch, ["method=maskunet", "model=tiny-sd"])
    assert calls == [["method=maskunet", "model=tiny-sd"]]
    lines = out.splitlines()
    assert f"{100 * REPORT['mask_ratio']:.2f}% of {len(REPORT['layers'])} layers" in lines[0]
    for step in REPORT["steps"]:
        assert any(f"t={step['timestep']}" in ln and f"{100 * step['mask_ratio']:.2f}%" in ln for ln in lines)
    for key, path in REPORT["files"].items():
        assert f"{key}: {path}" in lines
