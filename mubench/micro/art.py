"""The micro world's fine-tuning domain (``micro-art``): the base grammar's scenes in a style the base never saw.

Scenes follow the shared grammar of :mod:`mubench.micro.scene` with the base distribution's (colour, shape) pairs,
kinds, sizes, fills, placements and captions, so every prompt still names the same objects; what changes is the
**background**: a dark night-blue to plum level (18–48 per channel plus a blue tint) instead of the base's light
grey (215–245). Object pixels keep the palette colours, so the oracle (which takes the border median as the
background) reads colour, shape, fill, count and position in both styles (1.00 on 600 real renders of each,
tests/test_micro_art.py).

Why this style: it is a global, visible change a fine-tune learns in a few hundred steps on the 2-core CPU (full
fine-tune, 400 steps: docs/micro-world.md), while a method that keeps the base's behaviour keeps drawing light
backgrounds, so FID against real art renders separates "learned the domain" from "did not".

Every scene comes from its own generator seeded by (art split, stream seed, index); the art splits' seeds
(:data:`ART_SPLITS`) differ from every ``micro`` split's, so train / val / test are disjoint from each other and
from the base distribution's.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from ..errors import UsageError
from . import data as D
from . import scene as S

ART_SPLITS: dict[str, int] = {"train": 101, "val": 102, "test": 103}
BG_LEVEL = (18, 49)  # dark background level range [lo, hi) per channel, before the tint
BG_TINT = ((0, 6), (-2, 4), (10, 26))  # added to (R, G, B): a blue-to-plum night tint


def art_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of art scene ``index`` of ``split`` in stream ``seed``; no two splits (art or base) share one."""
    if split not in ART_SPLITS:
        raise UsageError(f"unknown micro-art split {split!r}; expected one of {', '.join(ART_SPLITS)}")
    return np.random.default_rng([ART_SPLITS[split], int(seed), int(index)])


def draw_art_background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A dark, blue-tinted flat background (RGB)."""
    level = int(rng.integers(*BG_LEVEL))
    return tuple(int(np.clip(level + rng.integers(lo, hi + 1), 0, 255)) for lo, hi in BG_TINT)  # type: ignore[return-value]


def generate_art_scene(rng: np.random.Generator, kind: str) -> S.Scene:
    """One art scene of ``kind``: the base splits' (colour, shape) pairs on an art background."""
    background = draw_art_background(rng)
    return S.draw_scene(rng, kind, D.allowed_pairs("train"), background)


def realize_art(phrases: tuple[S.Phrase, ...] | list[S.Phrase], relation: Optional[str],
                rng: np.random.Generator) -> S.Scene:
    """A real art-style scene the caption is true of (the micro-art suite's FID references)."""
    if not phrases:
        raise UsageError("cannot realise the empty caption")
    return S.draw_scene_for(phrases, relation, rng, D.allowed_pairs("test"), draw_art_background(rng))


def iterate_art_scenes(split: str, seed: int = 0, mix: Optional[dict[str, float]] = None) -> Iterator[S.Scene]:
    """Endless deterministic stream of art ``split``'s scenes in stream ``seed`` (kinds from ``mix``, default the
    base training mix)."""
    kinds, cum = S.check_mix(D.DEFAULT_MIX if mix is None else mix)
    art_rng(split, 0, seed)  # unknown split: fail now, not at the first scene

    def scenes() -> Iterator[S.Scene]:
        index = 0
        while True:
            rng = art_rng(split, index, seed)
            yield generate_art_scene(rng, S.draw_kind(rng, kinds, cum))
            index += 1

    return scenes()


def make_art_scenes(split: str, n: int, mix: Optional[dict[str, float]] = None, seed: int = 0) -> list[S.Scene]:
    """The first ``n`` scenes of art ``split`` (deterministic; a prefix of any longer call)."""
    stream = iterate_art_scenes(split, seed, mix)
    return [next(stream) for _ in range(int(n))]


def iterate_art_batches(split: str, batch_size: int, seed: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Endless deterministic stream of (uint8 images [B,32,32,3], captions) from art ``split``; batch ``b`` holds
    scenes ``b*batch_size ...``, so the stream is the same however it is consumed."""
    return D.rendered_batches(iterate_art_scenes(split, seed), batch_size)


def art_content() -> dict:
    """What decides the art training stream's content (hashed into the ``micro-art`` data fingerprint)."""
    return {"split": "train", "split_seed": ART_SPLITS["train"], "mix": D.DEFAULT_MIX, "size": S.IMAGE_SIZE,
            "bg_level": list(BG_LEVEL), "bg_tint": [list(t) for t in BG_TINT], "pairs": "base train pairs"}
