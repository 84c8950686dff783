"""mubench's trainer core: one Accelerate-based loop for every trainable thing.

:func:`train` optimises *whatever parameters of ``module`` require grad* with a loss callable
``loss_fn(module, batch, generator) -> scalar tensor``. Only what is trainable differs between full
fine-tuning, LoRA, dropout fine-tuning, mask training and the micro world's own build, so they all
share this loop: warm-up, AdamW (or SGD), gradient clipping that really clips, EMA, fp32 on CPU
and autocast mixed precision on a GPU, a rich progress bar, a log file, and checkpoints every N
steps written atomically, from which a re-run resumes.

Resuming is bitwise: a checkpoint holds the trainable parameters, the optimizer state, the EMA,
the trainer's noise generator, the global torch RNG and the data position, and batches are a
function of the step index (:class:`BatchSource`), so a run killed at step k and resumed gives the
same parameters as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
from torch import nn

from ..errors import UsageError
from ..fsutil import atomic_write
from .config import TrainConfig
from .ema import EMA

LossFn = Callable[[nn.Module, Any, torch.Generator], torch.Tensor]
CKPT_RE = re.compile(r"^ckpt-(\d{8})\.pt$")


class BatchSource(Protocol):
    """Batches as a function of the optimizer step: ``source(step)`` is the batch of that step."""

    def __call__(self, step: int) -> Any: ...


class IteratorSource:
    """Adapts an iterator factory to a :class:`BatchSource`.

    ``factory()`` must return a fresh, deterministic iterator (same seed → same batches). Steps must
    be asked for in order; asking for step ``k`` first (a resume) re-creates the iterator and skips
    ``k`` batches, which is cheap for procedural data.
    """

    def __init__(self, factory: Callable[[], Iterator[Any]]) -> None:
        self.factory = factory
        self._it: Optional[Iterator[Any]] = None
        self._next = 0

    def __call__(self, step: int) -> Any:
        if self._it is None or step != self._next:
            if self._it is not None and step < self._next:
                raise ValueError(f"batches must be read in order (asked for {step}, next is {self._next})")
            if self._it is None or step < self._next:
                self._it, self._next = self.factory(), 0
            while self._next < step:
                next(self._it)
                self._next += 1
        batch = next(self._it)
        self._next += 1
        return batch


@dataclass
class TrainResult:
    """What a run did: final step, the logged losses, the EMA (if any) and timings."""

    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss over the log window)
    ema: Optional[EMA] = None
    wall_s: float = 0.0
    resumed_from: Optional[int] = None
    trainable_params: int = 0
    last_grad_norm: Optional[float] = None  # global norm before clipping, last step

    def final_loss(self) -> Optional[float]:
        return self.losses[-1][1] if self.losses else None


def trainable_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in module.named_parameters() if p.requires_grad]


def resolve_precision(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.mixed_precision != "auto":
        return cfg.mixed_precision
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


# --------------------------------------------------------------------------- checkpoints

def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, rename."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def _log_mean(window: list[float], done: int, opt: torch.optim.Optimizer, result: TrainResult, elapsed: float,
              log: Callable[[str], None]) -> dict[str, Any]:
    """The mean loss since the last log line, kept in ``result.losses`` and written as one ``key=value`` line."""
    mean = sum(window) / len(window)
    result.losses.append((done, mean))
    info = {"step": done, "loss": mean, "lr": opt.param_groups[0]["lr"], "grad_norm": result.last_grad_norm,
            "elapsed_s": round(elapsed, 1)}
    log(" ".join(f"{k}={_fmt(v)}" for k, v in info.items()))
    return info


def _optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _allow_new_precision(precision: str) -> None:
    """Accelerate keeps one process-wide AcceleratorState and refuses a second Accelerator with another mixed
    precision (e.g. two trainings in one process: a run that trains two methods, or the tests). In a single-process
    run the state holds nothing else worth keeping, so drop it; under a distributed launch keep it (one precision)."""
    from accelerate.state import AcceleratorState, PartialState

    if not AcceleratorState._shared_state:
        return
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and str(current) != precision and PartialState().num_processes == 1:
        AcceleratorState._reset_state(reset_partial_state=False)


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _load_latest(ckpt_dir: Path) -> Optional[dict]:
    """The newest readable checkpoint (a corrupt newest one falls back to the one before)."""
    for step, path in reversed(list_checkpoints(ckpt_dir)):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a truncated file from a crash: try the previous one
            continue
    return None


# --------------------------------------------------------------------------- the loop

def train(module: nn.Module, loss_fn: LossFn, batches: BatchSource, cfg: TrainConfig, *,
          out_dir: Optional[Path] = None, resume: bool = True, show_progress: bool = True,
          log_name: str = "train.log", stop_at: Optional[int] = None, device: Optional[torch.device] = None,
          on_log: Optional[Callable[[dict[str, Any]], None]] = None, description: str = "train",
          on_step: Optional[Callable[[int], None]] = None) -> TrainResult:
    """Train the parameters of ``module`` that require grad; returns a :class:`TrainResult`.

    ``out_dir`` holds ``checkpoints/`` and the log file (None: no files). ``stop_at`` ends the run
    after that step as if it had been killed there (tests, time-boxed builds). The module's
    trainable parameters hold the *raw* (non-EMA) weights afterwards; use ``result.ema.copy_to``
    for the averaged ones. ``on_step(done)`` is called after every optimizer step (e.g. to drive a
    progress bar owned by the caller, with ``show_progress=False``). A resume refuses a checkpoint past
    ``cfg.steps`` or written with other weight-deciding settings (:func:`check_resumable`).
    """
    from accelerate import Accelerator

    named = trainable_parameters(module)
    if not named:
        raise UsageError("nothing to train: no parameter of the module requires grad")
    params = [p for _, p in named]
    dev = device or next(module.parameters()).device
    precision = resolve_precision(cfg, dev)
    _allow_new_precision(precision)
    accelerator = Accelerator(mixed_precision=precision, cpu=dev.type == "cpu")
    model, opt = accelerator.prepare(module, _optimizer(cfg, params))
    ema = EMA(params, cfg.ema_decay) if cfg.ema_decay is not None else None
    ckpt_dir = out_dir / "checkpoints" if out_dir is not None else None
    gen = torch.Generator(device="cpu").manual_seed(int(cfg.seed))
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    result = TrainResult(step=0, ema=ema, trainable_params=sum(p.numel() for p in params))
    start_step = 0
    window: list[float] = []  # the losses since the last logged mean (kept in checkpoints: a resume logs the same)
    with _TrainLog(out_dir, log_name) as log, torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(cfg.seed))
        state = _load_latest(ckpt_dir) if resume and ckpt_dir is not None else None
        if state is not None:
            check_resumable(state, cfg, precision, ckpt_dir)
            start_step = _restore(state, named, opt, ema, gen, result, accelerator.scaler)
            window = [float(v) for v in state.get("window", [])]
            log(f"resumed from step {start_step}")
        log(f"start step={start_step} steps={cfg.steps} trainable={result.trainable_params} precision={precision} "
            f"config={cfg.as_dict()}")
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        step_once = _Stepper(model, opt, accelerator, loss_fn, batches, cfg, params, ema, gen, result, log)
        t0 = time.time()
        progress = _progress(show_progress)
        with progress:
            task = progress.add_task(description, total=cfg.steps, completed=start_step, info="")
            model.train()
            for step in range(start_step, end):
                window.append(step_once(step))
                done = step + 1
                result.step = done
                # a stop (``stop_at``) logs nothing of its own: it is a kill, so a resumed run logs what an
                # uninterrupted one does (the window since the last mean travels in the checkpoint)
                if done % max(1, cfg.log_every) == 0 or done == cfg.steps:
                    info = _log_mean(window, done, opt, result, time.time() - t0, log)
                    if on_log is not None:
                        on_log(info)
                    window = []
                    progress.update(task, info=f"loss {info['loss']:.4f}")
                progress.update(task, completed=done)
                if on_step is not None:
                    on_step(done)
                if ckpt_dir is not None and cfg.checkpoint_every and (done % cfg.checkpoint_every == 0
                                                                      or done == cfg.steps):
                    _save(ckpt_dir, done, named, opt, ema, gen, result, cfg, accelerator.scaler, window, precision)
        result.step = max(result.step, start_step)
        result.wall_s = time.time() - t0
        log(f"stopped at step {result.step} after {result.wall_s:.1f}s")
    accelerator.free_memory()
    return result


class _TrainLog(contextlib.AbstractContextManager):
    """The run's log file (appended to; None: no file), a timestamped line per call, closed however the run ends."""

    def __init__(self, out_dir: Optional[Path], name: str) -> None:
        self.fh = None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            self.fh = open(out_dir / name, "a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        if self.fh is not None:
            self.fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}\n")
            self.fh.flush()

    def __exit__(self, *exc: Any) -> None:
        if self.fh is not None:
            self.fh.close()


@dataclass
class _Stepper:
    """One optimizer step of step index ``step``: its batch, the LR of its schedule, the loss (refused when not
    finite), backward, clipping, the update and the EMA; returns the loss."""

    model: nn.Module
    opt: torch.optim.Optimizer
    accelerator: Any
    loss_fn: LossFn
    batches: BatchSource
    cfg: TrainConfig
    params: list[nn.Parameter]
    ema: Optional[EMA]
    gen: torch.Generator
    result: TrainResult
    log: Callable[[str], None]

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        batch = self.batches(step)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * cfg.lr_factor(step)
        with self.accelerator.autocast():
            loss = self.loss_fn(self.model, batch, self.gen)
        if not torch.isfinite(loss):
            self.log(f"step {step + 1}: non-finite loss {loss.item()}")
            raise FloatingPointError(f"non-finite loss at step {step + 1}")
        self.opt.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if cfg.grad_clip:
            norm = self.accelerator.clip_grad_norm_(self.params, cfg.grad_clip)
            self.result.last_grad_norm = float(norm)
        self.opt.step()
        if self.ema is not None:
            self.ema.update()
        return float(loss.detach())


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _progress(show: bool):
    from rich.progress import Progress, TextColumn

    from ..progress import bar_columns

    return Progress(*bar_columns(), TextColumn("{task.fields[info]}"), disable=not show, transient=False)


def _save(ckpt_dir: Path, step: int, named, opt, ema: Optional[EMA], gen: torch.Generator,
          result: TrainResult, cfg: TrainConfig, scaler: Any = None, window: Optional[list[float]] = None,
          precision: Optional[str] = None) -> None:
    state = {
        "precision": precision,
        "window": list(window or []),
        "scaler": scaler.state_dict() if scaler is not None else None,  # fp16: the loss scale a resume continues
        "step": step,
        "params": {n: p.detach().cpu().clone() for n, p in named},
        "optimizer": opt.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "losses": [[s, v] for s, v in result.losses],
        "config": cfg.as_dict(),
    }
    atomic_torch_save(state, ckpt_dir / f"ckpt-{step:08d}.pt")
    for old_step, path in list_checkpoints(ckpt_dir)[:-max(1, cfg.keep_checkpoints)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def weight_fields(cfg: TrainConfig) -> tuple[str, ...]:
    """The trainer settings that decide the weights a run reaches: all but the bookkeeping ones, and ``steps`` only
    under a cosine schedule (a constant-LR run stopped at step N is a run of N steps: time-boxed builds resume with
    another ``steps``). ``mixed_precision`` is compared resolved (``auto`` is fp32 on a CPU)."""
    skip = {"checkpoint_every", "keep_checkpoints", "log_every", "mixed_precision"}
    if cfg.lr_schedule != "cosine":
        skip.add("steps")
    return tuple(f.name for f in fields(TrainConfig) if f.name not in skip)


def check_resumable(state: dict, cfg: TrainConfig, precision: str, ckpt_dir: Path) -> None:
    """Refuse a checkpoint this run cannot continue: one past ``cfg.steps`` (a run does not go back), or one written
    under other weight-deciding settings (resuming would give the old run's weights under the new settings)."""
    step, saved = int(state["step"]), dict(state.get("config") or {})
    start_over = f"delete {ckpt_dir} to train from scratch"
    if step > cfg.steps:
        raise UsageError(f"the newest checkpoint in {ckpt_dir} is at step {step}, past this run's steps={cfg.steps}; "
                         f"a run cannot go back: {start_over}, or ask for steps >= {step}")
    now = cfg.as_dict()
    differ = [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in weight_fields(cfg) if k in saved and saved[k] != now[k]]
    if state.get("precision") is not None and state["precision"] != precision:
        differ.append(f"precision: {state['precision']!r} -> {precision!r}")
    if differ:
        raise UsageError(f"the checkpoints in {ckpt_dir} were written with other training settings "
                         f"({'; '.join(differ)}); resuming would continue the old run: {start_over}, or run again "
                         "with the checkpoints' settings")


def _restore(state: dict, named, opt, ema: Optional[EMA], gen: torch.Generator, result: TrainResult,
             scaler: Any = None) -> int:
    names = [n for n, _ in named]
    missing = [n for n in names if n not in state["params"]]
    if missing:
        raise UsageError(f"checkpoint does not match the trainable parameters (missing {missing[:3]})")
    with torch.no_grad():
        for n, p in named:
            p.copy_(state["params"][n].to(p.device, p.dtype))
    opt.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    result.losses = [(int(s), float(v)) for s, v in state.get("losses", [])]
    result.step = result.resumed_from = int(state["step"])
    return result.step
