"""A suite spec names its default model; a run on a model its numbers are not meant for says so."""
from __future__ import annotations

import warnings

import pytest

from mubench.config import MismatchWarning, resolve, suite_models
from mubench.specs import spec_names


@pytest.mark.parametrize("suite, model", [("compbench", "sd15"), ("coco", "sd15"), ("geneval", "sd15"),
                                          ("imagenet", "dit"), ("micro", "micro"), ("micro-class", "micro-dit")])
def test_suite_names_its_default_model(regs, suite, model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MismatchWarning)
        cfg = resolve([f"suite={suite}"], regs)
    assert cfg.run.model == model == suite_models(suite)[0]


def test_every_default_model_is_registered(regs):
    for suite in spec_names("suites"):
        model, fits = suite_models(suite)
        for name in ([model] if model else []) + fits:
            assert name in regs.models.names(), (suite, name)


def test_mismatched_model_warns(regs):
    with pytest.warns(MismatchWarning, match="suite 'compbench' is meant for model sd15; model=micro"):
        cfg = resolve(["suite=compbench", "method=maskunet", "model=micro"], regs)
    assert cfg.run.model == "micro"
    with warnings.catch_warnings():
        warnings.simplefilter("error", MismatchWarning)
        resolve(["suite=coco", "model=pixart"], regs)  # a model the suite lists
        resolve(["suite=compbench", "model=micro", "weights=random"], regs)  # random weights: nothing to compare
