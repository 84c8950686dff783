"""Protocols as text: the report footnote's line, the 'differs from' list and the facts a comparison refuses on."""
from __future__ import annotations

from mubench.comparison import protocol_differences
from mubench.protocols import describe_protocol, flatten, protocol_diff


def _protocol(**changes):
    p = {"suite": "micro", "sampler": {"scheduler": "ddim", "steps": 20, "guidance": 5.0, "resolution": 32,
                                       "eta": 0.0},
         "images_per_prompt": 1, "n_prompts": 100, "seed": 0, "dtype": "float32", "device_type": "cpu",
         "scorers": {"micro-clip": {"version": "1", "weights_hash": "0123456789abcdef"}}, "score_chunk": 16,
         "suite_params": {"reference": "x" * 60}}
    p.update(changes)
    return p


def test_the_footnote_line_names_device_scorers_and_protocol_hash_and_leaves_out_long_values():
    """The footnote states every run's device type, each scorer with its version and weights, the protocol hash,
    and the short facts not said otherwise; the suite name (said before the line) and over-long values are left
    out."""
    line = describe_protocol([_protocol(), _protocol(device_type="cuda", seed=1)], "0123456789abcdefff")
    assert line == ("ddim 20 steps, guidance 5.0, 32 px; 1 img/prompt; 100 prompts; seed 0/1; float32; cpu/cuda; "
                    "scorers: micro-clip v1 (weights 0123456789ab); score_chunk=16; protocol 0123456789ab")


def test_the_differs_from_list_names_facts_only_the_second_protocol_has_and_counts_the_rest():
    """A fact only the second protocol states is a difference, written with '(unset)' on the first side; beyond
    the limit the list says how many more there are."""
    assert protocol_diff({"a": 1}, {"a": 2, "b": [1, 2]}) == ["a 1 → 2", "b (unset) → 1,2"]
    many_a = {f"k{i}": i for i in range(8)}
    many_b = {f"k{i}": i + 1 for i in range(8)}
    out = protocol_diff(many_a, many_b, limit=6)
    assert len(out) == 7 and out[-1] == "… 2 more"


def test_protocols_whose_lists_differ_after_the_first_item_differ():
    """A list in a protocol (a suite's classes, a method's steps) is compared whole: a later item that differs
    makes the protocols differ, so a comparison is refused without --force."""
    assert flatten({"suite_params": {"classes": [1, 2, 3]}}) == {"suite_params.classes": "1,2,3"}
    a = {"suite": "micro", "protocol": _protocol(suite_params={"classes": [1, 2]})}
    b = {"suite": "micro", "protocol": _protocol(suite_params={"classes": [1, 3]})}
    assert protocol_differences(a, b) == ["suite_params.classes: 1,2 vs 1,3"]
