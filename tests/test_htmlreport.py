"""The HTML report without a browser: "where they differ" order against the store, the page's content, errors."""
from __future__ import annotations

import json
import random
import re

import pytest
from PIL import Image

from mubench.htmlreport.differ import default_metric, differences, score_leaves, shared_metrics, wins_and_losses
from mubench.htmlreport.contact import contact_sheet
from mubench.store import Store
from results_fakes import fake_results


def _samples(tmp_path, method: str, seed: int, n: int = 12) -> list[dict]:
    """n prompts in two categories, a tiny PNG each, a random clip score and correct flag per image."""
    rng = random.Random(seed)
    out = []
    for p in range(n):
        path = tmp_path / f"{method}-{p}.png"
        Image.new("RGB", (8, 8), (rng.randrange(256), 0, 0)).save(path)
        cat = "color" if p % 2 else "shape"
        out.append({"prompt_id": f"{cat}/{p:04d}", "image_index": 0, "seed": 100 + p, "prompt": f"prompt {p}",
                    "key": f"{method}-{p}", "path": str(path), "sha256": f"{method}{p}".ljust(64, "0"),
                    "scores": {"clip": {"clip": round(rng.uniform(-1, 1), 3)},
                               "oracle": {"correct": rng.random() < 0.5, "n_objects": rng.randrange(3),
                                          "reason": "r"}}})
    return out


@pytest.fixture
def store_runs(tmp_path):
    path = tmp_path / "store.sqlite"
    a, b = fake_results("sd", {"clip": 0.5}, ci=0.05), fake_results("random-mask", {"clip": 0.4}, ci=0.05)
    with Store(path) as st:
        st.record_run(a, _samples(tmp_path, "sd", 1))
        st.record_run(b, _samples(tmp_path, "random-mask", 2)[1:])  # one prompt missing: left out of the pairs
    return path, a["run_id"], b["run_id"]


def test_differ_order_matches_paired_differences_in_store(store_runs):
    path, ra, rb = store_runs
    with Store(path) as st:
        sa, sb = st.samples(ra), st.samples(rb)
    by_b = {(s["prompt_id"], s["image_index"]): s["scores"]["clip"]["clip"] for s in sb}
    expected = sorted(((by_b[(s["prompt_id"], 0)] - s["scores"]["clip"]["clip"], s["prompt_id"]) for s in sa
                       if (s["prompt_id"], 0) in by_b), key=lambda t: (-t[0], t[1]))
    got = differences(sa, sb, "clip.clip")
    assert [(round(d.difference, 9), d.prompt_id) for d in got] == [(round(e, 9), p) for e, p in expected]
    assert len(got) == 11
    wins, losses = wins_and_losses(got, 3)
    assert all(w.difference > 0 for w in wins) and wins == got[:len(wins)]
    assert [l.prompt_id for l in losses] == [d.prompt_id for d in sorted(got, key=lambda d: d.difference)
                                            if d.difference < 0][:3]


def test_score_leaves_and_default_metric():
    s = {"scores": {"oracle": {"correct": True, "n_objects": 2, "reason": "x", "objects": []},
                    "clip": {"clip": 0.25}}}
    assert score_leaves(s) == {"clip.clip": 0.25, "oracle.correct": 1.0}
    assert default_metric(shared_metrics([s], [s])) == "oracle.correct"
    assert default_metric(["clip.clip"]) == "clip.clip"


def test_html_report_from_store(store_runs, tmp_path, cli):
    path, ra, rb = store_runs
    out = tmp_path / "report"
    masks = tmp_path / "masks" / "masks-random-mask-micro"  # where `mubench masks` would have written
    masks.mkdir(parents=True)
    Image.new("RGB", (20, 10), "blue").save(masks / "mask_ratio_per_layer.png")
    proc = cli("report", "--html", f"out={out}", f"store={path}", "baseline=sd", "differ_by=clip.clip",
               f"masks={masks.parent}")
    assert proc.returncode == 0, proc.stderr
    html = (out / "index.html").read_text()
    # the table: both methods with CIs, protocol footnote
    assert re.search(r"<th class=\"label\" scope=\"row\">sd</th>.*\[0\.450, 0\.550\]", html, re.S)
    assert "[a]" in html and "protocol proto-a" in html
    # the gallery: baseline column first, one row per prompt, images copied into the folder
    head = html.split('class="gallery-table"')[1].split("</thead>")[0]
    assert head.index(">sd<") < head.index(">random-mask<")
    assert html.count('class="gallery-row"') == 12
    for src in re.findall(r'<img src="([^"]+)"', html):
        assert (out / src).is_file(), src
    assert "not in this run" in html  # random-mask lacks one prompt
    # where they differ: the listed wins are in order of the paired difference
    diffs = [float(x) for x in re.findall(r'class="differ-row" data-diff="([-0-9.e]+)"', html)]
    n_wins = sum(d > 0 for d in diffs)
    assert diffs[:n_wins] == sorted(diffs[:n_wins], reverse=True) and n_wins > 0
    assert '<section id="masks">' in html and "masks-random-mask-micro-mask_ratio_per_layer.png" in html
    data = json.loads((out / "gallery-data.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert len(data["galleries"]["g0"]["rows"]) == 12


@pytest.mark.parametrize("args, message", [
    (("differ_by=clip.clip",), "only to --html"),
    (("--html", "baseline=lora"), "baseline='lora'"),
    (("--html", "baseline=sd", "differ_by=clip.clp"), "did you mean 'clip.clip'"),
    (("--html", "differ_by=clip.clip"), "give baseline= too"),
])
def test_html_report_bad_input(store_runs, tmp_path, cli, args, message):
    path, _, _ = store_runs
    proc = cli("report", f"store={path}", f"out={tmp_path / 'r'}", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_contact_sheet_draws_every_image(tmp_path):
    samples = _samples(tmp_path, "sd", 3, n=5)
    samples[4]["path"] = str(tmp_path / "gone.png")
    path = contact_sheet(samples, tmp_path / "contact.png", n=4, tile=32, columns=2)
    with Image.open(path) as im:
        assert im.width == 2 * (32 + 6) + 6
        # the first image's red channel shows up in its tile (nearest-neighbour upscaled 8 → 32 px)
        assert im.getpixel((6 + 16, 6 + 16))[0] == Image.open(samples[0]["path"]).getpixel((4, 4))[0]


def _html_table(**kw):
    from mubench.report.table import CI_NOTE, Cell, Column, Row, Table

    args = dict(caption="c", label=None, rows=[Row("sd", "micro", "sd"), Row("lora", "micro", "lora")],
                columns=[Column("fid", "fid", "micro", "proto-a", "a", False, ".1f")],
                cells={(0, 0): Cell(20.0, 19.0, 21.0, 100, "r0"), (1, 0): Cell(22.0, 21.0, 23.0, 100, "r1")},
                protocols={"a": "micro"}, notes=[CI_NOTE, "some other note"], show_model=True)
    args.update(kw)
    return Table(**args)


def test_html_table_context_reads_bold_marks_model_and_format_from_the_table():
    """The page's table takes bold (the significance rule's, not the best value), marks, the model, each column's
    format and its direction from the table."""
    from mubench.htmlreport.table import table_context

    # significance bold on lora although sd has the best (lowest) fid; lora marked ▲ against the baseline
    ctx = table_context(_html_table(bold={0: {1}}, marks={(1, 0): "▲"}))
    assert ctx["header"][0]["title"] == "lower is better" and ctx["header"][0]["arrow"] == "↓"
    sd, lora = (r["cells"][0] for r in ctx["rows"])
    assert (sd["bold"], lora["bold"]) == (False, True)
    assert (sd["mark"], lora["mark"]) == ("", "▲")
    assert [r["model"] for r in ctx["rows"]] == ["micro", "micro"]
    assert sd["text"] == "20.0" and sd["ci"] == "[19.0, 21.0]"  # the column's .1f, not auto's .2f
    # without significance bold: the best displayed value (lowest fid) is bold
    ctx = table_context(_html_table())
    assert [r["cells"][0]["bold"] for r in ctx["rows"]] == [True, False]


def test_html_table_notes_drop_the_plus_minus_note_and_explain_marks():
    """The page shows CIs in brackets, so the ± note is dropped; a table with marks gets the ▲/▼ legend."""
    from mubench.htmlreport.table import table_context
    from mubench.report.table import CI_NOTE

    notes = table_context(_html_table(bold={0: set()}, marks={(1, 0): "▼"}))["notes"]
    assert CI_NOTE not in notes and "some other note" in notes
    assert any(n.startswith("▲ / ▼") for n in notes)
    assert not any(n.startswith("▲ / ▼") for n in table_context(_html_table())["notes"])


def _rec(prompt_id, image_index, **scores):
    return {"prompt_id": prompt_id, "image_index": image_index, "prompt": prompt_id,
            "scores": {"clip": dict(scores)}}


def test_differ_pairs_on_prompt_and_image_index():
    """Images are paired on prompt id and image index, not on the prompt alone."""
    from mubench.htmlreport.differ import differences, pair_samples

    a = [_rec("p", 0, clip=0.1), _rec("p", 1, clip=0.5)]
    b = [_rec("p", 1, clip=0.6), _rec("p", 0, clip=0.4)]
    assert [(x["image_index"], y["image_index"]) for x, y in pair_samples(a, b)] == [(0, 0), (1, 1)]
    got = {(d.image_index): round(d.difference, 9) for d in differences(a, b, "clip.clip")}
    assert got == {0: 0.3, 1: 0.1}


def test_differ_lower_is_better_flips_the_sign():
    """For a lower-is-better score a drop is a gain."""
    from mubench.htmlreport.differ import differences

    a, b = [_rec("p", 0, clip=0.2)], [_rec("p", 0, clip=0.5)]
    assert round(differences(a, b, "clip.clip")[0].difference, 9) == 0.3
    assert round(differences(a, b, "clip.clip", higher_is_better=False)[0].difference, 9) == -0.3


def test_a_zero_difference_is_neither_a_win_nor_a_loss():
    """Unchanged images are listed neither as wins nor as losses."""
    from mubench.htmlreport.differ import differences, wins_and_losses

    a = [_rec("p0", 0, clip=0.5), _rec("p1", 0, clip=0.5), _rec("p2", 0, clip=0.5)]
    b = [_rec("p0", 0, clip=0.7), _rec("p1", 0, clip=0.5), _rec("p2", 0, clip=0.1)]
    wins, losses = wins_and_losses(differences(a, b, "clip.clip"), 5)
    assert [d.prompt_id for d in wins] == ["p0"] and [d.prompt_id for d in losses] == ["p2"]


def test_non_finite_scores_are_not_per_image_metrics():
    """A NaN or infinite score is no per-image metric (it would break the differences' order)."""
    from mubench.htmlreport.differ import differences, score_leaves

    assert score_leaves({"scores": {"clip": {"clip": float("nan"), "other": float("inf"), "ok": 0.5}}}) == \
        {"clip.ok": 0.5}
    a = [_rec("p0", 0, clip=0.5), _rec("p1", 0, clip=float("nan"))]
    b = [_rec("p0", 0, clip=0.7), _rec("p1", 0, clip=0.1)]
    assert [d.prompt_id for d in differences(a, b, "clip.clip")] == ["p0"]


def test_category_of_a_prompt_id_without_slash_is_all():
    """A prompt id without a task prefix falls in the category "all", not one category per prompt."""
    from mubench.htmlreport.differ import category

    assert category("color/0003") == "color" and category("p0") == "all"


def test_differ_ties_are_in_prompt_id_order_whatever_the_baseline_order():
    """Equal differences come out in prompt-id order, whatever the order of the baseline's records."""
    from mubench.htmlreport.differ import differences

    a = [_rec(p, 0, clip=0.5) for p in ("c", "a", "b")]
    b = [_rec(p, 0, clip=0.75) for p in ("a", "b", "c")]
    assert [d.prompt_id for d in differences(a, b, "clip.clip")] == ["a", "b", "c"]


def test_shared_metrics_are_those_of_both_runs_only():
    """Only metrics both runs have are offered (one only a side has would pair nothing)."""
    from mubench.htmlreport.differ import shared_metrics

    a = [{"scores": {"clip": {"clip": 0.1}, "oracle": {"correct": True}}}]
    b = [{"scores": {"clip": {"clip": 0.2}}}]
    assert shared_metrics(a, b) == ["clip.clip"]
