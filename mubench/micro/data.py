"""The micro world's base distribution (``micro``): seeded captioned scenes on a light flat background, in splits.

Scenes, captions and rendering follow the shared grammar of :mod:`mubench.micro.scene`; this module decides what the
``micro`` world draws from it: its splits and their seeds, the (colour, shape) pairs each split may use, the mix of
scene kinds and the background (light, slightly tinted, flat).

Every scene is drawn from its own generator seeded by (split, stream seed, index), so
``make_scenes(split, n)`` is deterministic, a prefix of ``make_scenes(split, n + k)``, and the
splits never share a seed. The ``compositional`` split holds (colour, shape) pairs that the other
splits never draw (:data:`HELD_OUT`), so it tests combinations a model never saw in training.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from ..errors import UsageError
from . import scene as S

SPLITS: dict[str, int] = {"train": 1, "val": 2, "test": 3, "compositional": 4}
# (colour, shape) pairs never drawn in train / val / test; the compositional split uses them.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")})
DEFAULT_MIX: dict[str, float] = {"single": 0.8, "two": 0.08, "count": 0.06, "relation": 0.06}
COMPOSITIONAL_MIX: dict[str, float] = {"single": 0.6, "two": 0.4}
#: held-out reference renders per prompt: render k of prompt ``key`` draws from index key * 64 + k of the reference
#: stream, so two prompts never share one (a suite's images_per_prompt is held to it)
REFERENCES_PER_KEY = 64


def check_images_per_prompt(n: int) -> None:
    """A micro suite's ``images_per_prompt``: at least 1, at most :data:`REFERENCES_PER_KEY`."""
    if n < 1:
        raise UsageError(f"suite.images_per_prompt must be >= 1, got {n}")
    if n > REFERENCES_PER_KEY:  # each image has a reference render of its own
        raise UsageError(f"suite.images_per_prompt must be <= {REFERENCES_PER_KEY} (the held-out reference renders of "
                         f"one prompt), got {n}")


def scene_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of scene ``index`` of ``split`` in stream ``seed``; splits never share one."""
    if split not in SPLITS:
        raise UsageError(f"unknown micro split {split!r}; expected one of {', '.join(SPLITS)}")
    return np.random.default_rng([SPLITS[split], int(seed), int(index)])


def allowed_pairs(split: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs ``split`` draws: the held-out ones in ``compositional``, all others elsewhere."""
    if split == "compositional":
        return sorted(HELD_OUT)
    return [(c, s) for c in S.COLORS for s in S.SHAPES if (c, s) not in HELD_OUT]


def default_mix(split: str) -> dict[str, float]:
    """The mix of scene kinds ``split`` draws when none is given."""
    return COMPOSITIONAL_MIX if split == "compositional" else DEFAULT_MIX


def draw_background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A light, slightly tinted flat background (RGB)."""
    level = int(rng.integers(215, 246))
    return tuple(int(np.clip(level + rng.integers(-6, 7), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def generate_scene(rng: np.random.Generator, kind: str, split: str = "train") -> S.Scene:
    """One scene of ``kind`` drawn from ``rng``; (colour, shape) pairs as allowed in ``split``.

    In the compositional split the second object of a two-object scene may also be a training pair, and captions
    always name colours (the split's point is the colour-shape pair)."""
    pairs = allowed_pairs(split)
    background = draw_background(rng)
    if split == "compositional":
        return S.draw_scene(rng, kind, pairs, background, partner_pairs=allowed_pairs("train") + pairs,
                            always_name_color=True)
    return S.draw_scene(rng, kind, pairs, background)


def realize(phrases: tuple[S.Phrase, ...] | list[S.Phrase], relation: Optional[str], rng: np.random.Generator,
            split: str = "test", p_striped: float = S.P_STRIPED_UNNAMED) -> S.Scene:
    """A scene the caption (``phrases``, ``relation``) is true of: named attributes as named, the others
    drawn from ``rng`` as the scenes of ``split`` behind such a caption show them (an unnamed colour from the
    split's pairs, an unnamed fill striped with ``p_striped``). The suites use it for held-out real images of their
    prompts' captions."""
    if not phrases:
        raise UsageError("cannot realise the empty caption")
    pairs = allowed_pairs(split) if split != "compositional" else [(c, s) for c in S.COLORS for s in S.SHAPES]
    return S.draw_scene_for(phrases, relation, rng, pairs, draw_background(rng), p_striped)


def iterate_scenes(split: str, seed: int = 0, mix: Optional[dict[str, float]] = None) -> Iterator[S.Scene]:
    """Endless deterministic stream of the scenes of ``split`` in stream ``seed``: scene ``i`` draws its kind (from
    ``mix``, default :func:`default_mix`) and its content from :func:`scene_rng` ``(split, i, seed)``."""
    kinds, cum = S.check_mix(default_mix(split) if mix is None else mix)  # now, not at the first scene

    def scenes() -> Iterator[S.Scene]:
        index = 0
        while True:
            rng = scene_rng(split, index, seed)
            yield generate_scene(rng, S.draw_kind(rng, kinds, cum), split)
            index += 1

    return scenes()


def make_scenes(split: str, n: int, mix: Optional[dict[str, float]] = None, seed: int = 0) -> list[S.Scene]:
    """The first ``n`` scenes of ``split`` (deterministic; a prefix of any longer call).

    ``mix`` gives the fraction of each kind (default :data:`DEFAULT_MIX`; the compositional split
    defaults to :data:`COMPOSITIONAL_MIX`). Each scene's kind is drawn from its own generator.
    """
    stream = iterate_scenes(split, seed, mix)
    return [next(stream) for _ in range(int(n))]


def scene_batches(stream: Iterator[S.Scene], batch_size: int) -> Iterator[list[S.Scene]]:
    """Consecutive lists of ``batch_size`` scenes of ``stream`` (batch ``b`` holds scenes ``b*batch_size ...``);
    any distribution's scene stream (this one's, micro-art's)."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    while True:
        yield [next(stream) for _ in range(batch_size)]


def rendered_batches(stream: Iterator[S.Scene], batch_size: int) -> Iterator[tuple[np.ndarray, list[str]]]:
    """(uint8 images [B,32,32,3], captions) of :func:`scene_batches`."""
    for scenes in scene_batches(stream, batch_size):
        yield S.render_batch(scenes), [s.caption for s in scenes]


def iterate_scene_batches(split: str, batch_size: int, seed: int, mix: Optional[dict[str, float]] = None
                          ) -> Iterator[list[S.Scene]]:
    """Endless deterministic stream of lists of ``batch_size`` scenes: batch ``b`` holds scenes ``b*batch_size ...``
    of stream ``seed``, so the stream is the same however it is consumed."""
    return scene_batches(iterate_scenes(split, seed, mix), batch_size)


def iterate_batches(split: str, batch_size: int, seed: int, mix: Optional[dict[str, float]] = None
                    ) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Endless deterministic stream of (uint8 images [B,32,32,3], captions) from ``split``.

    Batch ``b`` holds scenes ``b*batch_size ...`` of stream ``seed``, so the stream is the same
    however it is consumed; different seeds give different streams of the same split.
    """
    return rendered_batches(iterate_scenes(split, seed, mix), batch_size)
