"""`mubench train`: what the command hands to the training (model, context, recipe, data=), how it reports an
artifact that exists or a training that resumed, and its CLI output, with the training itself faked out."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from cli_fakes import invoke_faked
from mubench.commands.train import train_from_args
from mubench.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_training(monkeypatch):
    """Replace ``train_artifact`` with a recorder: each call's (method, bundle, ctx, fresh), and its outcome."""
    calls = []
    outcome = {"resumed_from": None, "sha256": "f" * 64, "final_loss": 0.25, "wall_s": 1.5}

    def fake(method, bundle, ctx, *, fresh=False, stop_at=None):
        calls.append(SimpleNamespace(method=method, bundle=bundle, ctx=ctx, fresh=fresh))
        return dict(outcome)

    monkeypatch.setattr("mubench.methods.training.train_artifact", fake)
    return SimpleNamespace(calls=calls, outcome=outcome)


def test_context_model_and_recipe_reach_the_training(fake_training, tmp_path):
    """weights=, dtype=, the model's name and its model.KEY overrides, cache= (its artifacts/ folder, where `mubench
    run` looks) and the per-model recipe all reach the training; no force: train=auto, not fresh."""
    args = ["method=lora-micro", "model=micro", "weights=random", "dtype=bfloat16", "device=cpu", f"cache={tmp_path}"]
    summary = train_from_args(args, show_progress=True)
    call = fake_training.calls[-1]
    assert call.ctx.weights == "random" and call.bundle.fingerprint.startswith("micro-random")
    assert call.ctx.dtype == torch.bfloat16 and next(call.bundle.denoiser.parameters()).dtype == torch.bfloat16
    assert call.ctx.model_name == "micro" and call.ctx.show_progress is True
    assert call.ctx.train == "auto" and call.fresh is False
    assert call.ctx.artifacts_dir == tmp_path / "artifacts"
    assert Path(summary["directory"]).parent == tmp_path / "artifacts"
    recipe = yaml.safe_load((REPO / "methods" / "lora-micro.yaml").read_text())["recipes"]["micro"]["train"]
    assert summary["recipe"] == "micro"
    assert (summary["data"], summary["steps"]) == (recipe["data"], recipe["steps"])
    assert summary["status"] == "trained" and summary["final_loss"] == fake_training.outcome["final_loss"]
    assert summary["wall_s"] == fake_training.outcome["wall_s"] and summary["sha256"] == fake_training.outcome["sha256"]

    reseeded = train_from_args(args + ["model.seed=1"], show_progress=False)  # model.KEY=VALUE: another base model
    assert fake_training.calls[-1].bundle.fingerprint != call.bundle.fingerprint
    assert reseeded["key"] != summary["key"] and fake_training.calls[-1].ctx.show_progress is False


def test_defaults_model_micro_pretrained(fake_training, tmp_path):
    """Without model= / weights= the micro model with its pretrained weights is trained on."""
    summary = train_from_args(["method=lora-micro", "device=cpu", f"cache={tmp_path}"], show_progress=False)
    call = fake_training.calls[-1]
    assert summary["model"] == "micro" and call.ctx.weights == "pretrained"
    assert call.bundle.fingerprint.startswith("micro:")


def test_force_retrains_from_scratch(fake_training, tmp_path):
    """force=true: train=force and a fresh start; force=false as typed is a boolean false."""
    base = ["method=lora-micro", "model=tiny-sd", "data=micro", f"cache={tmp_path}"]
    train_from_args(base + ["force=true"], show_progress=False)
    assert fake_training.calls[-1].ctx.train == "force" and fake_training.calls[-1].fresh is True
    train_from_args(base + ["force=off"], show_progress=False)
    assert fake_training.calls[-1].ctx.train == "auto" and fake_training.calls[-1].fresh is False


def test_data_shortcut(fake_training, tmp_path):
    """data=X is method.train.data=X (the training and the summary see it); it conflicts with a non-mapping
    method.train=; without it the spec's data stays."""
    summary = train_from_args(["method=lora-micro", "model=tiny-sd", "data=micro", f"cache={tmp_path}"],
                              show_progress=False)
    assert summary["data"] == "micro" and fake_training.calls[-1].method.recipe().data == "micro"
    plain = train_from_args(["method=lora-micro", "model=tiny-sd", f"cache={tmp_path}"], show_progress=False)
    spec = yaml.safe_load((REPO / "methods" / "lora-micro.yaml").read_text())
    assert plain["data"] == spec.get("train", {}).get("data") and plain["key"] != summary["key"]
    with pytest.raises(UsageError, match="data= conflicts with method.train="):
        train_from_args(["method=lora-micro", "model=tiny-sd", "data=micro", "method.train=3"], show_progress=False)


def test_bad_weights_value_is_refused(fake_training):
    """weights= other than pretrained / random is a usage error, before any training."""
    with pytest.raises(UsageError, match="weights"):
        train_from_args(["method=lora-micro", "model=tiny-sd", "weights=fake"], show_progress=False)
    assert fake_training.calls == []


def test_resumed_training_is_reported(fake_training, tmp_path):
    """A training that went on from a checkpoint says so in its status."""
    fake_training.outcome["resumed_from"] = 2
    summary = train_from_args(["method=lora-micro", "model=tiny-sd", "data=micro", f"cache={tmp_path}"],
                              show_progress=False)
    assert summary["status"] == "resumed from 2"


def test_existing_artifact_is_reported_from_its_meta(fake_training, tmp_path):
    """An artifact already there is not retrained: its sha256, final loss and wall time come from its meta.json."""
    args = ["method=lora-micro", "model=tiny-sd", "data=micro", f"cache={tmp_path}"]
    first = train_from_args(args, show_progress=False)
    directory = Path(first["directory"])
    directory.mkdir(parents=True)
    (directory / "weights.safetensors").write_bytes(b"x")
    meta = {"weights_sha256": "a" * 64, "final_loss": 0.125, "wall_s": 7.5}
    (directory / "meta.json").write_text(json.dumps(meta))
    again = train_from_args(args, show_progress=False)
    assert len(fake_training.calls) == 1
    assert again["status"] == "exists"
    assert (again["sha256"], again["final_loss"], again["wall_s"]) == (meta["weights_sha256"], meta["final_loss"],
                                                                       meta["wall_s"])


def _invoke(monkeypatch, args):
    """Run `mubench train ARGS` in-process with train_from_args faked; returns (result, its calls, the summary)."""
    calls = []
    summary = {"method": "m", "model": "x", "status": "trained", "recipe": "spec", "data": "d", "steps": 3,
               "final_loss": 0.5, "wall_s": 2.0, "sha256": "c" * 64, "directory": "/some/where"}

    def fake(args, show_progress=True):
        calls.append((list(args), show_progress))
        return dict(summary)

    result = invoke_faked(monkeypatch, "train", args, "mubench.commands.train.train_from_args", fake)
    return result, calls, summary


def test_cli_json_and_table(monkeypatch):
    """--json prints the summary as JSON and nothing else; otherwise a table of its fields. Every KEY=VALUE reaches
    train_from_args."""
    result, calls, summary = _invoke(monkeypatch, ["method=m", "model=x", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == summary and calls[0][0] == ["method=m", "model=x"]
    result, calls, summary = _invoke(monkeypatch, ["method=m", "model=x"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line.split()[3] for line in result.stdout.splitlines() if line.count("│") == 3}
    assert rows["status"] == "trained" and rows["directory"] == summary["directory"]


def test_cli_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    """The progress bar is drawn on a terminal only, never with --json or --no-progress."""
    import sys

    from mubench.commands.train import train_command

    class Terminal:
        def __init__(self, stream, tty=True):
            self.stream, self.tty = stream, tty

        def isatty(self):
            return self.tty

        def __getattr__(self, name):
            return getattr(self.stream, name)

    seen = []
    monkeypatch.setattr("mubench.commands.train.train_from_args",
                        lambda args, show_progress=True: seen.append(show_progress) or {"method": "m", "model": "x"})
    stderr = sys.stderr
    ctx = SimpleNamespace(args=["method=m"])
    for tty, as_json, no_progress in ((True, False, False), (True, True, False), (True, False, True),
                                      (False, False, False)):
        monkeypatch.setattr(sys, "stderr", Terminal(stderr, tty))
        train_command(ctx, as_json=as_json, no_progress=no_progress)
    assert seen == [True, False, False, False]
