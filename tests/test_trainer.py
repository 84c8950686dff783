"""mubench's trainer core: learning, bitwise resume, real gradient clipping, logging and checkpoints (the diffusion
loss: test_diffusion_loss.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mubench.errors import UsageError
from mubench.train.config import TrainConfig
from mubench.train.loop import IteratorSource, list_checkpoints, train


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.frozen(x))


W_TRUE = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batches as a function of the step (what makes a resume bitwise)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 4, generator=g)
    return x, x @ W_TRUE


def mse_with_noise(module: nn.Module, batch, generator: torch.Generator) -> torch.Tensor:
    x, y = batch
    x = x + 0.01 * torch.randn(x.shape, generator=generator)  # exercises the trainer's generator
    return ((module(x) - y) ** 2).mean()


def flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_loss_decreases_and_only_trainable_params_move():
    net = TinyNet()
    frozen_before = net.frozen.weight.clone()
    cfg = TrainConfig(steps=60, lr=3e-2, warmup=5, log_every=10, seed=0)
    res = train(net, mse_with_noise, batch_at, cfg, show_progress=False)
    assert res.step == 60
    first, last = res.losses[0][1], res.losses[-1][1]
    assert last < 0.3 * first, (first, last)
    assert torch.equal(net.frozen.weight, frozen_before)
    assert res.trainable_params == sum(p.numel() for p in net.body.parameters())


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    cfg = TrainConfig(steps=12, lr=5e-3, warmup=3, ema_decay=0.9, checkpoint_every=4, log_every=2, seed=7)
    full = TinyNet()
    res_full = train(full, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "a", show_progress=False)

    part = TinyNet()
    first = train(part, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False, stop_at=6)
    assert first.step == 6
    assert [s for s, _ in list_checkpoints(tmp_path / "b" / "checkpoints")] == [4]  # step 6 is lost, as in a crash
    fresh = TinyNet()  # a new process: fresh module, resumes from step 4
    res = train(fresh, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False)
    assert res.resumed_from == 4 and res.step == 12
    assert torch.equal(flat(fresh), flat(full))
    for a, b in zip(res.ema.shadow, res_full.ema.shadow):
        assert torch.equal(a, b)
    assert res.losses == res_full.losses
    # a finished run re-run is a no-op that keeps the weights
    again = TinyNet()
    res2 = train(again, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False)
    assert res2.resumed_from == 12 and torch.equal(flat(again), flat(full))
    assert (tmp_path / "b" / "train.log").read_text().count("resumed from step") == 2


def test_corrupt_latest_checkpoint_falls_back(tmp_path):
    cfg = TrainConfig(steps=8, lr=5e-3, checkpoint_every=2, keep_checkpoints=3, seed=1)
    ref = TinyNet()
    train(ref, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "a", show_progress=False)
    net = TinyNet()
    train(net, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False, stop_at=6)
    ckpts = list_checkpoints(tmp_path / "b" / "checkpoints")
    ckpts[-1][1].write_bytes(b"truncated")
    net2 = TinyNet()
    res = train(net2, mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False)
    assert res.resumed_from == 4
    assert torch.equal(flat(net2), flat(ref))


def test_grad_clip_really_clips():
    def big_loss(module, batch, generator):
        return 1000.0 * module.weight.sum() * 0 + (1000.0 * module(batch)).sum()

    def step_norm(clip):
        torch.manual_seed(0)
        lin = nn.Linear(3, 2)
        before = torch.cat([p.detach().flatten().clone() for p in lin.parameters()])
        cfg = TrainConfig(steps=1, lr=1.0, optimizer="sgd", grad_clip=clip, seed=0)
        res = train(lin, big_loss, lambda s: torch.ones(4, 3), cfg, show_progress=False)
        after = torch.cat([p.detach().flatten() for p in lin.parameters()])
        return float((after - before).norm()), res.last_grad_norm

    clipped, pre_norm = step_norm(0.1)
    assert pre_norm > 100  # the raw gradient is huge ...
    assert clipped == pytest.approx(0.1, rel=1e-4)  # ... and the SGD update has exactly the clip norm
    unclipped, _ = step_norm(None)
    assert unclipped > 100


def test_iterator_source_skips_to_the_asked_step():
    def factory():
        i = 0
        while True:
            yield i
            i += 1

    src = IteratorSource(factory)
    assert [src(0), src(1), src(2)] == [0, 1, 2]
    fresh = IteratorSource(factory)
    assert fresh(5) == 5 and fresh(6) == 6
    with pytest.raises(ValueError):
        fresh(2)


def test_nothing_trainable_and_bad_config_are_usage_errors():
    net = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(UsageError):
        train(net, lambda m, b, g: m(b).sum(), lambda s: torch.ones(1, 2), TrainConfig(steps=1),
              show_progress=False)
    with pytest.raises(UsageError):
        TrainConfig(optimizer="lamb")


def test_a_checkpoint_holds_the_fp16_loss_scale_a_resume_continues(tmp_path):
    """Under fp16 the GradScaler's scale and growth tracker are training state: a resume that reset them would not
    be the uninterrupted run."""
    from mubench.train.loop import TrainResult, _restore, _save

    w = nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    gen = torch.Generator().manual_seed(0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 256.0, "_growth_tracker": 7})
    _save(tmp_path, 5, [("w", w)], opt, None, gen, TrainResult(step=5), TrainConfig(), scaler)
    state = torch.load(tmp_path / "ckpt-00000005.pt", weights_only=False)
    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _restore(state, [("w", w)], opt, None, gen, TrainResult(step=0), fresh)
    assert fresh.state_dict()["scale"] == 256.0 and fresh.state_dict()["_growth_tracker"] == 7


def test_auto_precision_is_keyed_as_what_it_trains_in(monkeypatch, tmp_path):
    """``mixed_precision: auto`` is bf16 on a GPU and fp32 on the CPU: the two artifacts must not share a key."""
    from pathlib import Path

    from mubench.config import resolve_component
    from mubench.methods.base import MethodContext
    from mubench.models.base import LoadContext
    from mubench.micro.model import MicroModel
    from mubench.registry import load_registries

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    regs = load_registries()
    bundle = MicroModel.load(MicroModel.Params(), LoadContext(torch.device("cpu"), torch.float32, "random"))

    def method(**train):
        comp = resolve_component("method", "maskunet", {"train": {"data": "micro", **train}}, regs)
        return regs.methods.get(comp.kind)(comp.params, comp.name)

    def key(device, **train):
        return method(**train).artifact_location(bundle, MethodContext(artifacts_dir=Path(tmp_path), device=device))[0]

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert key(cpu) != key(gpu) and key(cpu) == key(cpu, mixed_precision="auto")
    # the GPU's auto is keyed as bf16: the spec a CPU bf16 run keys (which also holds the CPU's thread count)
    cpu_bf16 = method(mixed_precision="bf16").keyed_spec(bundle, cpu)
    assert cpu_bf16["train"].pop("threads") == torch.get_num_threads()
    assert method().keyed_spec(bundle, gpu) == cpu_bf16


def test_a_resume_between_two_logged_means_logs_what_the_uninterrupted_run_logs(tmp_path):
    """Checkpoints every 3 steps, means logged every 4: the losses since the last mean travel in the checkpoint, so
    the resumed run's logged losses (and its final_loss) are the uninterrupted run's."""
    cfg = TrainConfig(steps=12, lr=5e-3, checkpoint_every=3, log_every=4, seed=3)
    full = train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path / "a", show_progress=False)
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False, stop_at=7)
    res = train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False)
    assert res.resumed_from == 6 and res.losses == full.losses and res.final_loss() == full.final_loss()


def _logged_losses(log_file) -> list[str]:
    """The (step, loss) pairs of a train.log, in order (a resumed run's file holds both runs)."""
    import re

    return re.findall(r" (step=\d+ loss=\S+) ", log_file.read_text())


def test_a_stop_between_two_logged_means_logs_nothing_of_its_own(tmp_path):
    """stop_at=6 with means every 4 steps: the stop is a kill, not a partial mean; the resumed run logs (result and
    train.log) exactly what the uninterrupted run logs."""
    cfg = TrainConfig(steps=12, lr=5e-3, checkpoint_every=3, log_every=4, seed=3)
    full = train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path / "a", show_progress=False)
    stopped = train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False, stop_at=6)
    assert stopped.losses == full.losses[:1]
    res = train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path / "b", show_progress=False)
    assert res.resumed_from == 6 and res.losses == full.losses and res.final_loss() == full.final_loss()
    assert _logged_losses(tmp_path / "b" / "train.log") == _logged_losses(tmp_path / "a" / "train.log")


def test_a_resume_refuses_checkpoints_of_other_settings_or_past_its_steps(tmp_path):
    cfg = TrainConfig(steps=6, lr=5e-3, checkpoint_every=2, log_every=2, seed=3)
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False, stop_at=4)
    for other in ({"lr": 1e-2}, {"seed": 4}, {"batch_size": 8}, {"ema_decay": 0.9}, {"lr_schedule": "cosine"}):
        with pytest.raises(UsageError, match="other training settings") as err:
            train(TinyNet(), mse_with_noise, batch_at, TrainConfig(**{**cfg.as_dict(), **other}), out_dir=tmp_path,
                  show_progress=False)
        assert next(iter(other)) in str(err.value)
    with pytest.raises(UsageError, match="past this run's steps=3"):
        train(TinyNet(), mse_with_noise, batch_at, TrainConfig(**{**cfg.as_dict(), "steps": 3}), out_dir=tmp_path,
              show_progress=False)
    # what does not decide the weights may change: more steps (constant LR), checkpoints, logging
    res = train(TinyNet(), mse_with_noise, batch_at, TrainConfig(**{**cfg.as_dict(), "steps": 8, "log_every": 1,
                                                                    "checkpoint_every": 4}),
                out_dir=tmp_path, show_progress=False)
    assert res.resumed_from == 4 and res.step == 8


def trained(**overrides) -> tuple[nn.Module, object]:
    """TinyNet after 4 steps of mse_with_noise with ``overrides`` on the config (and the TrainResult)."""
    net = TinyNet()
    cfg = TrainConfig(**{"steps": 4, "lr": 1e-2, "log_every": 1, "seed": 0, **overrides})
    return net, train(net, mse_with_noise, batch_at, cfg, show_progress=False)


def test_adamw_uses_the_recipes_betas_and_weight_decay():
    """betas and weight_decay of the recipe reach the optimizer (they are in the artifact key, so they must change
    the weights)."""
    base = flat(trained()[0])
    assert not torch.equal(flat(trained(betas=(0.5, 0.6))[0]), base)
    assert not torch.equal(flat(trained(weight_decay=0.5)[0]), base)


def test_each_step_uses_the_scheduled_learning_rate():
    """The optimizer's learning rate at every step is ``lr * lr_factor(step)`` (warm-up, then cosine decay)."""
    cfg = TrainConfig(steps=8, lr=1e-2, warmup=3, lr_schedule="cosine", min_lr_ratio=0.2, log_every=1, seed=0)
    seen: list[float] = []
    train(TinyNet(), mse_with_noise, batch_at, cfg, show_progress=False, on_log=lambda info: seen.append(info["lr"]))
    assert seen == pytest.approx([cfg.lr * cfg.lr_factor(s) for s in range(8)])
    assert seen[0] == pytest.approx(1e-2 / 3) and seen[2] == pytest.approx(1e-2)  # warm-up reaches lr at its end
    assert max(seen) == pytest.approx(1e-2)


def test_lr_factor_warmup_and_cosine_end_points():
    """Warm-up is linear from lr/warmup to lr at its last step; the cosine decay starts at 1 after it and ends at
    ``min_lr_ratio`` at the last step."""
    cfg = TrainConfig(steps=10, warmup=4, lr_schedule="cosine", min_lr_ratio=0.1)
    assert [cfg.lr_factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cfg.lr_factor(4) == pytest.approx(1.0)
    assert cfg.lr_factor(10) == pytest.approx(0.1) and cfg.lr_factor(7) == pytest.approx(0.55)
    assert TrainConfig(steps=10, warmup=4).lr_factor(4) == 1.0


def test_ema_is_the_warmed_up_average_of_the_trained_weights():
    """The EMA shadow is ``s ← d·s + (1−d)·p`` after every step with ``d = min(decay, (1+n)/(10+n))``."""
    net = TinyNet()
    expected = [p.detach().clone() for p in net.parameters()]
    n = [0]

    def on_step(done: int) -> None:
        d = min(0.5, (1 + n[0]) / (10 + n[0]))
        for e, p in zip(expected, net.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        n[0] += 1

    cfg = TrainConfig(steps=5, lr=1e-2, ema_decay=0.5, log_every=1, seed=0)
    res = train(net, mse_with_noise, batch_at, cfg, show_progress=False, on_step=on_step)
    assert res.ema.num_updates == 5
    for s, e in zip(res.ema.shadow, expected):
        assert torch.allclose(s, e, atol=1e-6)
    assert not torch.allclose(res.ema.shadow[0], next(TinyNet().parameters()))


def test_ema_decay_one_is_refused():
    """An EMA decay of 1 would never move the averaged weights: refused like other bad settings."""
    with pytest.raises(UsageError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_a_run_does_not_depend_on_the_global_rng():
    """The trainer seeds the global RNG (dropout draws from it) from ``cfg.seed``: a run gives the same weights
    whatever the caller's RNG state, and the caller's state is left as it was."""
    cfg = TrainConfig(steps=4, lr=1e-2, log_every=1, seed=0)
    nets = [TinyNet(), TinyNet()]
    torch.manual_seed(123)
    train(nets[0], mse_with_noise, batch_at, cfg, show_progress=False)
    torch.manual_seed(456)
    state = torch.get_rng_state()
    train(nets[1], mse_with_noise, batch_at, cfg, show_progress=False)
    assert torch.equal(flat(nets[0]), flat(nets[1]))
    assert torch.equal(torch.get_rng_state(), state)


def test_a_non_finite_loss_stops_the_run():
    """A NaN loss stops training with an error instead of stepping the weights into NaN."""
    net = TinyNet()
    before = flat(net).clone()

    def nan_loss(module, batch, generator):
        return mse_with_noise(module, batch, generator) * float("nan")

    with pytest.raises(FloatingPointError, match="non-finite loss at step 1"):
        train(net, nan_loss, batch_at, TrainConfig(steps=2, lr=1e-2, seed=0), show_progress=False)
    assert torch.equal(flat(net), before)


def test_the_last_step_is_checkpointed_and_only_keep_checkpoints_stay(tmp_path):
    """A finished run leaves a checkpoint at its last step even off the checkpoint grid, and prunes to
    ``keep_checkpoints`` files."""
    cfg = TrainConfig(steps=7, lr=1e-2, checkpoint_every=2, keep_checkpoints=2, log_every=1, seed=0)
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [6, 7]


@pytest.mark.parametrize("other", [{"weight_decay": 0.1}, {"betas": (0.5, 0.9)}, {"grad_clip": 0.5},
                                   {"warmup": 2}, {"optimizer": "sgd"}])


def test_a_resume_refuses_other_optimizer_settings(tmp_path, other):
    """Every weight-deciding optimizer setting is compared when resuming (else the old run's state continues under
    the new settings and is saved under the new key)."""
    cfg = TrainConfig(steps=6, lr=5e-3, checkpoint_every=2, log_every=2, seed=3)
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False, stop_at=2)
    with pytest.raises(UsageError, match="other training settings"):
        train(TinyNet(), mse_with_noise, batch_at, TrainConfig(**{**cfg.as_dict(), **other}), out_dir=tmp_path, show_progress=False)


def test_a_resume_refuses_a_checkpoint_of_another_precision(tmp_path):
    """A checkpoint written under another (resolved) precision is not continued."""
    cfg = TrainConfig(steps=6, lr=5e-3, checkpoint_every=2, log_every=2, seed=3)
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False, stop_at=2)
    (_, path), = list_checkpoints(tmp_path / "checkpoints")
    state = torch.load(path, weights_only=True)
    assert state["precision"] == "no"
    state["precision"] = "bf16"
    torch.save(state, path)
    with pytest.raises(UsageError, match="precision"):
        train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False)


def test_the_last_partial_window_of_losses_is_logged_at_the_end():
    """With ``steps`` not a multiple of ``log_every``, the losses since the last logged mean are logged at the last
    step: 7 steps logged every 3 give means at steps 3, 6 and 7, the last one over step 7's loss alone."""
    logged = []
    cfg = TrainConfig(steps=7, lr=1e-2, log_every=3, seed=0)
    res = train(TinyNet(), mse_with_noise, batch_at, cfg, show_progress=False, on_log=logged.append)
    assert [s for s, _ in res.losses] == [3, 6, 7] == [i["step"] for i in logged]


def test_on_step_counts_the_steps_done_and_continues_after_a_resume(tmp_path):
    """``on_step(done)`` gets the number of optimizer steps done so far (1, 2, …), a resumed run's from where its
    checkpoint left off."""
    cfg = TrainConfig(steps=5, lr=1e-2, checkpoint_every=2, seed=0)
    first, second = [], []
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False, stop_at=3,
          on_step=first.append)
    train(TinyNet(), mse_with_noise, batch_at, cfg, out_dir=tmp_path, show_progress=False, on_step=second.append)
    assert first == [1, 2, 3] and second == [3, 4, 5]  # the resume starts from the step-2 checkpoint

