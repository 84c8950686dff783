"""The trainer's diffusion loss (``mubench.train.diffusion``): zero for the exact target under each prediction
type, min-SNR weights, and training timesteps over the whole schedule."""
from __future__ import annotations

import pytest
import torch

from mubench.train.diffusion import diffusion_loss, min_snr_weight


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_diffusion_loss_is_zero_for_the_exact_target(ptype):
    from diffusers import DDPMScheduler

    ac = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    x0 = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def oracle(xt, t):  # recover the target from x_t and the known x0
        a = ac[t].view(-1, 1, 1, 1)
        sa, sb = a.sqrt(), (1 - a).sqrt()
        eps = (xt - sa * x0) / sb
        return {"epsilon": eps, "v_prediction": sa * eps - sb * x0, "sample": x0}[ptype]

    g = torch.Generator().manual_seed(1)
    t = torch.randint(1, 900, (6,), generator=torch.Generator().manual_seed(2))
    assert diffusion_loss(oracle, x0, ac, g, prediction_type=ptype, timesteps=t).item() < 1e-8
    zero = diffusion_loss(lambda xt, t: torch.zeros_like(xt), x0, ac, g, prediction_type=ptype, min_snr_gamma=5.0)
    assert zero.item() > 0.01


def test_min_snr_weights():
    snr = torch.tensor([0.5, 5.0, 50.0])
    assert torch.allclose(min_snr_weight(snr, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 0.1]))
    assert torch.allclose(min_snr_weight(snr, 5.0, "v_prediction"), torch.tensor([0.5 / 1.5, 5 / 6, 5 / 51]))


def test_diffusion_timesteps_cover_the_whole_schedule():
    """Training timesteps are uniform over every index of the schedule, 0 and T−1 included."""
    seen = []

    def model_fn(xt, t):
        seen.append(t.clone())
        return torch.zeros_like(xt)

    alphas = torch.tensor([0.99, 0.5, 0.01])
    diffusion_loss(model_fn, torch.zeros(300, 1, 2, 2), alphas, torch.Generator().manual_seed(0))
    counts = torch.bincount(torch.cat(seen), minlength=3)
    assert counts.tolist()[0] > 50 and counts.tolist()[2] > 50 and int(counts.sum()) == 300
