"""Supp. Table 3 on SD 1.5's UNet layout at reduced width (``model=sd15-reduced``: 64/128/256/256, 256 px, random
weights), one JSON line.

    .venv/bin/python benchmarks/efficiency_sdred.py [--methods maskunet] [--steps 10] [--repeats 5]

A forward of this UNet takes about half a second on one CPU core, so by default the base samples 10 DDIM steps
instead of the suite's 50 (``--steps 50`` for the full protocol): the ratios are per-step costs and barely depend on
the step count (text encoder and decoder are tiny here). Target (issue 6): maskunet latency_ratio <= 1.25 (batch 1,
CFG on).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _efficiency import main, parser  # noqa: E402

TARGETS = {("maskunet", "latency_ratio"): 1.25}

if __name__ == "__main__":
    args = parser(__doc__.split("\n\n")[0], "maskunet,lora,lora-unmerged=lora:merge=false", repeats=5,
                  steps=10).parse_args()
    main("efficiency_sdred", "sd15-reduced", args, TARGETS)
