"""Fine-tuning follows its recipe and its data: the caption dropout rate, the loss target and min-SNR weighting,
the released clipping recorded as a deviation when off; a folder's fingerprint follows its files' content, epochs
are seeded permutations, flips only when asked; an artifact refuses weights that do not match its manifest."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mubench.errors import AssetError
from mubench.methods.artifacts import load_artifact, save_artifact
from mubench.methods.finetune_loss import DiffusionFinetuneLoss
from mubench.methods.train_recipe import MethodTrainConfig
from mubench.train.data import EpochSource, data_fingerprint, open_training_data
from training_fakes import CAPTIONS, caption_folder, parquet_file


def _loss_with_seen_captions(bundle, cfg, n=400):
    seen: list[list[str]] = []
    original = bundle.conditioner.encode

    def encode(captions):
        seen.append(list(captions))
        return original(captions)

    bundle.conditioner.encode = encode
    try:
        loss_fn = DiffusionFinetuneLoss(bundle, cfg)
        images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        value = loss_fn(bundle.denoiser, (images, ["a cat"] * n), torch.Generator().manual_seed(1))
    finally:
        bundle.conditioner.encode = original
    return value, seen[0]


def test_caption_dropout_replaces_about_p_uncond_of_the_captions(bundle):
    """``p_uncond`` is the probability that a caption is replaced by the null prompt (not the probability that it
    is kept)."""
    cfg = MethodTrainConfig(p_uncond=0.2, resolution=32, data="x")
    _, captions = _loss_with_seen_captions(bundle, cfg)
    dropped = sum(c == "" for c in captions) / len(captions)
    assert 0.12 < dropped < 0.28, dropped


def test_the_loss_uses_the_recipes_target_and_min_snr(bundle):
    """The recipe's prediction_type and min_snr_gamma change the loss of the same batch and draws."""
    base = MethodTrainConfig(resolution=32, data="x")
    values = [_loss_with_seen_captions(bundle, cfg, n=4)[0] for cfg in
              (base, MethodTrainConfig(resolution=32, data="x", prediction_type="sample"),
               MethodTrainConfig(resolution=32, data="x", min_snr_gamma=0.5))]
    assert not torch.allclose(values[0], values[1]) and not torch.allclose(values[0], values[2])


def test_an_artifact_whose_weights_do_not_match_its_manifest_is_refused(tmp_path):
    """A weights file replaced or corrupted after the manifest was written is refused, not loaded."""
    save_artifact(tmp_path, {"w": torch.ones(3)}, {"kind": "x"})
    other = tmp_path / "other"
    save_artifact(other, {"w": torch.zeros(3)}, {"kind": "x"})
    (tmp_path / "weights.safetensors").write_bytes((other / "weights.safetensors").read_bytes())
    with pytest.raises(AssetError, match="does not match the manifest"):
        load_artifact(tmp_path)


def test_full_ft_deviations_follow_the_released_clipping(regs):
    """The released full fine-tuning script clipped at 1: the default recipe is no deviation there, and turning
    clipping off is recorded as one."""
    from mubench.config import resolve_component
    from mubench.methods.training import deviations

    def method(**train):
        comp = resolve_component("method", "full-ft", {"train": {"data": "x", **train}}, regs)
        return regs.methods.get(comp.kind)(comp.params, comp.name)

    clipped, off = method(grad_clip=1.0), method(grad_clip=None)
    assert not any("grad_clip" in d for d in deviations(clipped, clipped.recipe()))
    assert any("grad_clip off" in d for d in deviations(off, off.recipe()))


def test_folder_fingerprint_sees_a_same_size_edit(tmp_path):
    """An image rewritten with other pixels but the same byte size changes the fingerprint (the hash cache is
    keyed by modification time too), so a trained artifact is not reused for other data."""
    folder = caption_folder(tmp_path / "d")
    before = data_fingerprint(str(folder))
    path = folder / "img0.png"
    raw = bytearray(path.read_bytes())
    st = path.stat()
    raw[-20] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == st.st_size
    assert data_fingerprint(str(folder)) != before


def test_parquet_fingerprint_follows_the_caption_column(tmp_path):
    """Training on another caption column of the same parquet file is other data: another fingerprint."""
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = parquet_file(tmp_path / "train.parquet")
    table = pq.read_table(path)
    pq.write_table(table.append_column("prompt", table.column("text")), path)
    assert data_fingerprint(str(path), caption_column="text") != data_fingerprint(str(path), caption_column="prompt")


def test_epochs_are_seeded_permutations_without_overlap(tmp_path):
    """Each epoch visits every example once, in an order that depends on the seed and changes between epochs;
    consecutive batches do not overlap."""
    folder = caption_folder(tmp_path / "d", n=6)
    src = open_training_data(str(folder), batch_size=2, seed=5, resolution=16).source
    order = [c for s in range(6) for c in src(s)[1]]  # two epochs of 6
    assert sorted(order[:6]) == sorted(CAPTIONS[:6]) and sorted(order[6:]) == sorted(CAPTIONS[:6])
    assert isinstance(src, EpochSource)
    assert order[:6] != order[6:]  # every epoch is reshuffled
    other = open_training_data(str(folder), batch_size=2, seed=6, resolution=16).source
    assert any(not np.array_equal(src._perm(e), other._perm(e)) for e in range(3))  # the seed decides the order
    assert not np.array_equal(EpochSource([None] * 50, None, 1, 5, 8, True, False)._perm(0),
                              EpochSource([None] * 50, None, 1, 6, 8, True, False)._perm(0))


def test_random_flip_off_never_flips(tmp_path):
    """With random_flip off an example is never mirrored (with it on, some are)."""
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:, :4] = 255  # left half white: a flip is visible
    image = Image.fromarray(arr)
    examples = [(image, "x")] * 4
    on = EpochSource(examples, lambda im: im, 4, 0, 8, True, True)
    off = EpochSource(examples, lambda im: im, 4, 0, 8, True, False)
    flipped = lambda batch: [bool(img[:, :, 0].mean() < img[:, :, -1].mean()) for img in batch]  # noqa: E731
    assert not any(f for s in range(3) for f in flipped(off(s)[0]))
    assert any(f for s in range(3) for f in flipped(on(s)[0]))
