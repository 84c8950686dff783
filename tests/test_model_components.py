"""Model plug-ins: what decides pixels (scheduler, VAE scaling, conditioning order and masks) and what the
fingerprint (the cache key of every image) holds."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from mubench.models.base import Conditioning, LoadContext

META_RANDOM = LoadContext(torch.device("meta"), torch.float32, weights="random")
CPU = LoadContext(torch.device("cpu"), torch.float32)


def test_sd15_random_weights_keep_sd15s_diffusion_and_vae_scaling_and_key_the_seed():
    """weights=random builds SD 1.5's ε-prediction diffusion and 0.18215 latent scale, and two seeds are two
    different models (different fingerprints: their images must never share a cache entry)."""
    from mubench.models.sd15 import SD15, SD15Params

    b0 = SD15.load(SD15Params(seed=0), META_RANDOM)
    assert b0.scheduler_config["prediction_type"] == "epsilon"
    assert b0.codec.scaling_factor == pytest.approx(0.18215)
    assert SD15.load(SD15Params(seed=1), META_RANDOM).fingerprint != b0.fingerprint


def test_sd15_reduced_fingerprint_keys_the_seed():
    """The efficiency model's random weights depend on its seed, so its fingerprint must too."""
    from mubench.models.sd15_reduced import SD15Reduced, SD15ReducedParams

    a = SD15Reduced.load(SD15ReducedParams(seed=0), META_RANDOM)
    assert a.fingerprint != SD15Reduced.load(SD15ReducedParams(seed=1), META_RANDOM).fingerprint
    assert a.denoiser.config.sample_size == 32  # 256 px images, 8x VAE


def test_tiny_sd_fingerprint_keys_seed_and_token_length():
    """tiny-sd's weights depend on the seed and its text encoder on max_length: both are in the fingerprint."""
    from mubench.models.tiny import TinySD, TinySDParams

    base = TinySD.load(TinySDParams(), CPU).fingerprint
    assert TinySD.load(TinySDParams(seed=1), CPU).fingerprint != base
    assert TinySD.load(TinySDParams(max_length=12), CPU).fingerprint != base


def test_conditioning_cat_keeps_the_first_batch_first():
    """Classifier-free guidance concatenates (unconditional, conditional): the order of every field is kept."""
    a = Conditioning(torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.tensor([7]))
    b = Conditioning(torch.ones(1, 2, 3), torch.ones(1, 2), torch.tensor([9]))
    c = Conditioning.cat(a, b)
    assert c.hidden_states[:, 0, 0].tolist() == [0.0, 1.0]
    assert c.attention_mask[:, 0].tolist() == [0.0, 1.0]
    assert c.class_labels.tolist() == [7, 9]


class _Dist:
    def __init__(self, x):
        self.mean, self.std = x + 0.5, torch.full_like(x, 2.0)


class _FakeVae:
    """Identity-like VAE: the latent mean is the input + 0.5, std 2, decode returns its input."""

    dtype = torch.float32
    config = SimpleNamespace(block_out_channels=(4, 4, 4), latent_channels=4, scaling_factor=0.5)

    def encode(self, x):
        self.seen = x
        return SimpleNamespace(latent_dist=_Dist(x))

    def decode(self, z):
        self.decoded = z
        return SimpleNamespace(sample=z)


def test_vae_codec_maps_pixels_to_scaled_latents_and_back():
    """Pixels in [0,1] go to the VAE as [-1,1], latents are scaled by the VAE's factor (mean or mean + std·ε);
    decoding divides the factor out and maps [-1,1] back to [0,1]."""
    from mubench.models.codecs import PixelCodec, VaeCodec

    vae = _FakeVae()
    codec = VaeCodec(vae)
    assert codec.stochastic and codec.scaling_factor == 0.5
    assert codec.latent_shape(32, 16) == (4, 8, 4)
    img = torch.full((1, 3, 2, 2), 0.75)
    z = codec.encode(img)
    assert torch.allclose(vae.seen, torch.full_like(img, 0.5))
    assert torch.allclose(z, torch.full_like(img, (0.5 + 0.5) * 0.5))
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(img.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(codec.encode_sample(img, g), (1.0 + 2.0 * eps) * 0.5)
    out = codec.decode(torch.full((1, 3, 2, 2), 0.25))
    assert torch.allclose(vae.decoded, torch.full((1, 3, 2, 2), 0.5))
    assert torch.allclose(out, torch.full((1, 3, 2, 2), 0.75))
    pix = PixelCodec()
    assert torch.allclose(pix.encode(img), torch.full_like(img, 0.5))
    assert torch.allclose(pix.decode(pix.encode(img)), img)


class _FakeTextEncoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.masks = []

    def forward(self, ids, attention_mask=None):
        self.masks.append(attention_mask)
        return (ids.float().unsqueeze(-1),)


def test_text_conditioner_pads_to_max_length_and_keeps_the_mask_only_when_asked():
    """SD-style text conditioning: tokens padded to max_length, no padding mask to the text encoder or the
    denoiser unless use_attention_mask; the null prompt is ""."""
    from mubench.models.text import TextEncoderConditioner, byte_level_clip_tokenizer

    tok = byte_level_clip_tokenizer(16)
    enc = _FakeTextEncoder()
    sd = TextEncoderConditioner(tok, enc, 16)
    c = sd.encode(["a red circle"])
    assert c.hidden_states.shape == (1, 16, 1) and c.attention_mask is None and enc.masks[-1] is None
    assert torch.equal(sd.unconditional(2).hidden_states, sd.encode(["", ""]).hidden_states)
    micro = TextEncoderConditioner(tok, enc, 16, use_attention_mask=True)
    c = micro.encode(["ab"])
    assert c.attention_mask is not None and enc.masks[-1] is not None
    assert c.attention_mask.shape == (1, 16) and int(c.attention_mask.sum()) == 4  # bos, a, b, eos


def test_t5_conditioner_passes_the_padding_mask_and_pixart_keeps_the_epsilon_half():
    """PixArt: the T5 mask goes to the text encoder and to the transformer's cross-attention; of the
    learned-sigma output only the first (ε) half is the prediction."""
    from mubench.models.pixart import T5Conditioner, pixart_forward
    from mubench.models.text import byte_level_clip_tokenizer

    enc = _FakeTextEncoder()
    cond = T5Conditioner(byte_level_clip_tokenizer(8), enc, 8).encode(["ab"])
    assert enc.masks[-1] is not None and cond.attention_mask is not None
    assert cond.attention_mask.shape == (1, 8)

    seen = {}

    def denoiser(x, encoder_hidden_states, timestep, encoder_attention_mask, added_cond_kwargs):
        seen["mask"] = encoder_attention_mask
        return SimpleNamespace(sample=torch.cat([torch.zeros_like(x), torch.ones_like(x)], 1))

    x = torch.randn(2, 4, 2, 2)
    out = pixart_forward(denoiser, x, torch.tensor(5), cond)
    assert out.shape == x.shape and float(out.abs().sum()) == 0.0
    assert seen["mask"] is cond.attention_mask


def test_class_conditioner_null_label_and_range():
    """Class-conditional CFG: the null class (also what "" means) is index num_classes; num_classes itself is
    not a prompt a user may give."""
    from mubench.errors import UsageError
    from mubench.models.classes import ClassConditioner

    cc = ClassConditioner(10, torch.device("cpu"))
    assert cc.unconditional(2).class_labels.tolist() == [10, 10]
    assert cc.encode(["", 3, "4"]).class_labels.tolist() == [10, 3, 4]
    with pytest.raises(UsageError):
        cc.label(10)
    with pytest.raises(UsageError):
        cc.check_prompts([1, "x"])


def test_dit_random_records_guidance_channels_and_dits_diffusion():
    """DiT follows sample_ddp.py: learned-range variance, linspace spacing, guidance 1.5 on cfg_channels
    channels (recorded for the sampler); cfg_channels=4 (diffusers' DiTPipeline) is allowed."""
    from mubench.models.dit import DiT, DiTParams

    params = DiTParams(arch="tiny", resolution=16, cfg_channels=4)
    params.validate()
    b = DiT.load(params, LoadContext(torch.device("cpu"), torch.float32, weights="random"))
    assert b.extras["guidance_channels"] == 4
    assert b.scheduler_config["variance_type"] == "learned_range"
    assert b.scheduler_config["timestep_spacing"] == "linspace"
    assert b.default_sampler == {"scheduler": "ddpm", "steps": 250, "guidance": 1.5}
    other = DiT.load(DiTParams(arch="tiny", resolution=16, seed=1),
                     LoadContext(torch.device("cpu"), torch.float32, weights="random"))
    assert other.fingerprint != b.fingerprint


def test_dit_fingerprint_changes_with_the_vae_weights(tmp_path):
    """Images decoded by another VAE are other images: the DiT fingerprint must hold the VAE weights' digest."""
    from diffusers import DiTTransformer2DModel

    from mubench.models.dit import DiT, DiTParams, TINY_DIT_CONFIG, tiny_vae

    torch.manual_seed(0)
    DiTTransformer2DModel(**TINY_DIT_CONFIG).save_pretrained(tmp_path / "DiT" / "transformer")
    (tmp_path / "DiT" / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    for name, seed in (("vae-a", 0), ("vae-b", 1)):
        torch.manual_seed(seed)
        tiny_vae(16, 2).save_pretrained(tmp_path / name)
    prints = {DiT.load(DiTParams(path=str(tmp_path / "DiT"), vae_path=str(tmp_path / name), resolution=16),
                       CPU).fingerprint for name in ("vae-a", "vae-b")}
    assert len(prints) == 2


def test_loading_tiny_sd_leaves_the_callers_rng_alone():
    """The tiny model seeds its own weights: loading it neither resets the caller's global RNG stream nor depends
    on it."""
    from mubench.models.tiny import TinySD, TinySDParams

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = TinySD.load(TinySDParams(), CPU)
    assert torch.equal(torch.rand(3), expected)
    second = TinySD.load(TinySDParams(), CPU)
    assert all(torch.equal(a, b) for a, b in zip(first.denoiser.parameters(), second.denoiser.parameters()))


def test_decoders_clamp_images_to_the_unit_range():
    """Latents past the data range decode to images clipped to [0, 1], by both the VAE and the pixel codec."""
    from mubench.models.codecs import PixelCodec, VaeCodec

    wild = torch.tensor([-4.0, -1.5, 0.0, 1.5, 4.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    for out in (PixelCodec().decode(wild), VaeCodec(_FakeVae()).decode(wild)):
        assert out.min() >= 0 and out.max() <= 1
        assert out.min() == 0 and out.max() == 1


def test_a_long_prompt_is_truncated_to_max_length():
    """A prompt longer than ``max_length`` tokens is cut to it (with its end token), not passed on longer."""
    from mubench.models.text import TextEncoderConditioner, byte_level_clip_tokenizer

    cond = TextEncoderConditioner(byte_level_clip_tokenizer(8), _FakeTextEncoder(), 8, use_attention_mask=True)
    c = cond.encode(["a very long prompt about many red circles", "ab"])
    assert c.hidden_states.shape == (2, 8, 1) and c.attention_mask.shape == (2, 8)
    assert int(c.attention_mask[0].sum()) == 8
