"""The micro world's fine-tuning study (issue 17): every method of methods/ through both micro suites, then the table.

    .venv/bin/python reports/run_micro_finetune.py [--home DIR] [--out DIR] [--methods a,b] [--threads N]

For every method that runs on ``model=micro`` (every spec in methods/ by default), one after another:
``mubench run suite=micro-art method=M seed=0`` (a trainable method trains its micro recipe on demand, on
micro-art, in this first run) and ``mubench run suite=micro method=M seed=0`` (the same artifact: what fine-tuning
cost on the base distribution). Then ``sd`` at seed 1 on micro-art (the null control's other side, and the A/A pair
of the power table; suite micro's A/A is in docs/statistics.md and tests/test_micro_controls.py) and:

- ``OUT/runs.json``: per run the wall time of the whole command and the runner's own split (prepare, which holds
  on-demand training, generate, score), the run id and folder;
- ``OUT/table.md``: ``mubench report table=micro-finetune baseline=sd results=OUT/runs`` (the seed-0 runs; marks:
  paired test against sd, Holm);
- ``OUT/compare-*.md``: the controls, ``mubench compare`` sd against full-ft and random-mask on both suites, and
  sd seed 0 against sd seed 1 (A/A) on micro-art;
- ``OUT/power-micro-art.md``: ``benchmarks/power_table.py`` on the micro-art A/A pair.

Use a fresh ``--home`` (the default: a new temp folder) so training on demand is measured as from a fresh clone.
The commands are printed as they run; nothing is hidden behind this script.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITES = ("micro-art", "micro")


def micro_methods() -> list[str]:
    """Every spec in methods/ (each runs on model=micro: the trainable ones through their micro recipe)."""
    return sorted(p.stem for p in (REPO / "methods").glob("*.yaml"))


def mubench(args: list[str], env: dict[str, str], capture: Path | None = None) -> float:
    cmd = [sys.executable, "-m", "mubench", *args]
    print("+ mubench", " ".join(args), flush=True)
    t0 = time.perf_counter()
    if capture is None:
        subprocess.run(cmd, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL)
    else:
        capture.write_text(subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True,
                                          text=True).stdout)
    return time.perf_counter() - t0


def run_one(suite: str, method: str, seed: int, out: Path, env: dict[str, str]) -> dict:
    # the table reads results=OUT/runs (one run per method and suite); the A/A pair's other seed goes elsewhere
    folder = out / ("runs" if seed == 0 else "aa") / f"{suite}-{method}-s{seed}"
    wall = mubench(["run", f"suite={suite}", f"method={method}", f"seed={seed}", f"out={folder}", "--no-progress"],
                   env)
    results = json.loads((folder / "results.json").read_text())
    timing = {k: round(v, 1) for k, v in (results.get("timing") or {}).items()}
    row = {"suite": suite, "method": method, "seed": seed, "run_id": results["run_id"], "folder": str(folder),
           "wall_s": round(wall, 1), "timing": timing}
    print(f"  {suite} {method} seed {seed}: {wall:.0f} s {timing}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, default=None, help="MUBENCH_HOME for the study (default: a new temp folder)")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "micro-finetune")
    ap.add_argument("--methods", default=None, help="comma-separated spec names (default: every spec in methods/)")
    ap.add_argument("--threads", type=int, default=None, help="OMP/torch threads (default: torch's)")
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="mubench-finetune-"))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MUBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    methods = args.methods.split(",") if args.methods else micro_methods()
    if "sd" in methods:  # the reference side first
        methods = ["sd", *[m for m in methods if m != "sd"]]
    log = out / "runs.json"
    rows: list[dict] = json.loads(log.read_text()) if log.exists() else []
    done = {(r["suite"], r["method"], r["seed"]) for r in rows}
    plan = [(s, m, 0) for m in methods for s in SUITES] + [("micro-art", "sd", 1)]
    for suite, method, seed in plan:
        if (suite, method, seed) in done:
            continue
        rows.append(run_one(suite, method, seed, out, env))
        log.write_text(json.dumps(rows, indent=1))  # after every run: an interrupted study resumes
    store = ["store=" + str(home / "store.sqlite")]
    mubench(["report", "table=micro-finetune", "baseline=sd", f"results={out / 'runs'}"], env, out / "table.md")
    ids = {(r["suite"], r["method"], r["seed"]): r["run_id"] for r in rows}
    for suite in SUITES:
        for other in ("full-ft", "random-mask"):
            if (suite, other, 0) in ids:
                mubench(["compare", ids[(suite, "sd", 0)], ids[(suite, other, 0)], *store], env,
                        out / f"compare-{suite}-sd-{other}.md")
        if (suite, "sd", 1) in ids:
            mubench(["compare", ids[(suite, "sd", 0)], ids[(suite, "sd", 1)], *store], env,
                    out / f"compare-{suite}-sd-sd-seed1.md")
    power = subprocess.run([sys.executable, "benchmarks/power_table.py", "--store", str(home / "store.sqlite"),
                            "--suite", "micro-art", "--ns", "64,128,256,280,512"], cwd=REPO, env=env, check=True,
                           capture_output=True, text=True).stdout
    (out / "power-micro-art.md").write_text(power)
    print(f"wrote {out}/runs.json, table.md, compare-*.md, power-micro-art.md (MUBENCH_HOME {home})")


if __name__ == "__main__":
    main()
