"""What the micro world's zoo builds share (``zoo/micro``: :mod:`mubench.micro.zoo`, ``zoo/micro-dit``:
:mod:`mubench.micro.dit`, ``zoo/micro-art``: :mod:`mubench.micro.art_clip`): the build's start (folder, log,
threads), the trainer loss's common part (:class:`CodecDiffusionLoss`), its trainer settings and time-boxed training
in checkpoint-sized chunks, the stage times, versions, file hashes and manifest it writes, safetensors files whose
bytes depend on the weights alone, and the quality check — samples of single-object prompts read by the oracle,
and a Fréchet distance in micro-CLIP feature space against real renders — and the record that keeps a resumed
build's checkpoints to their recipe (:func:`check_build_recipe`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import numpy as np
import torch
from torch import nn

from ..fsutil import atomic_write_bytes, atomic_write_text
from . import data as D
from . import scene as S
from .assets import sha256_file

# (caption, colour, shape) of a single-object prompt of a build's quality check
Prompt = tuple[str, str, str]
# what decided the weights of the checkpoints in a build's ``.build/`` (:func:`check_build_recipe`)
RECIPE_FILE = "recipe.json"
Build = TypeVar("Build", bound=Callable[..., Any])


# --------------------------------------------------------------------------- logging and files


class BuildLog:
    """Timestamped lines to ``build.log`` (appended across resumed builds) and optionally stdout."""

    def __init__(self, path: Path, echo: bool = True) -> None:
        self.path = path
        self.echo = echo
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self.echo:
            print(line, flush=True)


def save_safetensors(module: nn.Module, path: Path, metadata: dict[str, Any]) -> None:
    """``module``'s weights (float32) to ``path`` with ``metadata`` as one JSON entry, atomically."""
    from safetensors.torch import save

    state = {k: v.detach().contiguous().cpu().float() for k, v in module.state_dict().items()}
    # one metadata key: safetensors writes several keys in hash-map order, which would make the
    # file's sha256 differ between two builds of bitwise-equal weights
    atomic_write_bytes(path, save(state, metadata={"mubench": json.dumps(metadata, sort_keys=True)}))


def check_build_recipe(work: Path, recipe: dict[str, Any]) -> None:
    """Keep a build's checkpoints (``<work>/checkpoints``) to the recipe they were trained with.

    ``recipe`` is what decides the weights (not ``steps`` or the time box: a time-boxed build resumes with them
    changed). It is recorded in ``<work>/recipe.json``; a build that finds checkpoints of another recipe, or
    checkpoints without a record (an older mubench), refuses: resuming would ship their weights under a manifest
    claiming the new recipe. Without checkpoints the new recipe is recorded and the build starts from scratch."""
    from ..config import to_plain
    from ..errors import UsageError
    from ..fsutil import atomic_write_text
    from ..protocols import protocol_diff
    from ..train.loop import list_checkpoints

    plain = json.loads(json.dumps(to_plain(recipe), sort_keys=True))
    path = work / RECIPE_FILE
    if list_checkpoints(work / "checkpoints"):
        try:
            saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, ValueError):
            saved = None
        if saved == plain:
            return
        start_over = f"delete {work} (`rm -r {work}`) to start over"
        if not isinstance(saved, dict):
            raise UsageError(f"{work} holds checkpoints but no readable record of the recipe they were trained with "
                             f"({path}; an older mubench did not write one): resuming could ship their weights under "
                             f"another recipe; {start_over}")

        differ = protocol_diff(saved, plain)
        raise UsageError(f"{work} holds checkpoints of another recipe ({'; '.join(differ)}); resuming would ship "
                         f"their weights under a manifest claiming this one: build with the recorded values to "
                         f"resume (recorded in {path}), or {start_over}")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(plain, indent=1, sort_keys=True) + "\n")


def build_recipe(params: Any, skip: tuple[str, ...], configs: dict[str, Any], tcfg: Any) -> dict[str, Any]:
    """What decides a build's checkpoints: its build parameters but ``skip`` (the step count, the time box, what only
    logs or evaluates), the model configs and the trainer's weight-deciding settings (:func:`check_build_recipe`)."""
    from dataclasses import asdict

    from ..train.loop import weight_fields

    return {**{k: v for k, v in asdict(params).items() if k not in skip}, "configs": configs,
            "train_config": {k: v for k, v in tcfg.as_dict().items() if k in weight_fields(tcfg)}}


def keeps_thread_count(build: Build) -> Build:
    """A build function that sets torch's thread count (:func:`start_build`) leaves its caller's as it found it,
    on return and on an exception."""

    @functools.wraps(build)
    def run(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        try:
            return build(*args, **kwargs)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    return run  # type: ignore[return-value]


def start_build(out: Path, name: str, params: Any, echo: bool) -> tuple[Path, BuildLog]:
    """A build's working folder (``<out>/.build``, its checkpoints and caches) and log, its thread count set from
    ``params.threads`` (the build function restores its caller's: :func:`keeps_thread_count`), and its first log
    lines (the recipe, the versions)."""
    from dataclasses import asdict

    work = out / ".build"
    work.mkdir(parents=True, exist_ok=True)
    log = BuildLog(out / "build.log", echo=echo)
    torch.set_num_threads(max(1, int(params.threads)))
    log(f"zoo build {name} -> {out} recipe={json.dumps(asdict(params), sort_keys=True)}")
    log(f"versions {json.dumps(versions(), sort_keys=True)} threads={torch.get_num_threads()}")
    return work, log


def train_config(params: Any) -> Any:
    """The trainer settings of a build recipe (``BuildParams`` / ``DiTBuildParams``): a :class:`TrainConfig`."""
    from ..train.config import TrainConfig

    return TrainConfig(steps=params.steps, lr=params.lr, batch_size=params.batch_size, warmup=params.warmup,
                       weight_decay=params.weight_decay, grad_clip=params.grad_clip, ema_decay=params.ema_decay,
                       checkpoint_every=params.checkpoint_every, seed=params.seed, log_every=params.log_every)


def train_in_chunks(module: nn.Module, loss_fn: Any, batches: Any, tcfg: Any, work: Path, params: Any,
                    log: BuildLog, show_progress: bool, name: str) -> tuple[Any, Optional[int]]:
    """:func:`mubench.train.loop.train` from the build's checkpoints in chunks of ``params.checkpoint_every`` steps, so a
    time box (``params.max_train_minutes``) is honoured at checkpoint boundaries; the EMA weights are copied into the
    module's trainable parameters. Returns (the train result, the step a spent time budget stopped at, or None)."""
    from ..train.loop import train

    deadline = time.time() + 60 * params.max_train_minutes if params.max_train_minutes else None

    def on_log(info: dict[str, Any]) -> None:
        log(f"{name} " + " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items()))

    target, stopped_at = 0, None
    while True:
        target = min(params.steps, target + max(1, params.checkpoint_every))
        result = train(module, loss_fn, batches, tcfg, out_dir=work, resume=True, show_progress=show_progress,
                       stop_at=target, on_log=on_log, description=f"micro {name}")
        if result.step >= params.steps:
            break
        if deadline is not None and time.time() > deadline:
            stopped_at = result.step
            log(f"time budget of {params.max_train_minutes} min spent: training stops at step {result.step} "
                f"(the LR is constant after warm-up, so a build with steps={result.step} gives the same weights)")
            break
    if result.ema is not None:
        result.ema.copy_to([q for q in module.parameters() if q.requires_grad])
    return result, stopped_at


def alphas_cumprod(scheduler_config: dict[str, Any]) -> torch.Tensor:
    """The training noise schedule's cumulative alphas (a DDPM scheduler from ``scheduler_config``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config).alphas_cumprod.clone()


@dataclass
class CodecDiffusionLoss:
    """What the micro world's trainer losses share: uint8 images encoded by ``codec``, each example's condition
    dropped with probability ``p_uncond`` (from the trainer's generator, once per example), and the diffusion loss of
    :func:`mubench.train.diffusion.diffusion_loss`. A subclass turns a batch into ``x0`` and a model function."""

    codec: Any
    alphas_cumprod: torch.Tensor
    p_uncond: float
    prediction_type: str
    min_snr_gamma: Optional[float]

    def dropped(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(n, generator=generator) < self.p_uncond

    def loss(self, model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
        from ..train.diffusion import diffusion_loss

        return diffusion_loss(model_fn, x0, self.alphas_cumprod, generator, prediction_type=self.prediction_type,
                              min_snr_gamma=self.min_snr_gamma)


class StageTimes:
    """Seconds per build stage (``with times.stage("train_s"):``) and, from :meth:`finish`, the whole build's."""

    def __init__(self) -> None:
        self.start = time.time()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, key: str) -> Iterator[None]:
        t0 = time.time()
        yield
        self.seconds[key] = round(time.time() - t0, 1)

    def finish(self) -> dict[str, float]:
        self.seconds["total_s"] = round(time.time() - self.start, 1)
        return dict(self.seconds)


def manifest_head(fmt: str, name: str) -> dict[str, Any]:
    """The fields a zoo manifest starts with: its format, its name and when it was built (UTC)."""
    return {"format": fmt, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def file_entries(out: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{name: {sha256, bytes}}`` of files written into ``out``, as a manifest lists them."""
    return {n: {"sha256": sha256_file(out / n), "bytes": (out / n).stat().st_size} for n in names}


def write_manifest(out: Path, manifest: dict[str, Any], log: BuildLog) -> None:
    """``<out>/manifest.json``, written atomically."""
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {out / 'manifest.json'}; total {manifest['timings']['total_s']}s")


def versions() -> dict[str, str]:
    """The versions of what a build ran on (recorded in its log and manifest)."""
    import accelerate
    import diffusers
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "numpy": np.__version__}


# --------------------------------------------------------------------------- the quality check


def pair_counts(prompts: list[Prompt]) -> dict[tuple[str, str], int]:
    """How many prompts of each (colour, shape) pair (the real references a Fréchet distance needs)."""
    counts: dict[tuple[str, str], int] = {}
    for _, c, s in prompts:
        counts[(c, s)] = counts.get((c, s), 0) + 1
    return counts


def score_single_object(images: torch.Tensor, prompts: list[Prompt]) -> dict[str, float]:
    """Oracle accuracies on single-object prompts: the largest object's colour, shape, both, and the
    GenEval-style ``single_object`` rule (right shape present, the largest of it in the right colour)."""
    from .oracle import Oracle

    oracle = Oracle()
    color = shape = both = correct = strict = 0
    for img, (caption, c, s) in zip(images, prompts):
        dets = oracle.detect(img)
        phrases, relation = S.parse_caption(caption)
        ok, _ = oracle.evaluate(dets, phrases, relation)
        correct += int(ok)
        if dets:
            color += int(dets[0].color == c)
            shape += int(dets[0].shape == s)
            both += int(dets[0].color == c and dets[0].shape == s)
            strict += int(len(dets) == 1 and dets[0].color == c and dets[0].shape == s)
    n = max(1, len(prompts))
    return {"single_object": correct / n, "color": color / n, "shape": shape / n, "both": both / n,
            "strict": strict / n, "n": len(prompts)}


def real_reference_images(pairs_needed: dict[tuple[str, str], int], split: str = "test",
                          seed: int = 0) -> np.ndarray:
    """Real single-object renders of ``split`` with the requested (colour, shape) counts."""
    want = dict(pairs_needed)
    out = []
    for scene in D.make_scenes(split, 40 * sum(want.values()) + 100, {"single": 1.0}, seed=seed):
        o = scene.objects[0]
        if want.get((o.color, o.shape), 0) > 0:
            want[(o.color, o.shape)] -= 1
            out.append(S.render(scene))
        if not any(want.values()):
            break
    return np.stack(out)


def evaluate_bundle(bundle, prompts: list[Prompt], seed: int, sampler: dict[str, Any],
                    batch: int = 48, denoiser: Optional[nn.Module] = None) -> tuple[dict[str, float], torch.Tensor]:
    """Sample one image per prompt with the shared sampler and score it with the oracle."""
    from ..methods.base import Prepared
    from ..sampler import SamplerConfig, sample_images
    from ..seeding import image_seed

    cfg = SamplerConfig(resolution=bundle.resolution, **sampler)
    prepared = Prepared(denoiser if denoiser is not None else bundle.denoiser)
    images = []
    seen: dict[str, int] = {}
    all_seeds = []
    for caption, _, _ in prompts:  # image k of a caption gets the same seed in every model compared
        all_seeds.append(image_seed(seed, "zoo-build", caption, seen.get(caption, 0)))
        seen[caption] = seen.get(caption, 0) + 1
    for i in range(0, len(prompts), batch):
        chunk = prompts[i:i + batch]
        images.append(sample_images(bundle, prepared, [p[0] for p in chunk], all_seeds[i:i + batch], cfg,
                                    per_image=False))
    images_t = torch.cat(images)
    return score_single_object(images_t, prompts), images_t


def clip_fid(clip_model, images: torch.Tensor, real_u8: np.ndarray) -> float:
    """Fréchet distance between micro-CLIP penultimate features of ``images`` and real images."""
    from ..metrics.fid import fid_from_features
    from .clip import MicroClipEncoder, uint8_to_float

    enc = MicroClipEncoder(clip_model)
    _, fake = enc.images(images.float())
    _, real = enc.images(uint8_to_float(real_u8))
    return float(fid_from_features(fake.double().numpy(), real.double().numpy(), force=True))
