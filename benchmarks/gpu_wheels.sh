#!/usr/bin/env bash
# Download, here (where pip reaches the registry), the wheels the lent GPU machine lacks for benchmarks/gpu_checks.sh:
# its image has torch, triton, transformers, peft, accelerate, pandas, typer, rich... but not these (the device
# tool's KINDS.md lists what it has). They go to .whl/ (git-ignored locally through .git/info/exclude); a device call
# names `.whl` in `carry`, and gpu_checks.sh installs them into /tmp/site before its steps. All are pure Python.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mkdir -p .whl
py="${PYTHON:-python3}"
# the pins of requirements-ci.txt, and what they need that the image lacks
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    diffusers==0.42.1 omegaconf==2.4.0 platformdirs==4.14.5 open_clip_torch==3.3.0 ftfy wcwidth importlib_metadata
# omegaconf's parser runtime is published as a source archive only: build its (pure-Python) wheel here
"$py" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==4.9.3"
ls -la .whl
du -sh .whl
