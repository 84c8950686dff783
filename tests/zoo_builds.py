"""Tiny micro-zoo builds for tests (test_zoo_build.py, test_zoo_records.py): a few steps of batch 2, no evaluation."""
from __future__ import annotations

from mubench.micro.zoo import BuildParams, build_micro

TINY = {"batch_size": 2, "steps": 2, "clip_steps": 2, "checkpoint_every": 1}


def build(out, **over):
    """``build_micro`` into ``out`` with the tiny recipe, ``over`` on top; returns the manifest."""
    return build_micro(out, BuildParams(**{**TINY, **over}), show_progress=False, echo=False, evaluate=False)
