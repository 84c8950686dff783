"""The HTML report folder: which runs it shows and pairs, what it says about them, and how it writes (or refuses)."""
from __future__ import annotations

import json
import random
import re

import pytest
from PIL import Image

from mubench.store import Store
from results_fakes import fake_results


def _samples(tmp_path, tag: str, seed: int, n: int = 6, prompt: str = "prompt") -> list[dict]:
    """n prompts, a tiny PNG each (content-named by ``tag``), a random clip score and correct flag per image."""
    rng = random.Random(seed)
    out = []
    for p in range(n):
        path = tmp_path / f"{tag}-{p}.png"
        Image.new("RGB", (8, 8), (rng.randrange(256), seed % 256, 0)).save(path)
        out.append({"prompt_id": f"{'color' if p % 2 else 'shape'}/{p:04d}", "image_index": 0, "seed": 100 + p,
                    "prompt": f"{prompt} {p}", "key": f"{tag}-{p}", "path": str(path),
                    "sha256": f"{tag}{p}".ljust(64, "0"),
                    "scores": {"clip": {"clip": round(rng.uniform(-1, 1), 3)},
                               "oracle": {"correct": rng.random() < 0.5, "reason": "r"}}})
    return out


def _store(tmp_path, runs) -> str:
    """A store holding one run per (method, model, number of prompts)."""
    path = tmp_path / "store.sqlite"
    with Store(path) as st:
        for k, (method, model, n) in enumerate(runs):
            st.record_run(fake_results(method, {"clip": 0.5 - 0.01 * k}, model=model, ci=0.05),
                          _samples(tmp_path, f"{method}-{model}", k + 1, n))
    return str(path)


def _differ_blocks(html: str) -> list[tuple[str, str]]:
    """(heading, model) of every "where they differ" block."""
    section = html.split('<section id="differ">', 1)[1].split("</section>", 1)[0]
    return re.findall(r'<div class="differ" data-method="[^"]*"(?: data-model="([^"]*)")?>\s*<h3>(.*?)</h3>', section)


def test_differ_pairs_each_run_with_the_baseline_of_its_own_model(tmp_path, cli):
    path = _store(tmp_path, [("sd", "m1", 6), ("sd", "m2", 6), ("random-mask", "m1", 6), ("random-mask", "m2", 6)])
    out = tmp_path / "report"
    proc = cli("report", "--html", f"out={out}", f"store={path}", "baseline=sd", "differ_by=clip.clip")
    assert proc.returncode == 0, proc.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    headings = sorted(h for _, h in _differ_blocks(html))
    # no "sd · m2 vs sd · m1", no "random-mask · m2 vs sd · m1"
    assert headings == ["random-mask · m1 vs sd · m1", "random-mask · m2 vs sd · m2"]
    assert sorted(m for m, _ in _differ_blocks(html)) == ["m1", "m2"]
    assert "Model <b>m1</b>" in html and "Model <b>m2</b>" in html  # each block says its model


def test_table_spec_narrows_gallery_differ_and_protocols(tmp_path, cli):
    path = _store(tmp_path, [("sd", "micro", 6), ("random-mask", "micro", 6), ("lora", "micro", 6)])
    spec = tmp_path / "two.yaml"
    spec.write_text("caption: sd vs random-mask\nsuite: micro\nrows: [sd, random-mask]\ncolumns: [clip]\n")
    out = tmp_path / "report"
    proc = cli("report", "--html", f"out={out}", f"store={path}", f"table={spec}", "baseline=sd")
    assert proc.returncode == 0, proc.stderr
    assert "2 runs" in proc.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "lora" not in html  # not a gallery column, not a differ block, not a protocol, no image of it
    assert [h for _, h in _differ_blocks(html)] == ["random-mask vs sd"]
    assert html.count("<details") == 2
    data = json.loads((out / "gallery-data.js").read_text(encoding="utf-8").split("=", 1)[1].rstrip().rstrip(";"))
    assert data["galleries"]["g0"]["columns"] == ["sd", "random-mask"]
    assert not any(p.name.startswith("lora") for p in (out / "images").iterdir())


def test_html_refuses_a_foreign_folder_and_writes_over_its_own_report(tmp_path, cli):
    path = _store(tmp_path, [("sd", "micro", 4), ("random-mask", "micro", 4)])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my own page\n")
    proc = cli("report", "--html", f"out={mine}", f"store={path}")
    assert proc.returncode == 2 and str(mine) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "not empty" in proc.stderr
    assert (mine / "index.html").read_text() == "my own page\n" and sorted(p.name for p in mine.iterdir()) == \
        ["index.html"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for _ in range(2):  # a new (empty) folder, then writing over the report made there
        proc = cli("report", "--html", f"out={empty}", f"store={path}", "baseline=sd")
        assert proc.returncode == 0, proc.stderr
        assert (empty / ".mubench-report").is_file() and (empty / "index.html").is_file()
    (empty / ".mubench-report").unlink()  # a report made before the marker existed is still recognised
    assert cli("report", "--html", f"out={empty}", f"store={path}").returncode == 0


@pytest.mark.parametrize("source", ["store", "results"])
def test_html_report_is_utf8_under_an_ascii_locale(tmp_path, cli, source):
    """Every text file is UTF-8 whatever the locale, and a second report under LC_ALL=C replaces the first whole;
    run folders' samples.jsonl are read as UTF-8 too."""
    runs, store = tmp_path / "runs", tmp_path / "store.sqlite"
    for k, method in enumerate(("sd", "random-mask")):
        result = fake_results(method, {"clip": 0.5 - 0.1 * k}, ci=0.05)
        samples = _samples(tmp_path, method, k + 1, 4, prompt="café ☕")
        if source == "store":
            with Store(store) as st:
                st.record_run(result, samples)
            continue
        (runs / method).mkdir(parents=True)
        (runs / method / "results.json").write_text(json.dumps(result))
        (runs / method / "samples.jsonl").write_bytes(
            "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples).encode("utf-8"))
    out = tmp_path / "report"
    args = ("report", "--html", f"out={out}", f"store={store}" if source == "store" else f"results={runs}",
            "baseline=sd")
    assert cli(*args).returncode == 0
    ascii_env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": ""}
    proc = cli(*args, env=ascii_env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    html = (out / "index.html").read_bytes().decode("utf-8")
    assert "·" in html and "↑" in html and "café ☕ 1" in html and html.rstrip().endswith("</html>")
    for name in ("gallery-data.js", "report.css", "report.js", ".mubench-report"):
        (out / name).read_bytes().decode("utf-8")
    data = (out / "gallery-data.js").read_bytes().decode("utf-8").split("=", 1)[1].rstrip().rstrip(";")
    assert json.loads(data)["galleries"]["g0"]["rows"][0]["prompt"].startswith("café ☕")


@pytest.mark.parametrize("runs, args, message", [
    ([("sd", "micro", 4), ("random-mask", "micro", 4)], ("baseline=sd", "differ_by=clip.clp"), "did you mean"),
    ([("sd", "micro", 4)], ("baseline=sd",), "no run of that method with per-image records next to"),
    ([("sd", "m1", 4), ("random-mask", "m2", 4)], ("baseline=sd",), "same model"),
])
def test_html_errors_come_before_the_folder_is_made(tmp_path, cli, runs, args, message):
    path = _store(tmp_path, runs)
    out = tmp_path / "report"
    proc = cli("report", "--html", f"out={out}", f"store={path}", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()  # nothing made, no image copied


def test_gallery_says_rows_and_each_columns_image_count(tmp_path, cli):
    path = _store(tmp_path, [("sd", "micro", 6), ("random-mask", "micro", 4)])
    out = tmp_path / "report"
    proc = cli("report", "--html", f"out={out}", f"store={path}")
    assert proc.returncode == 0, proc.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "images per column;" not in html and "6 images" not in html
    assert re.search(r"6 rows, one per \(prompt, image index\)", html)
    assert re.findall(r'<span class="col-count">([^<]*)</span>', html) == ["sd: 6", "random-mask: 4"]


EVIL = 'x</script><script>alert("p")</script><b>bold</b>'


def test_prompts_are_escaped_in_the_page_and_the_gallery_script(tmp_path, cli):
    """Prompts are user text: no markup from one reaches index.html or gallery-data.js as live HTML."""
    path = tmp_path / "store.sqlite"
    with Store(path) as st:
        for k, method in enumerate(("sd", "random-mask")):
            samples = []
            for p in range(3):
                img = tmp_path / f"{method}-{p}.png"
                Image.new("RGB", (4, 4), (p, k, 0)).save(img)
                samples.append({"prompt_id": f"color/{p:04d}", "image_index": 0, "seed": p, "prompt": EVIL,
                                "key": f"{method}-{p}", "path": str(img), "sha256": f"{method}{p}".ljust(64, "0"),
                                "scores": {"clip": {"clip": 0.1 * p + k}}})
            st.record_run(fake_results(method, {"clip": 0.5}, ci=0.05), samples)
    out = tmp_path / "report"
    proc = cli("report", "--html", f"out={out}", f"store={path}", "baseline=sd", "differ_by=clip.clip")
    assert proc.returncode == 0, proc.stderr
    html = (out / "index.html").read_text(encoding="utf-8")
    assert '<script>alert("p")' not in html and "<b>bold</b>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    data = (out / "gallery-data.js").read_text(encoding="utf-8")
    assert "</script>" not in data and "alert" in data
