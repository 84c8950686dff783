#!/usr/bin/env bash
# Every check that needs a GPU (for a session lent one: the device tool's `run`). Writes JSON lines and logs under
# ${OUT:-build/gpu-checks}; each step goes on if one before failed. `bash benchmarks/gpu_checks.sh [STEP ...]` runs
# the steps named (default: all; a device call is limited to 10 minutes, so split them over calls: 1 2 4 7 | 3 | 5 | 6).
# A task now gets 15 minutes of device time in all, machine start included: run `1 0` first (issue 16's done-when,
# ~6 min), then `7 4`, then `6`; 3 and 5 are the full tables, for a session with more time.
#   0. issue 16's done-when only, in one run at batch 1: maskunet fused, lora merged, maskunet-free at the paper's
#      schedule, each with its paired CI against the base (no train-step figure)                     ~5 min
#   1. the compiled fused mask kernel against its PyTorch reference (tests/test_fused_masks.py -k cuda; issue 16)
#   2. generation throughput on SD 1.5's layout: harness vs bare diffusers loop vs chunk=1 (issue 13, target >= 0.90)
#   3. SD 1.5 efficiency at batch 1 (the paper's protocol): maskunet (torch path and fused), lora merged / unmerged,
#      maskunet-free (issue 16 targets: fused <= 1.15, lora <= 1.03, free <= 8)                          ~8 min
#   4. compile=default / reduce-overhead (CUDA graphs) against eager for SD 1.5's base denoiser (issue 16 item 4)
#   5. SD 1.5 efficiency at the GPU default chunk (32 images per call, 10 steps): maskunet, fused, lora
#   6. maskunet under compile=reduce-overhead, base compiled too, 20 steps: stream noise (drawn before each call),
#      counter noise with inductor's own Triton for the whole mask path (kernel: torch) and with the hand-written
#      kernel inside the graph (kernel: triton) (items 1, 4)
#   7. where the default (torch) mask path's time goes on SD 1.5, stage by stage, fp16, one CFG call
#      (benchmarks/mask_stages.py: adapter GEMMs, uniform draws, E, threshold and W * M, against the base call)
# The machine needs the project's Python packages (torch with CUDA, diffusers, transformers, peft, open_clip, triton).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu-checks}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
steps="${*:-1 0 2 3 4 5 6 7}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/device.txt" 2>&1
"$py" -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)" >>"$out/device.txt" 2>&1

bench() {  # NAME TIMEOUT COMMAND...: run, log, keep the last line (the JSON) as NAME.json
    local name=$1 limit=$2; shift 2
    timeout "$limit" "$py" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $?" | tee -a "$out/summary.txt"
    tail -1 "$out/$name.log" >"$out/$name.json"
}

for step in $steps; do
    case $step in
    0) bench efficiency_sd15_done_when 480 benchmarks/efficiency_sd15.py --repeats 5 --warmup 1 \
           --methods "maskunet-fused=maskunet:noise=counter;kernel=triton,lora,maskunet-free" \
           --extra suite.train_step=never ;;
    1) TRITON_INTERPRET=0 timeout 300 "$py" -m pytest -q tests/test_fused_masks.py -k cuda -p no:cacheprovider \
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
       fused="maskunet-fused=maskunet:noise=counter;kernel=triton"
       bench efficiency_sd15_compiled 590 benchmarks/efficiency_sd15.py --repeats 3 --warmup 1 --steps 20 \
           --methods "maskunet,$counter,$fused" \
           --extra compile=reduce-overhead suite.image_flops=false suite.train_step=never ;;
    7) bench mask_stages 200 benchmarks/mask_stages.py --model sd15 --weights random --device cuda --dtype float16 \
           --repeats 10 ;;
    *) echo "unknown step $step (0-7)" | tee -a "$out/summary.txt" ;;
    esac
done
