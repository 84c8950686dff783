"""The ``sd15`` model: loads a diffusers SD 1.5 folder offline (here a tiny fake one), fails with AssetError otherwise."""
from __future__ import annotations

import json

import pytest
import torch

from mubench.errors import AssetError
from mubench.methods.base import Prepared
from mubench.models.base import LoadContext
from mubench.models.sd15 import SD15, SD15_SCHEDULER_CONFIG, SD15Params
from mubench.sampler import SamplerConfig, sample_images

CPU = LoadContext(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def fake_sd15(tmp_path_factory):
    """A folder laid out like runwayml/stable-diffusion-v1-5, with tiny random components."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from mubench.models.text import byte_level_clip_tokenizer
    from mubench.models.tiny import tiny_unet_config

    root = tmp_path_factory.mktemp("sd15")
    torch.manual_seed(0)
    UNet2DConditionModel(**tiny_unet_config()).save_pretrained(root / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, norm_num_groups=8).save_pretrained(root / "vae")
    CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                                 pad_token_id=513)).save_pretrained(root / "text_encoder")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.json").write_text(json.dumps(byte_level_clip_tokenizer(77).get_vocab()))
    (root / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "PNDMScheduler", **SD15_SCHEDULER_CONFIG}))
    (root / "model_index.json").write_text("{}")
    return root


def test_loads_a_local_folder_offline(fake_sd15):
    bundle = SD15.load(SD15Params(path=str(fake_sd15), resolution=32), CPU)
    assert bundle.fingerprint.startswith("sd15:")
    assert bundle.fingerprint == SD15.load(SD15Params(path=str(fake_sd15), resolution=32), CPU).fingerprint
    assert not any(p.requires_grad for p in bundle.denoiser.parameters())
    assert bundle.scheduler_config["beta_schedule"] == "scaled_linear"
    images = sample_images(bundle, Prepared(bundle.denoiser), ["a red circle"], [1], SamplerConfig(steps=2, resolution=32))
    assert images.shape == (1, 3, 32, 32)


def test_missing_folder_or_weights_are_asset_errors(tmp_path, fake_sd15):
    with pytest.raises(AssetError, match="sd15"):
        SD15.load(SD15Params(path=str(tmp_path / "nowhere")), CPU)
    folder = tmp_path / "configs-only"
    for f in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
              "tokenizer/vocab.json", "scheduler/scheduler_config.json"):
        (folder / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / f).write_text("{}")
    with pytest.raises(AssetError, match="no weights for unet"):
        SD15.load(SD15Params(path=str(folder)), CPU)


def test_random_weights_build_the_sd15_unet_on_meta():
    bundle = SD15.load(SD15Params(), LoadContext(torch.device("meta"), torch.float32, weights="random"))
    assert sum(p.numel() for p in bundle.denoiser.parameters()) == 859_520_964
    assert bundle.denoiser.config.cross_attention_dim == 768
    assert list(bundle.denoiser.config.block_out_channels) == [320, 640, 1280, 1280]
    assert bundle.fingerprint.startswith("sd15-random:")


@pytest.mark.parametrize("part", ["text_encoder", "unet"])
def test_a_checkpoint_missing_tensors_is_refused_not_filled_with_random_values(tmp_path, fake_sd15, part):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(fake_sd15, folder)
    weights = next((folder / part).glob("*.safetensors"))
    tensors = load_file(weights)
    dropped = sorted(k for k in tensors if k.endswith("weight"))[0]
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(AssetError, match=f"lacks 1 tensor.*{part}"):
        SD15.load(SD15Params(path=str(folder), resolution=32), CPU)


def test_the_fingerprint_holds_the_configs_that_decide_pixels(tmp_path, fake_sd15):
    """A folder whose scheduler (or a part's config) differs makes other images from the same weights: it must not
    share their cache entries."""
    import shutil

    folder = tmp_path / "sd15-trailing"
    shutil.copytree(fake_sd15, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "timestep_spacing": "trailing"}))
    base = SD15.load(SD15Params(path=str(fake_sd15), resolution=32), CPU).fingerprint
    assert SD15.load(SD15Params(path=str(folder), resolution=32), CPU).fingerprint != base


def test_the_micro_fingerprint_holds_its_scheduler_and_codec(tmp_path):
    import shutil

    from mubench.micro.clip import zoo_dir
    from mubench.micro.model import MicroModel

    folder = tmp_path / "micro"
    shutil.copytree(zoo_dir("micro"), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["configs"]["scheduler"] = {**manifest["configs"]["scheduler"], "timestep_spacing": "trailing"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    params = MicroModel.Params
    assert MicroModel.load(params(path=str(folder)), CPU).fingerprint != MicroModel.load(params(), CPU).fingerprint
