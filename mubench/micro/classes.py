"""The micro world's class-conditional view: one object per image, its (colour, shape) pair is the class.

The classes are the (colour, shape) pairs the ``train`` / ``val`` / ``test`` splits draw — every pair but the held-out
compositional ones (:data:`mubench.micro.data.HELD_OUT`) — in a fixed order (colour-major, as
:data:`~mubench.micro.scene.COLORS` then :data:`~mubench.micro.scene.SHAPES`): 15 classes. Class ``k``'s name is its
single-object caption (``"a red circle"``), so the micro world's oracle, micro-CLIP and held-out reference renders
read class-conditional samples exactly as they read text-conditional ones. An image of class ``k`` is
:func:`~mubench.micro.data.realize` of that caption: fill (solid / striped), size, position and background are
drawn as the split draws them.

Streams are deterministic: example ``i`` of stream ``seed`` of a split draws its label and its scene from its own
generator (:func:`~mubench.micro.data.scene_rng` with an offset stream seed, so no scene coincides with the text
world's), uniformly over the classes.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..config import stable_hash
from . import data as D
from . import scene as S

CLASS_STREAM_OFFSET = 7_000_000  # added to the stream seed: class streams never reuse a text-world scene generator


def class_pairs() -> list[tuple[str, str]]:
    """The (colour, shape) pair of each class, in label order."""
    return [(c, s) for c in S.COLORS for s in S.SHAPES if (c, s) not in D.HELD_OUT]


def class_names() -> list[str]:
    """Each class's name: its single-object caption (``"a red circle"``)."""
    return [S.caption_for((S.Phrase(s, c),)) for c, s in class_pairs()]


NUM_CLASSES = len(class_pairs())


def class_scene(label: int, rng: np.random.Generator, split: str = "train") -> S.Scene:
    """A scene of class ``label`` (one object of its colour and shape), the rest drawn from ``rng``."""
    color, shape = class_pairs()[int(label)]
    return D.realize((S.Phrase(shape, color),), None, rng, split, S.P_STRIPED)  # the fill as scenes draw it


def class_example(split: str, index: int, seed: int) -> tuple[int, S.Scene]:
    """Example ``index`` of stream ``seed`` of ``split``: (uniform random label, its scene)."""
    rng = D.scene_rng(split, index, seed + CLASS_STREAM_OFFSET)
    label = int(rng.integers(NUM_CLASSES))
    return label, class_scene(label, rng, split)


def iterate_class_batches(split: str, batch_size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless deterministic stream of (uint8 images [B,32,32,3], int64 labels [B]); batch ``b`` holds examples
    ``b·B … b·B + B − 1``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = 0
    while True:
        labels, scenes = [], []
        for _ in range(batch_size):
            label, scene = class_example(split, index, seed)
            labels.append(label)
            scenes.append(scene)
            index += 1
        yield S.render_batch(scenes), np.asarray(labels, dtype=np.int64)


def class_fingerprint(split: str = "train") -> str:
    """What decides the class streams' content (the classes, the split, the renderer's constants)."""
    return "micro-class:" + stable_hash({"split": split, "split_seed": D.SPLITS[split], "pairs": class_pairs(),
                                         "offset": CLASS_STREAM_OFFSET, "size": S.IMAGE_SIZE})

