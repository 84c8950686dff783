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
