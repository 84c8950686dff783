"""The one denoising loop every method uses.

Classifier-free guidance, diffusers schedulers, text- or class-conditional denoisers, per-image
random streams and the method hooks of :class:`~mubench.methods.base.Prepared`. Image ``b`` of a
batch draws its initial noise (and ancestral noise, and method noise) only from ``generators[b]``.

The text encoder, the denoiser and the decoder see the images in chunks of exactly ``cfg.chunk`` images
(their CFG pairs together; the last chunk padded and the padding dropped), so an image's bits depend on its seed,
prompt, the chunk size, device and dtype, and not on how many images a call holds (:mod:`mubench.chunking`).
``chunk=1`` is the per-image path (one image's CFG pair per denoiser call).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                       EulerDiscreteScheduler)

from .chunking import pad
from .config import COMPILE_MODES
from .errors import UsageError
from .methods.base import Prepared, RowInfo, StepState
from .models.base import Conditioning, ModelBundle
from .seeding import image_generator

SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    # first-order DPM-Solver++ (DDIM-equivalent): what the released training-free MaskUNet code effectively ran, as
    # it re-entered the pipeline for every step and so cleared the multistep history (method.md §4.2 iii)
    "dpmsolver++1": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 1}),
    "euler": (EulerDiscreteScheduler, {}),
}


@dataclass
class SamplerConfig:
    scheduler: str = "ddim"
    steps: int = 50
    guidance: float = 7.5
    resolution: int = 512
    eta: float = 0.0
    chunk: int = 1  # images per denoiser / decoder call (padded): part of the protocol, see mubench.chunking
    compile: str = "none"  # torch.compile mode of the denoiser (none: eager): part of the protocol, see denoiser_of

    def as_dict(self) -> dict[str, Any]:
        out = {"scheduler": self.scheduler, "steps": self.steps, "guidance": self.guidance,
               "resolution": self.resolution, "eta": self.eta}
        if self.chunk != 1:  # chunk=1 is the per-image protocol that predates chunking: its hashes stay as they were
            out["chunk"] = self.chunk
        if self.compile != "none":  # likewise: eager runs keep their hashes
            out["compile"] = self.compile
        return out


def check_compilable(prepared: Prepared, cfg: SamplerConfig, method: str = "this method") -> None:
    """A clear error, before any image is made, for ``compile`` on a method that is not ``compile_safe``."""
    if cfg.compile != "none" and not prepared.compile_safe:
        raise UsageError(compile_refusal(cfg.compile, method))


def compile_toolchain_missing(device: torch.device) -> Optional[str]:
    """Why ``torch.compile`` cannot build kernels for ``device`` here (None: it can): inductor compiles C++ for a
    CPU (a C++ compiler: ``$CXX``, g++, c++ or clang++) and Triton kernels for a GPU."""
    import importlib.util
    import shutil

    if device.type == "cpu":
        names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
        if not any(shutil.which(n) for n in names):
            return (f"compile=... on the CPU needs a C++ compiler for torch.compile's kernels ({', '.join(names)} "
                    "not found); install one (Debian: apt-get install g++) or run with compile=none")
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "compile=... on a GPU needs Triton (pip install triton) for torch.compile's kernels; or compile=none"
    return None


def compile_refusal(mode: str, method: str) -> str:
    return (f"compile={mode}: {method} does what torch.compile cannot trace inside the denoiser call (mask noise "
            "drawn from torch generators inside masked conv or transformer layers, or masks optimised while "
            "sampling): it would re-trace layer by layer until it gives up (micro maskunet: 77 s instead of 1.2 s "
            "for 8 images). maskunet compiles with its default layers=decoder-attn on a UNet, or with "
            "method.noise=counter or method.deterministic=true; else run with compile=none")


def denoiser_of(prepared: Prepared, cfg: SamplerConfig) -> torch.nn.Module:
    """The module the sampler calls: the method's denoiser, eager (``compile: none``) or through ``torch.compile``
    in that mode (``reduce-overhead`` adds CUDA graphs on a GPU). Shapes are static (every chunk has the same
    shape), so one compilation serves a run; dynamo keeps compiled graphs with the module's code and guards, so
    wrapping the same module again (every batch) reuses them. Methods that are not ``compile_safe`` are refused
    (:func:`check_compilable`); compiled kernels round differently from eager ones, which is why the mode is part of
    the protocol."""
    prepared.use_compiled(cfg.compile != "none")
    if cfg.compile == "none":
        return prepared.denoiser
    check_compilable(prepared, cfg)
    return torch.compile(prepared.denoiser, mode=None if cfg.compile == "default" else cfg.compile, dynamic=False)


def resolve_sampler(bundle: ModelBundle, overrides: Any, method: Optional[dict[str, Any]] = None,
                    chunk: int = 1, compile: str = "none") -> SamplerConfig:
    """Suite sampler params (None = model default) → a complete :class:`SamplerConfig`.

    ``method``: settings a method needs whatever the suite says (``Prepared.sampler_overrides``), applied last.
    ``chunk``: images per denoiser call (the run's ``chunk=``; 1 = one image at a time).
    ``compile``: the run's ``compile=`` (:func:`denoiser_of`).
    """
    merged: dict[str, Any] = {"resolution": bundle.resolution}
    merged.update(bundle.default_sampler)
    for key in ("scheduler", "steps", "guidance", "resolution", "eta"):
        value = getattr(overrides, key, None)
        if value is not None:
            merged[key] = value
    for key, value in (method or {}).items():
        if key not in ("scheduler", "steps", "guidance", "resolution", "eta"):
            raise UsageError(f"a method asked for unknown sampler setting {key!r}")
        if value is not None:
            merged[key] = value
    cfg = SamplerConfig(**merged, chunk=int(chunk), compile=compile)
    if cfg.chunk < 1:
        raise UsageError(f"chunk must be >= 1, got {cfg.chunk}")
    if cfg.compile not in COMPILE_MODES:
        raise UsageError(f"unknown compile mode {cfg.compile!r}; expected one of {', '.join(COMPILE_MODES)}")
    if cfg.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {cfg.scheduler!r}; expected one of {', '.join(SCHEDULERS)}")
    if cfg.steps < 1:
        raise UsageError(f"sampler steps must be >= 1, got {cfg.steps}")
    return cfg


def make_scheduler(name: str, model_config: dict[str, Any]):
    cls, extra = SCHEDULERS[name]
    config = dict(model_config)
    if name != "ddpm":  # only DDPM uses a learned variance; the others get ε alone (call_denoiser), and DPM-Solver
        config.pop("variance_type", None)  # would otherwise slice a learned-sigma output a second time
    config.update(extra)
    return cls.from_config(config)


def call_denoiser(bundle: ModelBundle, denoiser: torch.nn.Module, x: torch.Tensor, t: torch.Tensor,
                  cond: Conditioning, keep_variance: bool = False) -> torch.Tensor:
    """One denoiser forward for a batch; returns the prediction with the latents' channel count (with
    ``keep_variance``, a learned-sigma model's 2C channels: ε then the variance interpolation, for DDPM)."""
    custom = bundle.extras.get("forward")
    if custom is not None:
        return custom(denoiser, x, t, cond)
    timesteps = t.expand(x.shape[0]) if t.ndim == 0 else t
    if bundle.conditioning_kind == "class":
        out = denoiser(x, timesteps, class_labels=cond.class_labels).sample
    else:
        out = denoiser(x, timesteps, encoder_hidden_states=cond.hidden_states,
                       encoder_attention_mask=cond.attention_mask).sample
    if out.shape[1] != x.shape[1] and not keep_variance:  # learned-sigma models (DiT) predict 2C channels
        out = out[:, : x.shape[1]]
    return out


def sample_latents(bundle: ModelBundle, prepared: Prepared, prompts: list[Any], seeds: list[int],
                   cfg: SamplerConfig, step_callback: Optional[Callable[[int], None]] = None,
                   per_image: Optional[bool] = None) -> torch.Tensor:
    """Run the denoising loop; returns final latents [B, C, h, w] (float32, CPU).

    The denoiser sees chunks of ``cfg.chunk`` images (module docstring). ``per_image`` overrides that: True = chunks
    of one image, False = all images in one call (builds and tests; images then depend on the call's size).
    """
    chunk = _chunk_size(cfg, len(prompts), per_image)
    return _denoise(bundle, prepared, prompts, seeds, cfg, chunk, step_callback)[: len(prompts)].float().cpu()


def _chunk_size(cfg: SamplerConfig, n: int, per_image: Optional[bool]) -> int:
    if per_image is None:
        return cfg.chunk
    return 1 if per_image else max(1, n)


def _initial_latents(bundle: ModelBundle, cfg: SamplerConfig, scheduler, generators: list[torch.Generator]):
    """Each image's starting noise from its own stream (float32, on the CPU), scaled for the scheduler."""
    shape = bundle.codec.latent_shape(cfg.resolution, cfg.resolution)
    noise = torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
    return noise * scheduler.init_noise_sigma


def _step_kwargs(cfg: SamplerConfig, generators: list[torch.Generator]) -> dict[str, Any]:
    """The scheduler step's options: DDIM's eta, and the per-image streams where a step draws ancestral noise."""
    step_kwargs: dict[str, Any] = {}
    if cfg.scheduler == "ddim":
        step_kwargs["eta"] = cfg.eta
    if cfg.scheduler == "ddpm" or (cfg.scheduler == "ddim" and cfg.eta > 0):
        step_kwargs["generator"] = generators  # per-image ancestral noise
    return step_kwargs


def _denoise(bundle: ModelBundle, prepared: Prepared, prompts: list[Any], seeds: list[int], cfg: SamplerConfig,
             chunk: int, step_callback: Optional[Callable[[int], None]]) -> torch.Tensor:
    """The loop over padded chunks; returns the padded final latents on the model's device."""
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt")
    prompts, seeds = pad(prompts, chunk), pad(seeds, chunk)  # padding rows get their own streams, then are dropped
    param = next(bundle.denoiser.parameters())
    device, dtype = param.device, param.dtype
    n = len(prompts)
    generators = [image_generator(s) for s in seeds]
    scheduler = make_scheduler(cfg.scheduler, bundle.scheduler_config)
    scheduler.set_timesteps(cfg.steps)
    latents = _initial_latents(bundle, cfg, scheduler, generators).to(device)
    use_cfg = cfg.guidance != 1.0
    keep_variance = uses_learned_variance(bundle, cfg)
    guidance_channels = bundle.extras.get("guidance_channels")
    chunks = [list(range(i, i + chunk)) for i in range(0, n, chunk)]
    with torch.no_grad():
        conds = [_chunk_conditioning(bundle, [prompts[b] for b in c], use_cfg) for c in chunks]
    rows = [_rows(c, use_cfg) for c in chunks]
    step_kwargs = _step_kwargs(cfg, generators)
    denoiser = denoiser_of(prepared, cfg)
    prepared.begin_batch(generators, [r for chunk_rows in rows for r in chunk_rows])
    try:
        with torch.no_grad():
            for i, t in enumerate(scheduler.timesteps):
                x_all = scheduler.scale_model_input(latents, t)
                out = None
                for c, cond, chunk_rows in zip(chunks, conds, rows):
                    x = x_all[c]
                    x = (torch.cat([x, x]) if use_cfg else x).to(dtype)
                    state = StepState(i, len(scheduler.timesteps), t, latents[c], chunk_rows, generators,
                                      extras={"guidance": cfg.guidance, "prompts": prompts,
                                              "scheduler": cfg.scheduler})
                    prepared.before_step(state)

                    def model_fn(x=x, t=t, cond=cond) -> torch.Tensor:
                        return call_denoiser(bundle, denoiser, x, t.to(device), cond, keep_variance).float()

                    pred = prepared.predict(state, model_fn)
                    if use_cfg:
                        pred = _guide(pred, cfg.guidance, guidance_channels, latents.shape[1])
                    if out is None:
                        out = torch.empty((n, *pred.shape[1:]), dtype=torch.float32, device=latents.device)
                    out[c] = pred
                latents = _step(scheduler, out, t, latents, step_kwargs)
                if step_callback is not None:
                    step_callback(i)
    finally:
        prepared.end_batch()
    return latents


def uses_learned_variance(bundle: ModelBundle, cfg: SamplerConfig) -> bool:
    """DDPM with a model whose schedule declares a learned variance (DiT): keep its 2C output channels."""
    return cfg.scheduler == "ddpm" and bundle.scheduler_config.get("variance_type") in ("learned", "learned_range")


def _guide(pred: torch.Tensor, scale: float, channels: Optional[int], latent_channels: int) -> torch.Tensor:
    """Classifier-free guidance of a [uncond; cond] prediction. ``channels`` (a model's ``guidance_channels``,
    DiT: 3) limits guidance to the first channels, as DiT's official sampler; the other channels (and a learned
    variance) are the conditional row's."""
    uncond, cond = pred.chunk(2)
    if channels is None and pred.shape[1] == latent_channels:
        return uncond + scale * (cond - uncond)
    k = latent_channels if channels is None else min(int(channels), latent_channels)
    guided = cond.clone()
    guided[:, :k] = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
    return guided


def _chunk_conditioning(bundle: ModelBundle, prompts: list[Any], use_cfg: bool) -> Conditioning:
    cond = bundle.conditioner.encode(prompts)
    return Conditioning.cat(bundle.conditioner.unconditional(len(prompts)), cond) if use_cfg else cond


def _rows(chunk: list[int], use_cfg: bool) -> list[RowInfo]:
    """Denoiser batch layout of one call: [uncond rows; cond rows] with CFG."""
    cond_rows = [RowInfo(b, True) for b in chunk]
    return ([RowInfo(b, False) for b in chunk] + cond_rows) if use_cfg else cond_rows


def _step(scheduler, out: torch.Tensor, t: torch.Tensor, latents: torch.Tensor, kwargs: dict[str, Any]):
    generators = kwargs.get("generator")
    if generators is None:
        return scheduler.step(out, t, latents, **kwargs, return_dict=True).prev_sample
    # diffusers draws ancestral noise with ``randn_tensor`` in the scheduler's module; draw it per image
    # from that image's own stream on the CPU instead, so it does not depend on batch size or device.
    module = sys.modules[type(scheduler).__module__]
    saved = module.randn_tensor

    def per_image_randn(shape, generator=None, device=None, dtype=None, layout=None):
        draws = [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in generators]
        return torch.stack(draws).to(device=device or latents.device, dtype=dtype or latents.dtype)

    module.randn_tensor = per_image_randn
    try:
        rest = {k: v for k, v in kwargs.items() if k != "generator"}
        return scheduler.step(out, t, latents, **rest, return_dict=True).prev_sample
    finally:
        module.randn_tensor = saved


def sample_images(bundle: ModelBundle, prepared: Prepared, prompts: list[Any], seeds: list[int],
                  cfg: SamplerConfig, step_callback: Optional[Callable[[int], None]] = None,
                  per_image: Optional[bool] = None) -> torch.Tensor:
    """Sample and decode: float32 images [B, 3, H, W] in [0, 1] on the CPU; the decoder sees the same padded
    chunks as the denoiser, for the same reason."""
    chunk = _chunk_size(cfg, len(prompts), per_image)
    latents = _denoise(bundle, prepared, prompts, seeds, cfg, chunk, step_callback)
    with torch.no_grad():
        images = torch.cat([bundle.codec.decode(part).float().cpu() for part in latents.split(chunk)])
    return images[: len(prompts)].clamp(0, 1)
