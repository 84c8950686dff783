"""``mubench inspect``: SD 1.5's masked layer set and parameter counts, from its config, without its weights; its
defaults, the device the model is built on, overrides and per-model recipes reaching the model and the method, the
parameter counts' fields, and the text the command prints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_fakes import invoke_faked
from mubench.commands.inspect import inspect_method
from mubench.errors import UsageError

REPO = Path(__file__).resolve().parent.parent


def test_maskunet_on_sd15_architecture():
    report = inspect_method(["method=maskunet", "model=sd15", "weights=random"])
    assert report["masked_layers"] == 72
    assert report["masked_weights"] == 49_029_120
    assert report["added_params"] == report["trainable_params"] == 67_798_336
    assert report["base_params"] == 859_520_964
    names = [layer["name"] for layer in report["layers"]]
    assert len(names) == 72 and all(n.startswith(("up_blocks.1.", "up_blocks.2.", "up_blocks.3.")) for n in names)
    assert report["info"]["mode"] == "conditional" and report["info"]["generators"] == 3


def test_layer_list_is_q_k_v_o_of_self_and_cross_attention():
    report = inspect_method(["method=random-mask", "model=sd15", "weights=random"])
    assert report["masked_layers"] == 72 and report["masked_weights"] == 49_029_120
    assert report["added_params"] == 0 and report["trainable_params"] == 0
    tails = {}
    for layer in report["layers"]:
        attn, proj = layer["name"].split(".transformer_blocks.0.")[1].split(".", 1)
        tails[(attn, proj)] = tails.get((attn, proj), 0) + 1
    assert tails == {(a, p): 9 for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")}


def test_other_layer_sets_and_lora_on_sd15():
    conv = inspect_method(["method=maskunet", "method.layers=decoder-attn+conv", "model=sd15", "weights=random"])
    assert conv["masked_layers"] == 99
    lora = inspect_method(["method=lora", "model=sd15", "weights=random"])
    assert lora["masked_layers"] == 0
    assert lora["added_params"] == lora["trainable_params"] == 51_019_776  # method.md §5: ~51.02M
    assert len(lora["layers"]) == 128  # 16 transformer blocks x 2 attentions x 4 projections
    sd = inspect_method(["method=sd", "model=sd15", "weights=random"])
    assert (sd["masked_layers"], sd["added_params"], sd["trainable_params"]) == (0, 0, 0)


def test_bad_keys_are_usage_errors():
    with pytest.raises(UsageError, match="unknown key"):
        inspect_method(["method=maskunet", "model=sd15", "weigths=random"])
    with pytest.raises(UsageError, match="weights"):
        inspect_method(["method=maskunet", "model=sd15", "weights=fake"])
    with pytest.raises(UsageError):
        inspect_method(["method=maskunet", "method.mode=magic", "model=sd15", "weights=random"])
    import torch

    if not torch.cuda.is_available():  # as run and train say it, not an "unexpected RuntimeError"
        with pytest.raises(UsageError, match="no CUDA device is available"):
            inspect_method(["method=maskunet", "model=tiny-sd", "weights=random", "device=cuda"])


def test_cli_json(cli):
    proc = cli("inspect", "method=maskunet-faithful", "model=sd15", "weights=random", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["masked_layers"], report["masked_weights"], report["added_params"]) == (72, 49_029_120, 67_798_336)
    assert report["info"]["mode"] == "faithful"
    bad = cli("inspect", "method=maskunet", "model=sd15", "weights=random", "method.factr=4")
    assert bad.returncode == 2 and "factor" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def load_contexts(monkeypatch):
    """Every LoadContext inspect builds (the device, dtype and weights the model is loaded with)."""
    from mubench.models import base

    seen = []
    real = base.LoadContext

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(base, "LoadContext", spy)
    return seen


def test_defaults_are_sd_on_micro_with_its_weights(load_contexts):
    """No keys: method sd on the micro model with its pretrained weights, on the CPU."""
    report = inspect_method([])
    assert (report["method"], report["model"], report["weights"]) == ("sd", "micro", "pretrained")
    assert load_contexts[-1].weights == "pretrained" and load_contexts[-1].device == torch.device("cpu")


def test_device_auto_is_meta_for_random_weights_only(load_contexts):
    """device=auto builds random weights on the meta device (nothing allocated) and pretrained ones on the CPU; an
    explicit device= is kept."""
    inspect_method(["model=tiny-sd", "weights=random"])
    assert load_contexts[-1].device.type == "meta" and load_contexts[-1].weights == "random"
    inspect_method(["model=tiny-sd", "weights=pretrained"])
    assert load_contexts[-1].device.type == "cpu"
    inspect_method(["model=tiny-sd", "weights=random", "device=cpu"])
    assert load_contexts[-1].device.type == "cpu"


def test_model_overrides_reach_the_model():
    """model.KEY=VALUE builds another model (a wider cross-attention: more base parameters)."""
    plain = inspect_method(["model=tiny-sd", "weights=random"])
    wide = inspect_method(["model=tiny-sd", "weights=random", "model.cross_attention_dim=64"])
    assert wide["base_params"] > plain["base_params"]


def test_the_models_recipe_applies():
    """A method's recipes.<model> entry applies for that model (lora's micro recipe sets its rank)."""
    spec = yaml.safe_load((REPO / "methods" / "lora.yaml").read_text())
    recipe = spec["recipes"]["micro"]
    assert recipe["r"] != spec["r"]
    default = inspect_method(["method=lora", "model=micro"])
    with_recipe = inspect_method(["method=lora", "model=micro", f"method.r={recipe['r']}"])
    with_spec = inspect_method(["method=lora", "model=micro", f"method.r={spec['r']}"])
    assert default["added_params"] == with_recipe["added_params"] != with_spec["added_params"]


def test_added_and_trainable_params_are_kept_apart():
    """full-ft adds nothing and trains the whole denoiser; a LoRA masks no weights (its layers are not counted as
    masked ones)."""
    full = inspect_method(["method=full-ft", "model=tiny-sd", "weights=random"])
    assert full["added_params"] == 0 and full["trainable_params"] == full["base_params"] > 0
    lora = inspect_method(["method=lora", "model=tiny-sd", "weights=random"])
    assert lora["layers"] and lora["masked_layers"] == 0 and lora["masked_weights"] == 0


def test_report_names_weights_and_kind():
    """The report says which weights were used and the method's kind (a spec's kind, not its name)."""
    report = inspect_method(["method=maskunet-faithful", "model=tiny-sd", "weights=pretrained"])
    kind = yaml.safe_load((REPO / "methods" / "maskunet-faithful.yaml").read_text())["kind"]
    assert report["weights"] == "pretrained" and report["kind"] == kind != report["method"]
    assert report["model"] == "tiny-sd"


REPORT = {"method": "m", "kind": "k", "model": "x", "weights": "random", "masked_layers": 2,
          "masked_weights": 1234567, "added_params": 2345678, "trainable_params": 3456789, "base_params": 4567890,
          "info": {}, "layers": [{"name": "l.one", "kind": "linear", "shape": [3, 4], "weights": 1000012},
                                 {"name": "l.two", "kind": "conv", "shape": [5, 6, 1, 1], "weights": 1000030}]}


def _invoke(monkeypatch, args):
    calls = []
    result = invoke_faked(monkeypatch, "inspect", args, "mubench.commands.inspect.inspect_method",
                          lambda a: calls.append(list(a)) or json.loads(json.dumps(REPORT)))
    assert result.exit_code == 0, result.output
    return result.stdout, calls


def test_cli_text_tables(monkeypatch):
    """Without --json: every count with thousands separators, then one row per changed layer (name, kind, shape,
    weights). Every KEY=VALUE reaches inspect_method."""
    out, calls = _invoke(monkeypatch, ["method=m", "model=x"])
    assert calls == [["method=m", "model=x"]]
    for key in ("masked_layers", "masked_weights", "added_params", "trainable_params", "base_params"):
        assert any(key in ln and f"{REPORT[key]:,}" in ln for ln in out.splitlines()), key
    header = [ln for ln in out.splitlines() if "name" in ln and "kind" in ln]
    assert len(header) == 1 and all(col in header[0] for col in ("shape", "weights"))
    for layer in REPORT["layers"]:
        row = [ln for ln in out.splitlines() if layer["name"] in ln]
        assert len(row) == 1 and layer["kind"] in row[0] and f"{layer['weights']:,}" in row[0]
        assert "×".join(map(str, layer["shape"])) in row[0]
    out, _ = _invoke(monkeypatch, ["method=m", "model=x", "--json"])
    assert json.loads(out) == REPORT
