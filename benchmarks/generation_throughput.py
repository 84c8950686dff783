"""Generation throughput: ``mubench run``'s generation stage against a bare diffusers-style loop and against chunk=1.

    .venv/bin/python benchmarks/generation_throughput.py [--model micro] [--images 32] [--rounds 3] [--chunk N]
        [--batch-size N] [--chunks 8,16,32] [--device cpu|cuda] [--dtype float32|float16] [--weights pretrained]

Three ways to make the same ``--images`` images of the micro suite's prompts, with the suite's sampler (micro: DDIM 20,
CFG 4, 64 px), the base model, in interleaved rounds (A B C, A B C, ...; median images/s of each):

- ``harness``: ``Runner.generate`` — the stage ``mubench run`` runs — at the run's default ``chunk`` (or ``--chunk``)
  and ``batch_size``, into a fresh cache each round (PNG writes included: what a run pays);
- ``bare``: the loop a user would write with diffusers for the same model, scheduler, CFG and batch: encode the
  batch's prompts once, one ``randn`` for the batch, ``unet(cat([x, x]), t, encoder_hidden_states)`` per step,
  ``scheduler.step``, one VAE decode per batch of ``chunk`` images; no per-image streams, no caching, no PNG writes.
  This is the physical limit for the harness;
- ``chunk1``: ``Runner.generate`` at ``chunk=1`` (one image's CFG pair per denoiser call: the old per-image protocol).

``--chunks 8,16,32`` also times the harness at each chunk (what the default chunk was chosen from). The last line
printed is one JSON object: ``harness_images_per_s``, ``bare_images_per_s``, ``chunk1_images_per_s``,
``ratio_vs_bare``, ``ratio_vs_chunk1``, ``chunk``, ``device`` (+ rounds, images, per-chunk figures, versions).
Targets (issue 13): ratio_vs_bare >= 0.90 and, on the micro world on a 2-core CPU, ratio_vs_chunk1 >= 2.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="micro", help="base model (default micro)")
    ap.add_argument("--suite", default="micro", help="suite whose prompts and sampler are used (default micro)")
    ap.add_argument("--images", type=int, default=32, help="images per way per round (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--chunk", type=int, default=None, help="harness chunk (default: the run's default)")
    ap.add_argument("--batch-size", type=int, default=None, help="harness batch_size (default: the run's)")
    ap.add_argument("--chunks", default="", help="also time the harness at these chunks, e.g. 8,16,32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--weights", default="pretrained", help="pretrained | random")
    ap.add_argument("--model-arg", action="append", default=[], help="extra model.KEY=VALUE (repeatable)")
    ap.add_argument("--suite-arg", action="append", default=[], help="extra suite.KEY=VALUE (repeatable)")
    return ap.parse_args()


class Setup:
    """One loaded model and the run pieces every way shares."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        from mubench.chunking import default_chunk
        from mubench.config import resolve
        from mubench.registry import load_registries
        from mubench.runner import Runner
        from mubench.sampler import resolve_sampler

        self.regs = load_registries(plugins=False)
        self.tmp = workdir  # every round's cache (images included): removed by main() when done
        keys = [f"suite={args.suite}", f"model={args.model}", f"device={args.device}", f"dtype={args.dtype}",
                f"weights={args.weights}", f"cache={self.tmp / 'base'}", *args.model_arg, *args.suite_arg]
        if args.batch_size:
            keys.append(f"batch_size={args.batch_size}")
        self.cfg = resolve(keys, self.regs)
        self.runner = Runner(self.cfg, self.regs)
        self.bundle = self.runner.load_model()
        self.prepared = self.runner.prepare(self.bundle)
        self.chunk = args.chunk or default_chunk(self.runner.device)
        self.sampler = resolve_sampler(self.bundle, getattr(self.runner.suite.params, "sampler", None),
                                       chunk=self.chunk)
        items = self.runner.items()
        self.items = [items[i % len(items)] for i in range(args.images)]
        self.rounds = 0

    def harness(self, chunk: int) -> float:
        """Seconds for ``Runner.generate`` at ``chunk`` into a fresh cache."""
        from mubench.cache import Cache

        self.rounds += 1
        self.runner.cache = Cache(self.tmp / f"r{self.rounds}")
        sampler = replace(self.sampler, chunk=chunk)
        planned = self.runner.plan(self.bundle, self.prepared, sampler, self.items)
        t0 = time.perf_counter()
        self.runner.generate(self.bundle, self.prepared, sampler, planned)
        _sync(self.runner.device)
        return time.perf_counter() - t0

    def bare(self) -> float:
        """Seconds for the plain diffusers-style loop over the same images, ``chunk`` images per batch."""
        from mubench.sampler import make_scheduler

        bundle, cfg = self.bundle, self.sampler
        unet, device = bundle.denoiser, self.runner.device
        dtype = next(unet.parameters()).dtype
        c, h, w = bundle.codec.latent_shape(cfg.resolution, cfg.resolution)
        prompts = [it.prompt for it in self.items]
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(prompts), self.chunk):
                batch = prompts[start:start + self.chunk]
                cond, uncond = bundle.conditioner.encode(batch), bundle.conditioner.unconditional(len(batch))
                text = torch.cat([uncond.hidden_states, cond.hidden_states]).to(device, dtype)
                scheduler = make_scheduler(cfg.scheduler, bundle.scheduler_config)
                scheduler.set_timesteps(cfg.steps, device=device)
                gen = torch.Generator(device="cpu").manual_seed(start)
                latents = torch.randn((len(batch), c, h, w), generator=gen).to(device) * scheduler.init_noise_sigma
                for t in scheduler.timesteps:
                    x = scheduler.scale_model_input(torch.cat([latents, latents]), t).to(dtype)
                    eps_u, eps_c = unet(x, t, encoder_hidden_states=text).sample.float().chunk(2)
                    latents = scheduler.step(eps_u + cfg.guidance * (eps_c - eps_u), t, latents).prev_sample
                bundle.codec.decode(latents).float().cpu()
        _sync(device)
        return time.perf_counter() - t0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory(prefix="mubench-genbench-") as workdir:
        measure(args, Setup(args, Path(workdir)))


def measure(args: argparse.Namespace, s: Setup) -> None:
    extra = sorted({int(v) for v in args.chunks.split(",") if v.strip()} - {s.chunk, 1})
    ways = {"harness": lambda: s.harness(s.chunk), "bare": s.bare, "chunk1": lambda: s.harness(1)}
    ways.update({f"harness_chunk{k}": (lambda k=k: s.harness(k)) for k in extra})
    print(f"{args.images} images per way, {args.rounds} interleaved rounds, chunk {s.chunk}, device {s.runner.device}, "
          f"sampler {s.sampler.as_dict()}", file=sys.stderr)
    s.harness(s.chunk)  # warm-up (allocator, kernels, first PNG writes): not timed
    s.bare()
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(args.rounds):
        for name, fn in ways.items():
            seconds[name].append(fn())
            print(f"round {r + 1}: {name:>18} {args.images / seconds[name][-1]:7.2f} images/s", file=sys.stderr)
    ips = {k: args.images / statistics.median(v) for k, v in seconds.items()}
    out = {
        "benchmark": "generation_throughput", "model": args.model, "suite": args.suite, "device": str(s.runner.device),
        "device_name": torch.cuda.get_device_name(s.runner.device) if s.runner.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "dtype": str(next(s.bundle.denoiser.parameters()).dtype),
        "images": args.images, "rounds": args.rounds, "chunk": s.chunk, "batch_size": s.cfg.run.batch_size,
        "sampler": s.sampler.as_dict(),
        "harness_images_per_s": round(ips["harness"], 3), "bare_images_per_s": round(ips["bare"], 3),
        "chunk1_images_per_s": round(ips["chunk1"], 3),
        "ratio_vs_bare": round(ips["harness"] / ips["bare"], 3),
        "ratio_vs_chunk1": round(ips["harness"] / ips["chunk1"], 3),
        "per_chunk_images_per_s": {str(k): round(ips[f"harness_chunk{k}"], 3) for k in extra},
        "seconds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "torch": torch.__version__,
    }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
