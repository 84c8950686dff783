"""The micro world's training data, as named sources for the trainer (registered in :mod:`mubench.builtins`).

``micro``
    the base distribution's ``train`` split (:mod:`mubench.micro.data`): an endless seeded stream of captioned
    scenes (32×32); stream seed = the recipe's seed.
``micro-art``
    the fine-tuning domain's ``train`` split (:mod:`mubench.micro.art`): the base grammar's scenes and captions on
    the dark art background the base model never saw; stream seed = the recipe's seed.
``micro-class``
    the class-conditional stream (:mod:`mubench.micro.classes`): single objects of the 15 (colour, shape) classes,
    captioned by class name (what class-conditional models such as ``micro-dit`` read; "" — caption dropout — is
    the null class).

Each is a :class:`~mubench.train.data.NamedDataSource`: its fingerprint is part of trained artifacts' addresses,
so it must stay what it is while the stream's content does not change.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from ..config import stable_hash
from ..errors import UsageError
from ..train.data import NamedDataSource, TrainingData
from ..train.loop import IteratorSource
from . import art as A
from . import classes as C
from . import data as D
from .scene import IMAGE_SIZE


def as_float_images(images: np.ndarray) -> torch.Tensor:
    """uint8 [B,32,32,3] → float [B,3,32,32] in [0, 1] (the trainer's batch images)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def check_resolution(resolution: int) -> None:
    if resolution != IMAGE_SIZE:
        raise UsageError(f"the micro world's images are {IMAGE_SIZE}px; training asks for {resolution}px "
                         f"(method.train.resolution, else the model's): set method.train.resolution={IMAGE_SIZE}")


def micro_fingerprint() -> str:
    """What decides the ``micro`` stream's content (the split, its seed and mix, the image size)."""
    return "micro-world-train:" + stable_hash({"split": "train", "split_seed": D.SPLITS["train"],
                                                "mix": D.DEFAULT_MIX, "size": IMAGE_SIZE})


def open_micro(batch_size: int, seed: int, resolution: int) -> TrainingData:
    """Batches of (float images [B,3,32,32] in [0,1], captions) from the ``train`` split, stream ``seed``."""
    check_resolution(resolution)

    def stream() -> Iterator[tuple[torch.Tensor, list[str]]]:
        for images, captions in D.iterate_batches("train", batch_size, seed):
            yield as_float_images(images), list(captions)

    info = {"split": "train", "stream_seed": seed, "mix": dict(D.DEFAULT_MIX), "resolution": IMAGE_SIZE}
    return TrainingData("micro", IteratorSource(stream), micro_fingerprint(), info)


def micro_art_fingerprint() -> str:
    """What decides the ``micro-art`` stream's content (:func:`mubench.micro.art.art_content`)."""
    return "micro-art-train:" + stable_hash(A.art_content())


def open_micro_art(batch_size: int, seed: int, resolution: int) -> TrainingData:
    """Batches of (float images [B,3,32,32] in [0,1], captions) from the art ``train`` split, stream ``seed``."""
    check_resolution(resolution)

    def stream() -> Iterator[tuple[torch.Tensor, list[str]]]:
        for images, captions in A.iterate_art_batches("train", batch_size, seed):
            yield as_float_images(images), list(captions)

    info = {"split": "train", "style": "art", "stream_seed": seed, "resolution": IMAGE_SIZE}
    return TrainingData("micro-art", IteratorSource(stream), micro_art_fingerprint(), info)


def micro_class_fingerprint() -> str:
    """What decides the ``micro-class`` stream's content (:func:`mubench.micro.classes.class_fingerprint`)."""
    return C.class_fingerprint("train")


def open_micro_class(batch_size: int, seed: int, resolution: int) -> TrainingData:
    """Batches of (float images [B,3,32,32] in [0,1], class names) from the class stream of the ``train`` split."""
    check_resolution(resolution)
    names = C.class_names()

    def stream() -> Iterator[tuple[torch.Tensor, list[str]]]:
        for images, labels in C.iterate_class_batches("train", batch_size, seed):
            yield as_float_images(images), [names[k] for k in labels]

    info = {"split": "train", "stream_seed": seed, "classes": C.NUM_CLASSES, "resolution": IMAGE_SIZE}
    return TrainingData("micro-class", IteratorSource(stream), micro_class_fingerprint(), info)


MICRO = NamedDataSource(micro_fingerprint, open_micro)
MICRO_ART = NamedDataSource(micro_art_fingerprint, open_micro_art)
MICRO_CLASS = NamedDataSource(micro_class_fingerprint, open_micro_class)
