#!/usr/bin/env bash
# Every check that needs a GPU (for a session lent one: the device tool's `run`). Writes JSON lines and logs under
# ${OUT:-build/gpu-checks}; each step goes on if one before failed. `bash benchmarks/gpu_checks.sh [STEP ...]` runs
# the steps named (default: all). A device call is limited to 10 minutes and a task gets 15 minutes of device time in
# all, machine start included (1-2 min), so: first `1 0` in one call (issue 16's done-when, ~6-8 min), then `7` if
# time is left; 4 and 6 (compile, several minutes of cold inductor compiles each) and 2, 3, 5 (full tables) are for a
# session with more time.
#   0. issue 16's done-when only, in one run at batch 1: maskunet fused, lora merged, maskunet-free at the paper's
#      schedule, each with its paired CI against the base (no train-step, image-FLOPs or memory figure)  ~5 min
#   1. the compiled fused mask kernel against its PyTorch reference (tests/test_fused_masks.py -k cuda; issue 16)
#   2. generation throughput on SD 1.5's layout: harness vs bare diffusers loop vs chunk=1 (issue 13, target >= 0.90)
#   3. SD 1.5 efficiency at batch 1 (the paper's protocol): maskunet (torch path and fused), lora merged / unmerged,
#      maskunet-free (issue 16 targets: fused <= 1.15, lora <= 1.03, free <= 8)                         ~11 min
#   4. compile=default / reduce-overhead (CUDA graphs) against eager for SD 1.5's base denoiser (issue 16 item 4)
#   5. SD 1.5 efficiency at the GPU default chunk (32 images per call, 10 steps): maskunet, fused, lora
#   6. counter-noise maskunet under compile=reduce-overhead, base compiled too, 20 steps: inductor's own Triton for
#      the whole mask path (kernel: torch) against the hand-written kernel inside the graph (kernel: triton, one
#      mubench::masked_group_weights operator per group) -- issue 16 item 1's "whichever measures faster", and item 4
#   7. where the default (torch) mask path's time goes on SD 1.5, stage by stage, fp16, one CFG call
#      (benchmarks/mask_stages.py: adapter GEMMs, uniform draws, E, threshold and W * M, against the base call)
#   8. the default maskunet (stream noise, drawn before each call) under compile=reduce-overhead, as step 6
# The machine's image has torch, triton, transformers, peft and accelerate but not diffusers, omegaconf, open_clip and
# a few small ones: run `bash benchmarks/gpu_wheels.sh` here first (it downloads them into .whl/), name `.whl` in the
# device call's `carry`, and this script installs them into /tmp/site. Pass MUBENCH_GIT=$(git rev-parse HEAD) so the
# JSON names the revision (the copied tree may have no .git). A method's figures are also printed as a `partial`
# line in NAME.log as soon as they exist, so a time limit keeps what was measured before it.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu-checks}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        >"$out/wheels.log" 2>&1 || echo "wheels: install failed (see wheels.log)" | tee -a "$out/summary.txt"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export MUBENCH_HOME="${MUBENCH_HOME:-/tmp/mubench-home}"
steps="${*:-1 0 2 3 4 5 6 7 8}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.txt" 2>&1
"$py" -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)" >>"$out/device.txt" 2>&1
"$py" -c "import diffusers, transformers, peft, open_clip; print('diffusers', diffusers.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'open_clip', open_clip.__version__)" >>"$out/device.txt" 2>&1
echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ) git ${MUBENCH_GIT:-unknown}" >>"$out/device.txt"

bench() {  # NAME TIMEOUT COMMAND...: run, log, keep the last line (the JSON) as NAME.json
    local name=$1 limit=$2; shift 2
    timeout "$limit" "$py" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $?" | tee -a "$out/summary.txt"
    tail -1 "$out/$name.log" >"$out/$name.json"
}

for step in $steps; do
    case $step in
    0) bench efficiency_sd15_done_when 450 benchmarks/efficiency_sd15.py --repeats 5 --warmup 1 \
           --methods "maskunet-fused=maskunet:noise=counter;kernel=triton,lora,maskunet-free" \
           --extra suite.train_step=never suite.image_flops=false suite.memory=false ;;
    1) TRITON_INTERPRET=0 timeout 120 "$py" -m pytest -q tests/test_fused_masks.py -k "cuda or hopper" \
           -p no:cacheprovider \
           >"$out/kernel_tests.log" 2>&1
       echo "kernel tests: exit $?" | tee -a "$out/summary.txt" ;;
    2) bench generation_throughput 400 benchmarks/generation_throughput.py --model sd15 --weights random --suite toy \
           --device cuda --dtype float16 --images 32 --rounds 3 --chunks 8,16,32 ;;
    3) bench efficiency_sd15 590 benchmarks/efficiency_sd15.py --repeats 5 --warmup 1 ;;
    4) bench compile_denoiser 300 benchmarks/compile_denoiser.py --model sd15 --weights random --suite toy \
           --device cuda --dtype float16 --methods sd --modes default,reduce-overhead --images 8 --rounds 3 ;;
    5) bench efficiency_sd15_chunk 590 benchmarks/efficiency_sd15.py --images 32 --steps 10 --repeats 3 --warmup 1 \
           --methods "maskunet,maskunet-fused=maskunet:noise=counter;kernel=triton,lora" \
           --extra suite.image_flops=false suite.train_step=never ;;
    6) counter="maskunet-counter=maskunet:noise=counter"
       bench efficiency_sd15_compiled 590 benchmarks/efficiency_sd15.py --repeats 3 --warmup 1 --steps 20 \
           --methods "$counter,maskunet-fused=maskunet:noise=counter;kernel=triton" \
           --extra compile=reduce-overhead suite.image_flops=false suite.train_step=never ;;
    7) bench mask_stages 200 benchmarks/mask_stages.py --model sd15 --weights random --device cuda --dtype float16 \
           --repeats 10 ;;
    8) bench efficiency_sd15_compiled_stream 590 benchmarks/efficiency_sd15.py --repeats 3 --warmup 1 --steps 20 \
           --methods maskunet --extra compile=reduce-overhead suite.image_flops=false suite.train_step=never ;;
    *) echo "unknown step $step (0-8)" | tee -a "$out/summary.txt" ;;
    esac
done
