"""Supp. Table 3 on the micro model: MaskUNet (trained) and MaskUNet (training-free) against the base, one JSON line.

    .venv/bin/python benchmarks/efficiency_micro.py [--methods maskunet,maskunet-free] [--repeats 10]

Each method is one ``mubench run suite=efficiency method=M model=micro`` (in this process): the base model is
measured in the same run, interleaved with the method, so every ratio comes from side-by-side timings. Targets
(issue 6): maskunet latency_ratio <= 1.15, maskunet-free latency_ratio <= 8 — at the paper's schedule (15
first-order DPM-Solver++ steps, 7 x 1 + 8 x 10 updates), which the benchmark sets for ``maskunet-free`` unless keys
are given (``--methods "maskunet-free-micro=maskunet-free:early_steps=5"`` keeps the spec's micro recipe otherwise).
A method whose spec does not exist is reported as skipped.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _efficiency import main, parser  # noqa: E402

TARGETS = {("maskunet", "latency_ratio"): 1.15, ("maskunet-free", "latency_ratio"): 8.0}

if __name__ == "__main__":
    args = parser(__doc__.split("\n\n")[0], "maskunet,maskunet-free", repeats=10, steps=None).parse_args()
    main("efficiency_micro", "micro", args, TARGETS)
