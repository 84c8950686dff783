"""``dit`` and ``pixart`` load local diffusers folders offline (tiny fake layouts), refuse missing ones by name, and
build their real architectures on the meta device."""
from __future__ import annotations

import json

import pytest
import torch

from mubench.errors import AssetError
from mubench.methods.base import Prepared
from mubench.models.base import LoadContext
from mubench.models.dit import DiT, DiTParams, TINY_DIT_CONFIG, tiny_vae
from mubench.models.pixart import PixArt, PixArtParams, TINY_PIXART_CONFIG
from mubench.sampler import SamplerConfig, sample_images

CPU = LoadContext(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def fake_dit(tmp_path_factory):
    from diffusers import DiTTransformer2DModel

    root = tmp_path_factory.mktemp("dit")
    torch.manual_seed(0)
    DiTTransformer2DModel(**TINY_DIT_CONFIG).save_pretrained(root / "DiT" / "transformer")
    (root / "DiT" / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    tiny_vae(16, 2).save_pretrained(root / "vae-ema")
    return root


def test_dit_loads_a_local_folder_offline(fake_dit):
    params = DiTParams(path=str(fake_dit / "DiT"), vae_path=str(fake_dit / "vae-ema"), resolution=16)
    bundle = DiT.load(params, CPU)
    assert bundle.fingerprint.startswith("dit:") and bundle.fingerprint == DiT.load(params, CPU).fingerprint
    assert bundle.conditioning_kind == "class" and bundle.extras["num_classes"] == 10
    assert not any(p.requires_grad for p in bundle.denoiser.parameters())
    cfg = SamplerConfig(scheduler="ddpm", steps=3, guidance=1.5, resolution=16)
    assert sample_images(bundle, Prepared(bundle.denoiser), [4], [1], cfg).shape == (1, 3, 16, 16)


def test_dit_missing_parts_are_asset_errors(fake_dit, tmp_path):
    with pytest.raises(AssetError, match="dit-xl-2-256"):
        DiT.load(DiTParams(path=str(tmp_path / "nowhere")), CPU)
    with pytest.raises(AssetError, match="sd-vae-ft-ema"):
        DiT.load(DiTParams(path=str(fake_dit / "DiT"), vae_path=str(tmp_path / "no-vae")), CPU)


def test_pixart_loads_a_local_folder_offline(tmp_path):
    from diffusers import PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from mubench.models.pixart import PIXART_SCHEDULER_CONFIG
    from mubench.models.text import byte_level_clip_tokenizer

    root = tmp_path / "PixArt"
    torch.manual_seed(0)
    PixArtTransformer2DModel(**TINY_PIXART_CONFIG).save_pretrained(root / "transformer")
    tiny_vae(16, 2).save_pretrained(root / "vae")
    T5EncoderModel(T5Config(vocab_size=514, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                            is_encoder_decoder=False, use_cache=False)).save_pretrained(root / "text_encoder")
    byte_level_clip_tokenizer(16).save_pretrained(root / "tokenizer")  # a stand-in: the real one is T5's
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(PIXART_SCHEDULER_CONFIG))
    (root / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    bundle = PixArt.load(PixArtParams(path=str(root), resolution=16, max_length=16), CPU)
    assert bundle.fingerprint.startswith("pixart:")
    cond = bundle.conditioner.encode(["a red circle"])
    assert cond.hidden_states.shape == (1, 16, 32) and cond.attention_mask.shape == (1, 16)
    images = sample_images(bundle, Prepared(bundle.denoiser), ["a red circle"], [1],
                           SamplerConfig(scheduler="dpmsolver++", steps=2, guidance=4.5, resolution=16))
    assert images.shape == (1, 3, 16, 16)
    # what changes the conditioning changes the fingerprint (and so every sample and artifact key)
    assert PixArt.load(PixArtParams(path=str(root), resolution=16, max_length=8), CPU).fingerprint != bundle.fingerprint
    torch.manual_seed(1)
    T5EncoderModel(T5Config(vocab_size=514, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                            is_encoder_decoder=False, use_cache=False)).save_pretrained(root / "text_encoder")
    other_t5 = PixArt.load(PixArtParams(path=str(root), resolution=16, max_length=16), CPU)
    assert other_t5.fingerprint != bundle.fingerprint
    byte_level_clip_tokenizer(12).save_pretrained(root / "tokenizer")
    assert PixArt.load(PixArtParams(path=str(root), resolution=16, max_length=16), CPU).fingerprint \
        != other_t5.fingerprint
    config = json.loads((root / "text_encoder" / "config.json").read_text())
    (root / "text_encoder" / "config.json").write_text(json.dumps({**config, "num_layers": 2}))
    with pytest.raises(AssetError, match="does not match its config"):  # transformers would re-initialise silently
        PixArt.load(PixArtParams(path=str(root), resolution=16), CPU)
    (root / "text_encoder" / "config.json").write_text(json.dumps({**config, "d_ff": 64}))
    with pytest.raises(AssetError, match="cannot load PixArt"):
        PixArt.load(PixArtParams(path=str(root), resolution=16), CPU)
    (root / "text_encoder" / "config.json").unlink()
    with pytest.raises(AssetError, match="no text_encoder/config.json"):
        PixArt.load(PixArtParams(path=str(root), resolution=16), CPU)


def test_full_size_architectures_on_meta():
    meta = LoadContext(torch.device("meta"), torch.float32, "random")
    dit = DiT.load(DiTParams(), meta)
    assert sum(p.numel() for p in dit.denoiser.parameters()) == 749_826_464  # per-block copies of the embedders
    assert len(dit.denoiser.transformer_blocks) == 28 and dit.denoiser.config.out_channels == 8
    assert dit.codec.latent_shape(256, 256) == (4, 32, 32)
    pix = PixArt.load(PixArtParams(), meta)
    assert sum(p.numel() for p in pix.denoiser.parameters()) == 610_856_096
    assert pix.denoiser.config.caption_channels == 4096 and pix.codec.latent_shape(512, 512) == (4, 64, 64)


def test_the_arch_names_checked_without_torch_are_the_models_archs():
    """``model.arch=`` is validated from :mod:`mubench.models.params` (torch-free) against the names kept there."""
    from mubench.models import dit, pixart
    from mubench.models.params import DIT_ARCHS, PIXART_ARCHS

    assert tuple(dit.ARCHS) == DIT_ARCHS and tuple(pixart.ARCHS) == PIXART_ARCHS
