"""The micro world's registered training sources (:mod:`mubench.micro.sources`): each source's batches are its
``train`` stream for the recipe's seed (images as float [B,3,32,32] in [0,1], captions or class names), its
registered fingerprint is the one its opened data carries and follows the content, its ``describe()`` record says
what was opened, and it refuses any resolution but 32px when opened."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mubench.errors import UsageError
from mubench.micro import art as A
from mubench.micro import classes as C
from mubench.micro import data as D
from mubench.micro.sources import as_float_images

NAMES = ("micro", "micro-art", "micro-class")


def _expected_stream(name, batch_size, seed):
    """The uint8 [B,32,32,3] batches and captions the source ``name`` must serve, from the micro world's own streams."""
    if name == "micro":
        yield from D.iterate_batches("train", batch_size, seed)
    elif name == "micro-art":
        yield from A.iterate_art_batches("train", batch_size, seed)
    else:
        names = C.class_names()
        for images, labels in C.iterate_class_batches("train", batch_size, seed):
            yield images, [names[int(k)] for k in labels]


def test_as_float_images_is_channels_first_in_unit_range():
    """uint8 [B,H,W,3] → float32 [B,3,H,W] with pixel (h, w, c) at [c, h, w] and 0 → 0, 255 → 1 exactly (a
    non-square image, so a swapped H/W cannot pass)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    images[0, 0, 0] = (0, 255, 128)
    got = as_float_images(images)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 5, 7)
    assert got[0, :2, 0, 0].tolist() == [0.0, 1.0]
    back = (got * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(back, images)


@pytest.mark.parametrize("name", NAMES)
def test_named_source_batches_are_its_train_stream_for_the_seed(name, regs):
    """Steps 0 and 1 of the opened source are batches 0 and 1 of the ``train`` stream of the *given* seed (not
    another split, seed or mix), as float images in [0, 1] and, for micro-class, each label's class name."""
    data = regs.datasets.get(name).open(3, 42, 32)
    want = _expected_stream(name, 3, 42)
    for step in (0, 1):
        images, captions = data.source(step)
        want_images, want_captions = next(want)
        assert images.dtype == torch.float32 and images.shape == (3, 3, 32, 32)
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        assert np.array_equal((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), want_images)
        assert captions == list(want_captions)


@pytest.mark.parametrize("name", NAMES)
def test_named_source_describes_what_it_opened(name, regs):
    """``describe()`` (recorded with a trained artifact) names the source, the split, the stream seed actually
    used and the resolution; micro-class also its number of classes."""
    src = regs.datasets.get(name)
    record = src.open(2, 7, 32).describe()
    assert record["kind"] == name and record["split"] == "train"
    assert record["stream_seed"] == 7 and record["resolution"] == 32
    assert record["fingerprint"] == src.fingerprint()  # the address's fingerprint is the opened content's
    if name == "micro-class":
        assert record["classes"] == C.NUM_CLASSES == len(C.class_names())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("resolution", [16, 64])
def test_named_source_refuses_other_resolutions_when_opened(name, resolution, regs):
    """Smaller as well as larger: the micro world only has 32px images; the refusal comes at open time (before
    a trainer reads a batch) and says what to set."""
    with pytest.raises(UsageError, match="method.train.resolution=32"):
        regs.datasets.get(name).open(2, 0, resolution)


def test_micro_art_fingerprint_follows_the_art_content(regs, monkeypatch):
    """The micro-art fingerprint (part of artifact addresses) changes when what decides the art stream changes
    (here its background level), and is not the base stream's."""
    src = regs.datasets.get("micro-art")
    before = src.fingerprint()
    assert before != regs.datasets.get("micro").fingerprint()
    monkeypatch.setattr(A, "BG_LEVEL", (A.BG_LEVEL[0], A.BG_LEVEL[1] + 1))
    after = src.fingerprint()
    assert after != before and after.startswith("micro-art-train:")
