"""The method plug-in contract: "base model + a change".

A method kind is registered under a name (``sd``, ``random-mask``, ``maskunet``...) as a class with
a ``Params`` dataclass. A method spec (``methods/NAME.yaml``) names the kind and its parameters.
``prepare`` returns a :class:`Prepared` method: the changed denoiser plus per-batch / per-step hooks
the shared sampler calls. Any randomness a method uses at sampling time is drawn from the per-image
generators it is handed (see :mod:`mubench.seeding`), never from the global RNG.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import nn

from ..models.base import ModelBundle


@dataclass
class MethodContext:
    """What ``prepare`` may use besides the base model."""

    artifacts_dir: Path  # content-addressed trained artifacts live below this folder
    train: str = "auto"  # auto | never | force
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32
    seed: int = 0
    model_name: str = ""
    show_progress: bool = True  # training on demand draws its own progress bar (when ``progress`` is None)
    weights: str = "pretrained"  # the run's weights= (random: methods build their own helper models randomly too)
    progress: Any = None  # the run's progress callbacks (``start(stage, total)``, ``advance(stage, n)``), if any


@dataclass
class RowInfo:
    """Which image a row of the denoiser batch belongs to (with CFG a batch holds 2 rows per image)."""

    image: int  # index into the batch of images (and into ``generators``)
    cond: bool  # False for the unconditional (null-prompt) half of classifier-free guidance


@dataclass
class StepState:
    step_index: int
    num_steps: int
    timestep: torch.Tensor  # scalar timestep of the scheduler
    latents: torch.Tensor  # [B, C, H, W] current latents (one row per image)
    rows: list[RowInfo]  # layout of the denoiser batch about to be run
    generators: list[torch.Generator]  # one per image: the per-image random stream
    # the sampler fills: guidance (CFG scale), prompts (the batch's prompts, indexed like ``generators``),
    # scheduler (its name)
    extras: dict[str, Any] = field(default_factory=dict)


class Prepared:
    """A prepared method. The default is the base model unchanged."""

    #: False (on the class or the instance) where the denoiser call runs something ``torch.compile`` cannot trace
    #: into one graph (mask noise drawn from ``torch.Generator`` objects inside the layers): it would re-trace layer
    #: by layer and give up, so ``compile=`` is refused (:func:`~mubench.sampler.check_compilable`)
    compile_safe: bool = True

    def __init__(self, denoiser: nn.Module, *, added_params: int = 0, trainable_params: int = 0,
                 artifact: Optional[str] = None, info: Optional[dict[str, Any]] = None,
                 layers: Optional[list[dict[str, Any]]] = None) -> None:
        self.denoiser = denoiser
        self.added_params = added_params
        self.trainable_params = trainable_params
        self.artifact = artifact  # content hash of a trained artifact, if any
        # weights hashes of the models other than the denoiser that decide the images (maskunet-free's reward
        # models), by name: part of every sample key when not empty, so new reward weights never reuse old images
        self.weights_used: dict[str, str] = {}
        # dotted paths into the method's params that only say where those weights are (a reward's checkpoint=):
        # recorded as null in every sample key, so the same weights moved elsewhere keep their images
        self.location_params: tuple[str, ...] = ()
        self.info = dict(info or {})  # recorded in results.json (e.g. mode=faithful, mask sampling)
        self.layers = list(layers or [])  # the layers the method changes (name, kind, shape...), for `inspect`
        # sampler settings the method needs whatever the suite says (e.g. maskunet-free: 15 DPM-Solver++ steps);
        # keys of SamplerConfig, applied over the suite's and recorded in results.json's protocol
        self.sampler_overrides: dict[str, Any] = {}

    def use_compiled(self, compiled: bool) -> None:
        """Told by :func:`~mubench.sampler.denoiser_of`, before a batch's calls, whether they go through
        ``torch.compile`` (maskunet then draws a call's stream noise before the call). Default: nothing changes."""

    def begin_batch(self, generators: list[torch.Generator], rows: list[RowInfo]) -> None:
        """Called once per batch of images before the first step (e.g. draw masks fixed per image)."""

    def before_step(self, state: StepState) -> None:
        """Called before each denoiser call (e.g. resample masks, set the timestep a mask generator sees)."""

    def predict(self, state: StepState, model_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Return the denoiser output for this step. Training-free methods may optimise first."""
        return model_fn()

    def forward_once(self, state: StepState, model_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One denoiser call with the method's change applied and nothing optimised: what per-forward cost
        figures count (the efficiency suite). Default: :meth:`predict`; methods that optimise inside ``predict``
        override it with a single forward from their starting point."""
        return self.predict(state, model_fn)

    def end_batch(self) -> None:
        """Called after the last step of a batch (drop per-batch state)."""


class Method(ABC):
    """A registered method kind."""

    Params: ClassVar[type]
    trainable: ClassVar[bool] = False  # True when prepare() may train an artifact

    def __init__(self, params: Any, name: str) -> None:
        self.params = params
        self.name = name

    @abstractmethod
    def prepare(self, bundle: ModelBundle, ctx: MethodContext) -> Prepared: ...

    def build(self, bundle: ModelBundle, ctx: MethodContext) -> Prepared:
        """The changed model's structure with freshly initialised added weights, no artifact loaded or trained
        (``mubench inspect``, and the starting point of training). Default: :meth:`prepare`."""
        return self.prepare(bundle, ctx)

    @property
    def compile_safe(self) -> bool:
        """Whether the :class:`Prepared` of these params is ``compile_safe``, known before anything is prepared (the
        runner refuses ``compile=`` before loading a model; a test ties the two together)."""
        return True

    def compiles_on(self, bundle: ModelBundle) -> bool:
        """:attr:`compile_safe` once the model is loaded (what depends on the denoiser's kind). Default: the same."""
        return self.compile_safe

    def scorer_params(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """The scorers the method runs itself (maskunet-free's rewards), by name: (registry name, every param as a
        plain dict). The runner checks their params and files with the suite's before the model loads; a bad
        scorer or key is a UsageError here. Default: none."""
        return {}

    def for_sampling(self, prepared: Prepared) -> Prepared:
        """The sampling-time form of a prepared or built method (LoRA: factors merged into the weights when
        ``merge`` is on); :meth:`prepare` returns it, and the efficiency suite applies it to a built method so that
        it times what a run samples with. Default: unchanged."""
        return prepared


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
