"""Bad input is told before the heavy libraries load: each command checks its keys and paths without importing torch or
diffusers (together some seconds), so a typo costs a fraction of a second, not a model-loading start."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = """
import json, sys
from mubench.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": [m for m in ("torch", "diffusers", "transformers") if m in sys.modules]}))
"""


@pytest.mark.parametrize("args, says", [
    (["run", "batch_sise=2"], "did you mean 'batch_size'"),
    (["run", "seeds=0,1", "limit=-1"], "limit=-1"),
    (["train", "method=lora-micro", "stepz=3"], "unknown key 'stepz'"),
    (["score", "images=.", "bogus=1"], "unknown key 'bogus'"),
    (["masks", "bogus=1"], "unknown key 'bogus'"),
    (["inspect", "method=lora", "bogus=1"], "unknown key 'bogus'"),
    # a component's keys and values: the built-in models' and methods' Params are torch-free
    (["run", "method=random-mask", "method.ratio=abc"], "bad value for method.ratio"),
    (["run", "method=maskunet", "method.kernel=cuda"], "kernel must be one of torch, triton"),
    (["run", "model=sd15", "model.bogus=1"], "unknown key 'model.bogus'"),
    (["masks", "model=dit", "model.arch=big"], "arch must be one of xl, tiny"),
    (["train", "method=lora-micro", "method.r=abc"], "bad value for method.r"),
    (["train", "method=sd"], "method 'sd' (kind sd) has nothing to train"),
    # the paths a command writes, and the folder or file it reads, are checked as soon as they are parsed
    (["run", "method=maskunet", "out=/proc/x"], "out=/proc/x: cannot write"),
    (["run", "seeds=0,1", "store=/proc/a/s.sqlite"], "store=/proc/a/s.sqlite: cannot write"),
    (["score", "suite=micro", "images=/proc/no-such-folder"], "images=/proc/no-such-folder: no such folder"),
    (["score", "suite=geneval", "results=/proc/no-such-file"], "results=/proc/no-such-file: no such file"),
    (["score", "suite=micro", "images=.", "cache=/proc/c"], "cache=/proc/c: cannot write"),
    (["masks", "out=/proc/x"], "out=/proc/x: cannot write"),
    (["zoo", "build", "micro", "--out", "/proc/x"], "--out=/proc/x: cannot write"),
])
def test_bad_input_is_told_before_torch_loads(args, says):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 2 and says in done.stderr
    assert report["loaded"] == []


QUIET = """
import json, logging, os, sys
os.environ["DIFFUSERS_VERBOSITY"] = "info"  # the user's choice
os.environ.pop("TRANSFORMERS_VERBOSITY", None)
import transformers  # already loaded before the command quiets the libraries
logging.getLogger("transformers").setLevel(logging.INFO)
from mubench.quiet import quiet_libraries
quiet_libraries()
loaded = "diffusers" in sys.modules
import diffusers
print(json.dumps({"diffusers_loaded": loaded, "diffusers": logging.getLogger("diffusers").getEffectiveLevel(),
                  "transformers": logging.getLogger("transformers").getEffectiveLevel()}))
"""


def test_quieting_the_libraries_loads_neither_and_keeps_a_users_verbosity():
    done = subprocess.run([sys.executable, "-c", QUIET], capture_output=True, text=True, cwd=REPO, timeout=120)
    levels = json.loads(done.stdout.strip().splitlines()[-1])
    assert levels == {"diffusers_loaded": False, "diffusers": 20, "transformers": 40}  # INFO as asked; ERROR
