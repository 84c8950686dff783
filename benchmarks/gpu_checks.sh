#!/usr/bin/env bash
# Every check that needs a GPU, in one run (for a session lent one: the device tool's `run`, about 10 minutes on one
# H100 / H200). Writes its JSON lines and logs under ${OUT:-build/gpu-checks}; each step goes on if one before failed.
#   1. the compiled fused mask kernel against its PyTorch reference (tests/test_fused_masks.py -k cuda; issue 16)
#   2. generation throughput on SD 1.5's layout: harness vs bare diffusers loop vs chunk=1 (issue 13, target >= 0.90)
#   3. SD 1.5 efficiency: maskunet (torch path and fused), lora merged / unmerged, maskunet-free (issue 16 targets)
#   4. compile=default / reduce-overhead (CUDA graphs) against eager for SD 1.5's base denoiser (issue 16 item 4)
# The machine needs the project's Python packages (torch with CUDA, diffusers, transformers, peft, open_clip, triton).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu-checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.txt" 2>&1
"$py" -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)" >>"$out/device.txt" 2>&1

TRITON_INTERPRET=0 timeout 300 "$py" -m pytest -q tests/test_fused_masks.py -k cuda -p no:cacheprovider \
    >"$out/kernel_tests.log" 2>&1
echo "kernel tests: exit $?" | tee -a "$out/summary.txt"

timeout 600 "$py" benchmarks/generation_throughput.py --model sd15 --weights random --suite toy --device cuda \
    --dtype float16 --images 32 --rounds 3 --chunks 8,16,32 >"$out/generation_throughput.log" 2>&1
echo "generation throughput: exit $?" | tee -a "$out/summary.txt"
tail -1 "$out/generation_throughput.log" >"$out/generation_throughput.json"

timeout 900 "$py" benchmarks/efficiency_sd15.py --repeats 5 --warmup 1 >"$out/efficiency_sd15.log" 2>&1
echo "efficiency_sd15: exit $?" | tee -a "$out/summary.txt"
tail -1 "$out/efficiency_sd15.log" >"$out/efficiency_sd15.json"

timeout 600 "$py" benchmarks/compile_denoiser.py --model sd15 --weights random --suite toy --device cuda \
    --dtype float16 --methods sd --modes default,reduce-overhead --images 8 --rounds 3 >"$out/compile_denoiser.log" 2>&1
echo "compile_denoiser: exit $?" | tee -a "$out/summary.txt"
tail -1 "$out/compile_denoiser.log" >"$out/compile_denoiser.json"
