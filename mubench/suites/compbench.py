"""``compbench``: T2I-CompBench attribute binding (color, shape, texture) scored by BLIP-VQA.

Protocol (as the reference, Karine-Huang/T2I-CompBench):

* prompts: ``<category>_val.txt``, 300 non-empty lines each; a line's prompt is its first tab-separated
  field, stripped. The files are pinned by sha256 (asset ``t2i-compbench-<category>``; ``color_val.txt``
  is the version after the 2025-09-03 de-duplication).
* 10 images per prompt; image j of every prompt is generated with seed ``42 + j`` (seeds 42…51, the
  reference's ``inference_eval.py``); a run seed s ≠ 0 shifts them to ``42 + 10·s + j``.
* BLIP-VQA per image (see :mod:`mubench.scorers.blip_vqa`), over the prompt's noun phrases
  (:mod:`mubench.suites.nounphrases`), category score = mean over all images of the category.
* folder naming: ``<category>/samples/{prompt}_{k:06d}.png`` with k = 10·i + j the running index of
  image j of prompt i within the category file. :func:`export_samples` writes it;
  :func:`import_folder` reads it back (the reference recovers the prompt as the text before the first
  ``_`` and the index as the integer after the last one).
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..config import LOCATION_ONLY, to_plain
from ..errors import UsageError
from ..metrics.core import Metric, bootstrap_mean
from ..scorers.blip_vqa import BlipVqaParams
from ..stats.build import mean_units
from ..stats.units import UnitData
from .base import ImportedImage, PromptItem, SampleRecord, SamplerParams, ScorerUse, Suite
from .nounphrases import noun_phrases, resolve_backend

CATEGORIES = ("color", "shape", "texture")
PROMPTS_PER_FILE = 300
_NAME = re.compile(r"^(?P<prompt>.*)_(?P<k>\d+)\.png$")


@dataclass
class CompBenchParams:
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    # folder holding <category>_val.txt (else the assets folder)
    prompts_dir: Optional[str] = field(default=None, metadata=LOCATION_ONLY)
    images_per_prompt: int = 10
    seed_base: int = 42  # image j of every prompt uses seed seed_base + j (reference: 42..51)
    noun_phrases: str = "auto"  # auto | spacy | rules
    spacy_model: str = "en_core_web_sm"
    vqa: BlipVqaParams = field(default_factory=BlipVqaParams)
    sampler: SamplerParams = field(default_factory=SamplerParams)

    def validate(self) -> None:
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad or not self.categories:
            raise ValueError(f"categories must be a non-empty subset of {', '.join(CATEGORIES)}; got {bad or '[]'}")
        if self.images_per_prompt < 1:
            raise ValueError("images_per_prompt must be >= 1")


def read_prompt_file(path: Union[str, Path]) -> list[str]:
    """Prompts of a T2I-CompBench file: non-empty lines, first tab-separated field, stripped."""
    prompts = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            prompts.append(line.split("\t")[0].strip())
    return prompts


def prompt_file(category: str, prompts_dir: Optional[str] = None) -> Path:
    """The pinned prompt file of ``category`` (AssetError when missing or not matching its sha256)."""
    from ..assets import require

    override = Path(prompts_dir) / f"{category}_val.txt" if prompts_dir else None
    return require(f"t2i-compbench-{category}", override)


def sample_name(prompt: str, k: int) -> str:
    """T2I-CompBench's file name of the image with running index ``k``."""
    return f"{prompt}_{k:06d}.png"


def running_index(prompt_index: int, image_index: int, images_per_prompt: int = 10) -> int:
    return images_per_prompt * prompt_index + image_index


class CompBenchSuite(Suite):
    Params = CompBenchParams

    def __init__(self, params: CompBenchParams, name: str) -> None:
        super().__init__(params, name)
        self._items: Optional[list[PromptItem]] = None

    # -- prompts -----------------------------------------------------------------------------------
    def prompts(self, category: str) -> list[str]:
        prompts = read_prompt_file(prompt_file(category, self.params.prompts_dir))
        if len(prompts) != PROMPTS_PER_FILE:
            raise UsageError(f"{category}_val.txt has {len(prompts)} prompts, expected {PROMPTS_PER_FILE}")
        return prompts

    def items(self) -> list[PromptItem]:
        if self._items is None:
            p = self.params
            items = []
            for cat in p.categories:
                for i, prompt in enumerate(self.prompts(cat)):
                    phrases = noun_phrases(prompt, p.noun_phrases, p.spacy_model)
                    items.append(PromptItem(id=f"{cat}-{i:03d}", prompt=prompt,
                                            meta={"category": cat, "index": i, "noun_phrases": phrases}))
            self._items = items
        return self._items

    def import_images(self, folder: Path, items: list[PromptItem]) -> list[ImportedImage]:
        """T2I-CompBench naming: ``folder`` holds one category's images (``{prompt}_{k:06d}.png``, or under
        ``samples/``), or one sub-folder per category (``folder/color/samples/...``)."""
        folder = Path(folder)
        cats = [c for c in self.params.categories if (folder / c).is_dir()]
        if not cats:
            if len(self.params.categories) != 1:
                raise UsageError(f"{folder}: expected one sub-folder per category ({', '.join(self.params.categories)})"
                                 " or suite.categories=[CATEGORY] for a single-category folder")
            return import_folder(folder, items, self.params.categories[0], self.params.images_per_prompt)
        return [s for c in cats for s in import_folder(folder / c, items, c, self.params.images_per_prompt)]

    def check_assets(self) -> None:
        from ..preflight import check_all

        check_all([lambda c=cat: prompt_file(c, self.params.prompts_dir) for cat in self.params.categories])

    def image_seed(self, item: PromptItem, image_index: int, run_seed: int) -> Optional[int]:
        """The reference's seeds: 42 + j for image j of every prompt (shifted by 10·run_seed)."""
        return self.params.seed_base + self.params.images_per_prompt * int(run_seed) + image_index

    # -- scoring -----------------------------------------------------------------------------------
    def scorers(self) -> dict[str, ScorerUse]:
        return {"vqa": ScorerUse("blip-vqa", to_plain(self.params.vqa))}

    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        metrics: dict[str, Metric] = {}
        for cat in self.params.categories:
            mine = [r for r in records if r.item.meta.get("category") == cat]
            if not mine:
                continue
            metrics[cat] = bootstrap_mean([float(r.scores["vqa"]["score"]) for r in mine], True,
                                          groups=[r.item.id for r in mine])
        return metrics

    def units(self, records: list[SampleRecord]) -> dict[str, UnitData]:
        """Each category's per-image VQA scores: what ``compare`` and the report's marks test, paired by
        (prompt, image index)."""
        out: dict[str, UnitData] = {}
        for cat in self.params.categories:
            mine = [r for r in records if r.item.meta.get("category") == cat]
            if mine:
                out[cat] = mean_units(mine, [float(r.scores["vqa"]["score"]) for r in mine])
        return out

    def protocol(self) -> dict[str, Any]:
        p = self.params
        files = {}
        for cat in p.categories:
            from ..assets import get_asset

            files[f"{cat}_val.txt"] = get_asset(f"t2i-compbench-{cat}").sha256
        return {"benchmark": "T2I-CompBench attribute binding (BLIP-VQA)", "prompt_files_sha256": files,
                "images_per_prompt": p.images_per_prompt,
                "seeds": f"image j of every prompt: {p.seed_base} + {p.images_per_prompt}*run_seed + j",
                "noun_phrases": resolve_backend(p.noun_phrases, p.spacy_model),
                "np_num": p.vqa.np_num, "aggregation": "mean over images of prod_k P(yes)/(P(yes)+P(no))"}


# ---------------------------------------------------------------------------------------------------
# T2I-CompBench folder naming


def export_samples(records: Iterable[SampleRecord], out_dir: Union[str, Path], images_per_prompt: int = 10,
                   overwrite: bool = False) -> list[Path]:
    """Copy generated PNGs into ``out_dir/<category>/samples/{prompt}_{k:06d}.png`` (T2I-CompBench's layout)."""
    out_dir = Path(out_dir)
    written = []
    for r in records:
        cat, i = r.item.meta.get("category"), r.item.meta.get("index")
        if cat is None or i is None:
            raise UsageError(f"sample of prompt {r.item.id} has no category/index: not a compbench sample")
        if "_" in r.item.prompt or "/" in r.item.prompt:
            raise UsageError(f"prompt {r.item.prompt!r} contains '_' or '/', which T2I-CompBench's naming cannot hold")
        dest = out_dir / cat / "samples" / sample_name(r.item.prompt, running_index(i, r.image_index,
                                                                                   images_per_prompt))
        if dest.exists() and not overwrite:
            raise UsageError(f"{dest} exists (pass overwrite=True)")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(r.path, dest)
        written.append(dest)
    return written


def import_folder(folder: Union[str, Path], items: list[PromptItem], category: str,
                  images_per_prompt: int = 10) -> list[ImportedImage]:
    """Map a T2I-CompBench image folder (``folder`` or ``folder/samples``) to this suite's prompt items.

    Every ``*.png`` must be named ``{prompt}_{k}.png``; k gives prompt ``k // images_per_prompt`` and image
    ``k % images_per_prompt``, and the prompt text before the first ``_`` must match that prompt.
    """
    folder = Path(folder)
    if (folder / "samples").is_dir():
        folder = folder / "samples"
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    by_index = {it.meta["index"]: it for it in items if it.meta.get("category") == category}
    out = []
    for path in sorted(folder.glob("*.png")):
        m = _NAME.match(path.name)
        if not m:
            raise UsageError(f"{path.name}: not named {{prompt}}_{{index:06d}}.png")
        k = int(m.group("k"))
        i, j = divmod(k, images_per_prompt)
        if i not in by_index:
            raise UsageError(f"{path.name}: index {k} is prompt {i}, outside the {len(by_index)} {category} prompts")
        prompt = path.name.split("_", 1)[0]
        if prompt != by_index[i].prompt:
            raise UsageError(f"{path.name}: index {k} belongs to prompt {by_index[i].prompt!r}, the file names {prompt!r}")
        out.append(ImportedImage(by_index[i], j, path))
    if not out:
        raise UsageError(f"no PNG images in {folder}")
    return sorted(out, key=lambda s: (s.item.meta["index"], s.image_index))


def read_vqa_results(path: Union[str, Path]) -> dict[int, float]:
    """The reference evaluator's ``vqa_result.json`` ([{question_id: k, answer: "0.1234"}]) → {k: score}."""
    try:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, list):
            raise ValueError("expected a JSON list")
        return {int(row["question_id"]): float(row["answer"]) for row in data}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{path}: not a T2I-CompBench vqa_result.json ({err})") from None
