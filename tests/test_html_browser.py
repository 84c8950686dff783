"""`mubench report --html` of a small micro run, opened in headless Chromium (Debian's ``chromium`` package).

Renders the report of two 4-prompt micro runs (sd, random-mask; 2 sampler steps), loads ``index.html`` from the file
system and checks from the DOM that the table, both gallery columns, the "where they differ" list and every image
loaded, with no console error; the filters re-render the rows. Skipped, saying why, where no Chromium is installed
(.ci/run installs it).
"""
from __future__ import annotations

import json

import pytest
from PIL import Image

from chromium import find_chromium, open_page

pytestmark = pytest.mark.skipif(find_chromium() is None, reason="no chromium executable on PATH: install Debian's "
                                "`chromium` package (apt-get install -y chromium; .ci/run does) to run the browser test")

RUN = ("suite=micro", "limit=4", "suite.sampler.steps=2", "--no-progress")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from conftest import run_cli

    root = tmp_path_factory.mktemp("html-browser")
    env = {"MUBENCH_HOME": str(root / "home")}
    for method in ("sd", "random-mask"):
        proc = run_cli("run", f"method={method}", f"out={root / method}", *RUN, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("report", "--html", f"out={root / 'report'}", "suite=micro", "baseline=sd", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root


def test_run_writes_a_contact_sheet(report):
    with Image.open(report / "sd" / "contact.png") as im:
        assert im.width > 4 * 128 and im.height > 128
    assert len((report / "sd" / "samples.jsonl").read_text(encoding="utf-8").splitlines()) == 4


def test_report_renders_in_chromium(report):
    index = report / "report" / "index.html"
    with open_page(index.as_uri()) as page:
        dom = page.evaluate("""(async () => {
            const imgs = [...document.images];
            const loaded = await Promise.all(imgs.map(i => { i.loading = 'eager';
                return i.decode().then(() => i.naturalWidth > 0).catch(() => false); }));
            const q = s => [...document.querySelectorAll(s)];
            return {
              tableRows: q('#results-table tbody tr').map(r => r.querySelector('th').textContent.trim()),
              tableHeads: q('#results-table thead th').length,
              galleryHead: q('.gallery-table thead th').map(t => t.textContent.trim()),
              galleryRows: q('.gallery-table tbody tr').map(r => r.querySelectorAll('td.img img').length),
              differ: q('#differ h3').map(h => h.textContent.trim()),
              protocols: q('#protocols details').length,
              images: imgs.length, loaded: loaded.filter(Boolean).length,
              categories: q('select[name=category] option').map(o => o.value).filter(Boolean),
              count: document.querySelector('.controls .count').textContent,
            };
        })()""")
        shot = page.screenshot(index.parent / "screenshot.png")
        # the filter: one category only, re-rendered by report.js
        cat = dom["categories"][0]
        filtered = page.evaluate(f"""(() => {{
            const s = document.querySelector('select[name=category]'); s.value = {json.dumps(cat)};
            s.dispatchEvent(new Event('change', {{bubbles: true}}));
            return [...document.querySelectorAll('.gallery-table tbody tr')].map(r => r.dataset.category);
        }})()""")
        errors = page.errors()
    assert errors == []
    assert dom["tableRows"] == ["sd", "random-mask"] and dom["tableHeads"] > 2
    assert dom["galleryHead"] == ["Prompt", "sd", "random-mask"]
    assert dom["galleryRows"] == [2, 2, 2, 2] and dom["count"] == "4 of 4 rows"
    assert dom["differ"] == ["random-mask vs sd"] and dom["protocols"] == 2
    assert dom["images"] >= 8 and dom["loaded"] == dom["images"]
    assert filtered and set(filtered) == {cat}
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 900
