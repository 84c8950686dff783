"""Shared test setup: offline, few threads, a private MUBENCH_HOME, and helpers to run the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Triton kernels (mubench/kernels) are tested in Triton's interpreter on CPU tensors; it must be chosen before triton
# is first imported (diffusers and peft import it), so here (GPU timings: benchmarks/efficiency_sd15.py)
os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _private_home(tmp_path_factory, monkeypatch):
    """Every test gets its own store and cache unless it sets paths itself."""
    home = tmp_path_factory.mktemp("mubench-home")
    monkeypatch.setenv("MUBENCH_HOME", str(home))
    monkeypatch.delenv("MUBENCH_CACHE", raising=False)
    yield home


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(autouse=True)
def _restore_threads():
    """A test (or a micro-zoo build it runs, which sets its own) may change torch's thread count: the next test
    starts from the suite's."""
    import torch

    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_cli(*args: str, env: dict | None = None, timeout: float = 600,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mubench ARGS`` in a subprocess (what a user types), in ``cwd`` (default: the checkout)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "mubench", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def regs():
    """The built-in registries (no third-party plug-ins); a module may override it."""
    from mubench.registry import load_registries

    return load_registries(plugins=False)


@pytest.fixture(scope="module")
def bundle(regs):
    """The tiny random SD-style model (``tiny-sd``) on the CPU, float32."""
    import torch

    from mubench.models.base import LoadContext

    cls = regs.models.get("tiny-sd")
    return cls.load(cls.Params(), LoadContext(torch.device("cpu"), torch.float32))


@pytest.fixture(scope="module")
def two_group_bundle(regs):
    """``tiny-sd`` with a 48-wide text context: its masked block then has two weight shapes, so MaskUNet's grouped
    mask path makes two groups (its square linears, then the cross-attention k/v; the plain model makes one)."""
    import torch

    from mubench.models.base import LoadContext

    cls = regs.models.get("tiny-sd")
    return cls.load(cls.Params(cross_attention_dim=48), LoadContext(torch.device("cpu"), torch.float32))



@pytest.fixture(scope="module")
def dit(regs):
    """A tiny random DiT (class-conditional), 16 px."""
    from transformer_cases import tiny_transformer

    return tiny_transformer(regs, "dit")


@pytest.fixture(scope="module")
def pixart(regs):
    """A tiny random PixArt-α (text-conditional, 8-token prompts), 16 px."""
    from transformer_cases import tiny_transformer

    return tiny_transformer(regs, "pixart")

MICRO_REWARD = [{"scorer": "micro-clip", "weight": 5.0, "target": 1.0}]


def prepare_free(regs, bundle, early_steps: int, late_updates: int = 3, **overrides):
    """maskunet-free prepared on ``bundle`` with micro-CLIP as its reward (random weights), a short schedule."""
    from mubench.config import resolve_component
    from mubench.methods.base import MethodContext

    comp = resolve_component("method", "maskunet-free", {"rewards": MICRO_REWARD, "early_steps": early_steps,
                                                         "late_updates": late_updates, **overrides}, regs)
    method = regs.methods.get(comp.kind)(comp.params, comp.name)
    return method.prepare(bundle, MethodContext(artifacts_dir=Path("."), weights="random", show_progress=False))
