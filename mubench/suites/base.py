"""The suite plug-in contract: a prompt set (or class labels), a generation protocol, scorers, metrics."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

from ..metrics.core import Metric


@dataclass
class PromptItem:
    id: str  # stable id; seeds and sharding use it
    prompt: Any  # text prompt, or class label for class-conditional suites
    meta: dict[str, Any] = field(default_factory=dict)  # what scorers need (category, attributes, tags...)


@dataclass
class SamplerParams:
    """Generation protocol. ``None`` means "the model's default" (see ModelBundle.default_sampler)."""

    scheduler: Optional[str] = None  # ddim | dpmsolver++ | ddpm | euler
    steps: Optional[int] = None
    guidance: Optional[float] = None  # classifier-free guidance scale (1 = off)
    resolution: Optional[int] = None  # image side in pixels
    eta: float = 0.0  # DDIM eta


@dataclass
class SuiteParams:
    images_per_prompt: int = 1
    sampler: SamplerParams = field(default_factory=SamplerParams)


@dataclass
class SampleRecord:
    """One generated image and its per-image scores (what a suite aggregates)."""

    item: PromptItem
    image_index: int
    seed: int
    key: str
    path: str
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # scorer name -> per-image result


@dataclass
class ImportedImage:
    """An image made by another tool, mapped to a prompt of the suite."""

    item: PromptItem
    image_index: int
    path: Path


@dataclass
class ScorerUse:
    """A scorer a suite uses: registry name and parameters."""

    scorer: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class MeasureContext:
    """What the runner hands a measuring suite (``Suite.measures``) instead of the generate/score flow."""

    bundle: Any  # the loaded ModelBundle
    method: Any  # the run's Method instance (its ``name`` and ``params``; ``build`` / ``prepare``)
    method_context: Any  # the MethodContext the run would prepare the method with
    device: Any  # torch.device of the run
    dtype: Any  # torch.dtype of the run
    seed: int  # run seed
    resolve_sampler: Callable[[Any], Any]  # prepared → the run's SamplerConfig (suite sampler + method overrides)
    log: Callable[[str], None] = lambda msg: None  # progress / notes for the user
    progress: Any = None  # the run's Progress callbacks (start(stage, total), advance(stage, n))


@dataclass
class Measurement:
    """What ``Suite.measure`` returns: metrics (as any suite's), what they were measured on, and the raw record.

    ``prepared`` / ``sampler`` fill results.json's method_info and protocol.sampler as in a generating run;
    ``details`` goes to results.json's ``measurements`` (raw timings, loads, notes: not part of the protocol).
    """

    metrics: dict[str, Metric]
    prepared: Any = None
    sampler: Any = None
    details: dict[str, Any] = field(default_factory=dict)


class Suite(ABC):
    Params: ClassVar[type] = SuiteParams
    # True for suites that measure the method (costs, timings) instead of generating and scoring images:
    # the runner then calls ``measure`` once on the main process, and ``items`` / ``scorers`` / ``aggregate`` are unused
    measures: ClassVar[bool] = False

    def __init__(self, params: Any, name: str) -> None:
        self.params = params
        self.name = name

    @abstractmethod
    def items(self) -> list[PromptItem]:
        """All prompts of the suite, in a fixed order (``limit=N`` takes the first N)."""

    @abstractmethod
    def scorers(self) -> dict[str, ScorerUse]:
        """Scorer instance name → registry scorer + params."""

    @abstractmethod
    def aggregate(self, records: list[SampleRecord]) -> dict[str, Metric]:
        """Per-image scores → metrics (with bootstrap CIs where the metric allows)."""

    def units(self, records: list[SampleRecord]) -> dict[str, Any]:
        """Per-unit data (:class:`mubench.stats.units.UnitData`) of the metrics that have it, by metric name:
        what ``mubench compare``, significance marks and pooled replicates resample. Default: none (those
        metrics are then shown without paired tests)."""
        return {}

    def image_seed(self, item: PromptItem, image_index: int, run_seed: int) -> Optional[int]:
        """A seed fixed by the suite's reference protocol for this image, or None (the default) to use the
        harness's per-image stream :func:`mubench.seeding.image_seed`. Suites that reproduce a reference's
        seeds (T2I-CompBench: 42 + j) override it."""
        return None

    def import_images(self, folder: Path, items: list[PromptItem]) -> list["ImportedImage"]:
        """Map a folder of images made by another tool to this suite's prompts (``mubench score images=DIR``).

        Default naming: ``DIR/<prompt id>/<image index>.png``. Suites with a reference layout override this.
        """
        out = []
        for it in items:  # an id may hold slashes (micro's ``coco/0000``): its folder is then nested
            sub = Path(folder) / it.id
            if sub.is_dir():
                out += [ImportedImage(it, int(img.stem), img) for img in sorted(sub.glob("*.png"))
                        if img.stem.isdigit()]
        return out

    def check_assets(self) -> None:
        """Raise AssetError naming any missing local file before any work is done."""

    def check_size(self, items: list[PromptItem]) -> None:
        """Called with the run's prompts before anything is generated: raise UsageError for a size no metric can
        use, or ``warnings.warn`` one line for a metric that will be skipped (which metric, why, what size works)."""

    def protocol(self) -> dict[str, Any]:
        """Suite-specific protocol facts recorded next to every number."""
        return {}

    def measure(self, ctx: MeasureContext) -> Measurement:
        """Measure instead of generate (only for suites with ``measures = True``)."""
        raise NotImplementedError(f"suite {self.name!r} does not measure")
