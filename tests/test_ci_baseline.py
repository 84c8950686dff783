"""The committed CI baseline (reports/baselines/micro-sd.json) is usable, states how its tolerances were chosen, and
matches the run that `make check-baseline` (the last step of .ci/run) makes."""
from __future__ import annotations

import json
import re

from conftest import REPO

from mubench.check import load_baseline, parse_tolerance

BASELINE = REPO / "reports" / "baselines" / "micro-sd.json"
MICRO_METRICS = {"fid", "clip", "color", "shape", "texture", "single_object", "two_object", "counting", "colors",
                 "position", "color_attr", "overall"}


def _make_target() -> str:
    text = (REPO / "Makefile").read_text()
    m = re.search(r"^check-baseline:.*?\n((?:\t.*\n)+)", text, flags=re.M)
    assert m, "Makefile lacks the check-baseline target"
    return m.group(1)


def test_baseline_loads_and_every_metric_has_a_measured_tolerance():
    data = load_baseline(BASELINE)
    (entry,) = data["entries"]
    assert (entry["suite"], entry["method"], entry["model"]) == ("micro", "sd", "micro")
    assert set(entry["metrics"]) == MICRO_METRICS
    basis = data["tolerance_basis"]["metrics"]
    for name in MICRO_METRICS:
        parse_tolerance(data["tolerances"][name], name)
        seeds = basis[name]["values_seeds_0_4"]
        assert len(seeds) == 5
        # the tolerance is the measured range over seeds (at least one image's worth), as the file says
        assert abs(basis[name]["tolerance"] - max(max(seeds) - min(seeds), basis[name]["floor"])) < 1e-3
        assert data["tolerances"][name] == f"abs:{basis[name]['tolerance']}"
        # seed 0 (the baseline's own run) is one of the measured seeds
        assert abs(entry["metrics"][name]["value"] - seeds[0]) < 1e-4


def test_ci_runs_the_baselines_protocol_and_checks_it():
    recipe = _make_target()
    data = json.loads(BASELINE.read_text())
    protocol = data["entries"][0]["protocol"]
    limit = int(re.search(r"limit=(\d+)", recipe).group(1))
    assert limit == protocol["n_prompts"]
    assert "seed=0" in recipe and "suite=micro" in recipe and "method=sd" in recipe
    assert "mubench check --baseline reports/baselines/micro-sd.json" in recipe
    assert "make check-baseline" in (REPO / ".ci" / "run").read_text()
