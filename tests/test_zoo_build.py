"""``mubench zoo build micro``: a resumed build keeps to the recipe of its checkpoints, micro-CLIP's cache is keyed
by its own recipe, and the default recipe is the shipped zoo's (tiny builds: a few steps of batch 2)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import REPO
from mubench.errors import UsageError
from mubench.micro.zoo import BuildParams
from zoo_builds import build


def test_a_resumed_build_keeps_to_the_recipe_of_its_checkpoints(tmp_path):
    first = build(tmp_path)
    resumed = build(tmp_path, steps=3, max_train_minutes=60)  # steps and the time box may change: a resume
    assert resumed["recipe"]["steps_done"] == 3 and first["recipe"]["steps_done"] == 2
    for change in ({"lr": 2e-3}, {"seed": 1}, {"p_uncond": 0.2}, {"mix": {"single": 1.0}}, {"threads": 2}):
        with pytest.raises(UsageError, match="another recipe") as err:
            build(tmp_path, steps=4, **change)
        assert "rm -r" in str(err.value) and next(iter(change)) in str(err.value)
    with pytest.raises(UsageError, match="past this run's steps=2"):  # a checkpoint past steps is not the build
        build(tmp_path, steps=2)
    (tmp_path / ".build" / "recipe.json").unlink()  # checkpoints without a record (an older mubench)
    with pytest.raises(UsageError, match="no readable record"):
        build(tmp_path, steps=3)


def test_a_build_runs_at_its_thread_count_and_gives_the_callers_back(tmp_path):
    torch.set_num_threads(2)  # the caller's (conftest restores the suite's after the test)
    build(tmp_path)  # the recipe's threads=1
    assert "threads=1" in (tmp_path / "build.log").read_text()
    assert torch.get_num_threads() == 2
    with pytest.raises(UsageError, match="another recipe"):  # fails after the build set its own
        build(tmp_path, steps=3, lr=2e-3)
    assert torch.get_num_threads() == 2


def test_micro_clip_cache_is_keyed_by_what_decides_it(tmp_path):
    sha = {}
    for clip_steps in (2, 3, 2):
        manifest = build(tmp_path, clip_steps=clip_steps)
        sha.setdefault(clip_steps, set()).add(manifest["files"]["micro-clip.safetensors"]["sha256"])
    assert len(sha[2]) == 1 and sha[2] != sha[3]  # retrained for 3 steps, the 2-step one reused after
    log = (tmp_path / "build.log").read_text()
    assert log.count("micro-CLIP: training") == 2 and log.count("micro-CLIP: reusing") == 1


def test_the_default_recipe_is_the_shipped_zoos():
    shipped = json.loads((REPO / "zoo" / "micro" / "manifest.json").read_text())["recipe"]
    default = BuildParams().__dict__
    decides = [k for k in default if k not in ("max_train_minutes", "checkpoint_every", "log_every")]
    assert {k: default[k] for k in decides} == {k: shipped[k] for k in decides}
    assert shipped["steps_done"] == default["steps"]


def test_a_resumed_micro_dit_build_keeps_to_its_recipe(tmp_path):
    from mubench.micro.dit import DiTBuildParams, build_micro_dit

    def dit(**over):
        p = DiTBuildParams(**{"batch_size": 2, "steps": 1, "checkpoint_every": 1, "width": 32, "heads": 2,
                              "layers": 1, **over})
        return build_micro_dit(tmp_path, p, show_progress=False, echo=False, evaluate=False)

    torch.set_num_threads(2)
    dit()
    assert torch.get_num_threads() == 2  # the build ran at its threads=1 and gave the caller's back
    dit(steps=2)  # more steps: a resume
    for change in ({"p_uncond": 0.2}, {"data_seed": 1}, {"min_snr_gamma": None}):
        with pytest.raises(UsageError, match="another recipe"):
            dit(steps=3, **change)


def test_stage_times_records_each_stage_rounded_and_the_total(monkeypatch):
    import time
    from types import SimpleNamespace

    from mubench.micro import build_common

    clock = iter([100.0, 101.0, 103.46, 104.0, 104.04, 110.06])
    monkeypatch.setattr(build_common, "time", SimpleNamespace(time=lambda: next(clock), strftime=time.strftime,
                                                              gmtime=time.gmtime))
    times = build_common.StageTimes()  # starts at 100.0
    with times.stage("train_s"):
        pass
    with times.stage("eval_s"):
        pass
    assert times.seconds == {"train_s": 2.5, "eval_s": 0.0}
    assert times.finish() == {"train_s": 2.5, "eval_s": 0.0, "total_s": 10.1}
