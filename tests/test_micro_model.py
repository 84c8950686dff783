"""The micro model: random-weight build, codec round trip, hash-checked loading from a zoo folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from mubench.errors import AssetError
from mubench.micro import model as M
from mubench.micro.assets import sha256_file, verify_all
from mubench.micro.build_common import save_safetensors
from mubench.micro.zoo import random_decoder_attention_mask
from mubench.models.base import LoadContext

CPU = LoadContext(device=torch.device("cpu"), dtype=torch.float32)
RANDOM = LoadContext(device=torch.device("cpu"), dtype=torch.float32, weights="random")
SHIPPED = Path(__file__).resolve().parents[1] / "zoo" / "micro"


def test_random_weights_build_is_sd_shaped_and_seeded():
    bundle = M.MicroModel.load(M.MicroParams(seed=3), RANDOM)
    unet = bundle.denoiser
    assert [type(b).__name__ for b in unet.up_blocks] == ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    assert [type(b).__name__ for b in unet.down_blocks] == ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                            "DownBlock2D"]
    assert not any(p.requires_grad for p in unet.parameters())
    assert bundle.codec.latent_shape(32, 32) == (12, 16, 16)
    assert bundle.scheduler_config["prediction_type"] == "v_prediction"
    cond = bundle.conditioner.encode(["a red circle", ""])
    assert cond.hidden_states.shape == (2, 16, 64) and cond.attention_mask.shape == (2, 16)
    assert cond.attention_mask[1].sum() == 2  # "" is <bos> <eos>
    x = torch.randn(2, 12, 16, 16)
    out = unet(x, torch.tensor([10, 500]), encoder_hidden_states=cond.hidden_states,
               encoder_attention_mask=cond.attention_mask).sample
    assert out.shape == x.shape
    again = M.MicroModel.load(M.MicroParams(seed=3), RANDOM)
    other = M.MicroModel.load(M.MicroParams(seed=4), RANDOM)
    assert again.fingerprint == bundle.fingerprint != other.fingerprint
    assert torch.equal(next(again.denoiser.parameters()), next(unet.parameters()))
    assert not torch.equal(next(other.denoiser.parameters()), next(unet.parameters()))


def test_codec_round_trip_and_centring():
    codec = M.SpaceToDepthCodec(2, 0.85)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=g).float() / 255
    z = codec.encode(images)
    assert z.shape == (3, 12, 16, 16)
    assert torch.allclose(codec.decode(z), images, atol=1e-6)
    background = torch.full((1, 3, 32, 32), 235 / 255)  # the data's light background sits near 0
    assert codec.encode(background).abs().max() < 0.1
    u8 = (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    assert torch.allclose(codec.encode_uint8(u8.numpy()), z, atol=1e-6)


def make_zoo(folder: Path, seed: int = 5) -> tuple[nn.Module, nn.Module]:
    configs = M.default_configs()
    unet, te = M.random_parts(configs, seed)
    folder.mkdir(parents=True)
    save_safetensors(unet, folder / M.UNET_FILE, {"format": "test"})
    save_safetensors(te, folder / M.TEXT_ENCODER_FILE, {"format": "test"})
    files = {f: {"sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size}
             for f in (M.UNET_FILE, M.TEXT_ENCODER_FILE)}
    (folder / "manifest.json").write_text(json.dumps({"configs": configs, "files": files,
                                                      "sampler": {"scheduler": "ddim", "steps": 7, "guidance": 3.0}}))
    return unet, te


def test_load_from_zoo_checks_hashes(tmp_path):
    unet, te = make_zoo(tmp_path / "zoo")
    bundle = M.MicroModel.load(M.MicroParams(path=str(tmp_path / "zoo")), CPU)
    for a, b in zip(bundle.denoiser.state_dict().values(), unet.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(bundle.extras["text_encoder"].state_dict().values(), te.state_dict().values()):
        assert torch.equal(a, b)
    assert bundle.default_sampler["steps"] == 7
    assert bundle.fingerprint.startswith("micro:")
    assert set(verify_all(tmp_path / "zoo")) == {M.UNET_FILE, M.TEXT_ENCODER_FILE}

    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "zoo", tampered)
    blob = bytearray((tampered / M.UNET_FILE).read_bytes())
    blob[-5] ^= 0x01  # one bit of one weight
    (tampered / M.UNET_FILE).write_bytes(bytes(blob))
    with pytest.raises(AssetError, match="checksum mismatch"):
        M.MicroModel.load(M.MicroParams(path=str(tampered)), CPU)

    (tampered / M.UNET_FILE).unlink()
    with pytest.raises(AssetError, match="missing weights file"):
        M.MicroModel.load(M.MicroParams(path=str(tampered)), CPU)
    with pytest.raises(AssetError, match="manifest.json"):
        M.MicroModel.load(M.MicroParams(path=str(tmp_path / "nowhere")), CPU)


@pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="no shipped zoo/micro")
def test_shipped_weights_load_and_match_their_manifest():
    hashes = verify_all(SHIPPED)
    assert {M.UNET_FILE, M.TEXT_ENCODER_FILE} <= set(hashes)
    assert sum((SHIPPED / f).stat().st_size for f in hashes) <= 30 * 1024 * 1024
    bundle = M.MicroModel.load(M.MicroParams(), CPU)
    assert bundle.default_sampler["scheduler"] == "ddim"
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    assert manifest["quality"]["base"]["n"] > 0


def test_random_decoder_attention_mask_touches_only_decoder_attention():
    unet, _ = M.random_parts(M.default_configs(), 0)
    masked, zeroed, total = random_decoder_attention_mask(unet, 0.5, seed=1)
    assert total == 86016 and 0.45 < zeroed / total < 0.55
    changed = {n for (n, a), (_, b) in zip(unet.named_parameters(), masked.named_parameters()) if not torch.equal(a, b)}
    assert changed and all(n.startswith("up_blocks.") and ".attentions." in n and n.endswith(".weight")
                           and any(k in n for k in ("to_q", "to_k", "to_v", "to_out.0")) for n in changed)


def test_zoo_verify_command_exit_codes(tmp_path, capsys):
    from mubench.cli import main

    make_zoo(tmp_path / "zoo")
    with pytest.raises(SystemExit) as ok:
        main(["zoo", "verify", "micro", "--out", str(tmp_path / "zoo")])
    assert ok.value.code == 0 and M.UNET_FILE in capsys.readouterr().out
    (tmp_path / "zoo" / M.TEXT_ENCODER_FILE).write_bytes(b"not the weights")
    with pytest.raises(SystemExit) as bad:
        main(["zoo", "verify", "micro", "--out", str(tmp_path / "zoo")])
    assert bad.value.code == 2 and "checksum mismatch" in capsys.readouterr().err
