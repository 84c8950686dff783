"""Calibration on the real micro world (64-prompt runs, what `mubench compare` is for):

- A/A (null control): `sd` at seed 0 against `sd` at seed 1 shows no significant metric;
- negative control: `random-mask` (ratio 0.5) against `sd` is significantly worse on fid and clip;
- `mubench report baseline=sd` marks `random-mask` ▼ on clip and bolds only what is significant.
"""
from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

LIMIT = "limit=64"
STEPS = "suite.sampler.steps=10"  # half the default 20: the controls hold, at half the CPU


@pytest.fixture(scope="module")
def micro_store(tmp_path_factory):
    home = tmp_path_factory.mktemp("controls")
    env = {"MUBENCH_HOME": str(home)}
    # seed 1 first: the newest `sd` run (what `compare sd ...` picks) is then the one at seed 0
    for args in (("method=sd", "seed=1"), ("method=sd", "seed=0"), ("method=random-mask", "seed=0")):
        proc = run_cli("run", "suite=micro", LIMIT, STEPS, *args, "--no-progress", env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return env


def _compare(env, a: str, b: str, *extra: str) -> dict:
    proc = run_cli("compare", a, b, "suite=micro", "--json", *extra, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_sd_against_sd_at_another_seed_shows_no_significant_metric(micro_store):
    proc = run_cli("runs", "--json", env=micro_store)
    sd_runs = [r for r in json.loads(proc.stdout) if r["method"] == "sd"]
    assert len(sd_runs) == 2
    res = _compare(micro_store, sd_runs[0]["run_id"], sd_runs[1]["run_id"])
    assert res["shared_noise"] is False and res["units"] >= 26
    significant = [m["metric"] for m in res["metrics"] if m["significant"]]
    assert significant == [], res["metrics"]
    assert {m["metric"] for m in res["metrics"]} >= {"fid", "clip", "overall"}


def test_random_mask_is_significantly_worse_than_sd_on_fid_and_clip(micro_store):
    res = _compare(micro_store, "sd", "random-mask")
    by = {m["metric"]: m for m in res["metrics"]}
    for metric in ("fid", "clip"):
        assert by[metric]["significant"] and by[metric]["better"] == "a", by[metric]
    assert by["fid"]["delta"] > 0 and by["clip"]["delta"] < 0
    assert res["shared_noise"] is True and res["a"]["seeds"] == 0 and res["dropped"] == 0


def test_report_marks_random_mask_down_on_clip_and_bolds_only_significant_cells(micro_store):
    proc = run_cli("report", "suite=micro", "baseline=sd", "methods=sd,random-mask", "--json", env=micro_store)
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)
    rm = next(r for r in table["rows"] if r["method"] == "random-mask")
    clip = [j for j, c in enumerate(table["columns"]) if c["metric"] == "clip" and rm["cells"][j] is not None]
    assert len(clip) == 1 and rm["cells"][clip[0]]["mark"] == "▼"  # the seed-0 column (seed 1's is apart)
    assert table["bold_rule"] == "significant"
    for row in table["rows"]:
        for c, cell in zip(table["columns"], row["cells"]):
            if cell and cell["bold"]:  # a bold cell must be a significant winner: here only sd on clip can be
                assert row["method"] == "sd" and c["metric"] in ("clip",), (row["method"], c["metric"])


# ---- the fine-tuning domain (micro-art): positive and negative controls ---------------------------------------

@pytest.fixture(scope="module")
def art_store(tmp_path_factory):
    """`sd`, `full-ft` (its micro recipe: 400 steps on micro-art, trained on demand) and `random-mask` on micro-art."""
    home = tmp_path_factory.mktemp("art-controls")
    env = {"MUBENCH_HOME": str(home)}
    for method in ("sd", "full-ft", "random-mask"):
        # full-ft trains first (a few minutes on a quiet 2-core CPU): room for a loaded machine, not a 600-s cut
        proc = run_cli("run", "suite=micro-art", LIMIT, STEPS, f"method={method}", "--no-progress", env=env,
                       timeout=1800)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return env


def test_full_ft_on_micro_art_is_significantly_better_than_sd_on_art_fid(art_store):
    """Positive control: a method that fine-tunes on the domain must win on it (else the domain or recipe is wrong)."""
    proc = run_cli("compare", "sd", "full-ft", "suite=micro-art", "--json", env=art_store)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by = {m["metric"]: m for m in json.loads(proc.stdout)["metrics"]}
    assert by["fid"]["significant"] and by["fid"]["better"] == "b" and by["fid"]["p_holm"] < 0.01, by["fid"]


def test_random_mask_is_worse_than_sd_on_micro_art(art_store):
    """Negative control on the target domain. At this CI size (26 coco prompts) sd is itself far from the art
    references (fid ~250 in base micro-CLIP space), so the random mask's further fid loss (~+15) is not significant
    here; clip is. docs/micro-world.md gives the measured numbers."""
    proc = run_cli("compare", "sd", "random-mask", "suite=micro-art", "--json", env=art_store)
    assert proc.returncode == 0, proc.stderr[-2000:]
    by = {m["metric"]: m for m in json.loads(proc.stdout)["metrics"]}
    assert by["clip"]["significant"] and by["clip"]["better"] == "a", by["clip"]
    assert by["fid"]["delta"] > 0, by["fid"]
