"""``mubench inspect``: SD 1.5's masked layer set and parameter counts, from its config, without its weights."""
from __future__ import annotations

import json

import pytest

from mubench.commands.inspect import inspect_method
from mubench.errors import UsageError


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
