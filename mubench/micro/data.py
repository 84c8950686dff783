"""The micro world's data: seeded procedural scenes of coloured shapes and their captions.

A :class:`Scene` holds 1–4 :class:`MicroObject` (shape, colour, fill, size, centre) on a light,
slightly tinted flat background, the caption that describes it and the caption's structure
(:class:`Phrase` noun phrases plus an optional spatial relation), which is the ground truth the
oracle is checked against. Captions follow a small grammar in the style of the real prompt sets::

    a red circle | a striped square | an orange triangle                 (kind "single")
    a blue square and a green triangle                                  (kind "two")
    two yellow circles | three squares                                  (kind "count")
    a red circle to the left of a blue square | ... above / below ...   (kind "relation")

Every scene is drawn from its own generator seeded by (split, stream seed, index), so
``make_scenes(split, n)`` is deterministic, a prefix of ``make_scenes(split, n + k)``, and the
splits never share a seed. The ``compositional`` split holds (colour, shape) pairs that the other
splits never draw (:data:`HELD_OUT`), so it tests combinations a model never saw in training.

Images are 32×32 uint8 RGB with hard edges (each pixel is either background or an object's
palette colour), so the oracle in :mod:`mubench.micro.oracle` can recover them exactly.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np

from ..errors import UsageError

IMAGE_SIZE = 32
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 75, 220),
    "yellow": (235, 210, 25),
    "purple": (135, 50, 185),
    "orange": (245, 125, 20),
}
FILLS: tuple[str, ...] = ("solid", "striped")
KINDS: tuple[str, ...] = ("single", "two", "count", "relation")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: dict[int, str] = {1: "a", 2: "two", 3: "three", 4: "four"}
SPLITS: dict[str, int] = {"train": 1, "val": 2, "test": 3, "compositional": 4}
# (colour, shape) pairs never drawn in train / val / test; the compositional split uses them.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("red", "triangle"), ("blue", "circle"), ("yellow", "square")})
DEFAULT_MIX: dict[str, float] = {"single": 0.8, "two": 0.08, "count": 0.06, "relation": 0.06}
COMPOSITIONAL_MIX: dict[str, float] = {"single": 0.6, "two": 0.4}

STRIPE_PERIOD = 4  # striped fill: a 1-px outline and horizontal stripes, 2 px on / 2 px off
MIN_GAP = 3  # pixels between the bounding boxes of two objects
# size (bounding-box side in px) range per number of objects in the scene
SIZE_RANGE: dict[int, tuple[int, int]] = {1: (14, 24), 2: (10, 15), 3: (9, 12), 4: (8, 11)}
P_COLOR_NAMED = 0.85  # probability that a caption names an object's colour
P_FILL_NAMED = {"striped": 0.9, "solid": 0.25}  # ... and its fill
P_STRIPED = 0.35  # probability that an object is striped


@dataclass(frozen=True)
class MicroObject:
    """One drawn object: ``size`` is its bounding-box side in pixels, (x, y) its centre (pixels, y down)."""

    shape: str
    color: str
    fill: str
    size: int
    x: float
    y: float

    def bbox(self) -> tuple[float, float, float, float]:
        h = self.size / 2
        return (self.x - h, self.y - h, self.x + h, self.y + h)


@dataclass(frozen=True)
class Phrase:
    """A noun phrase of a caption: what it names (None = not named) and how many."""

    shape: str
    color: Optional[str] = None
    fill: Optional[str] = None
    count: int = 1

    def text(self) -> str:
        words = [w for w in (self.fill, self.color) if w is not None]
        noun = self.shape + ("s" if self.count > 1 else "")
        if self.count == 1:
            first = (words[0] if words else noun)
            article = "an" if first[0] in "aeiou" else "a"
            return " ".join([article, *words, noun])
        return " ".join([NUMBER_WORDS[self.count], *words, noun])

    def matches(self, obj: MicroObject) -> bool:
        return (obj.shape == self.shape and (self.color is None or obj.color == self.color)
                and (self.fill is None or obj.fill == self.fill))


@dataclass(frozen=True)
class Scene:
    """A captioned scene. ``phrases``/``relation`` are the caption's structure (``relation`` relates
    phrase 0 to phrase 1: "A to the left of B" is ``("left of")``); ``background`` is RGB."""

    objects: tuple[MicroObject, ...]
    background: tuple[int, int, int]
    caption: str
    kind: str
    phrases: tuple[Phrase, ...] = field(default=())
    relation: Optional[str] = None


def caption_for(phrases: tuple[Phrase, ...] | list[Phrase], relation: Optional[str] = None) -> str:
    """The caption the grammar gives to these phrases (and relation between the first two)."""
    if not phrases:
        return ""
    if relation is not None:
        if len(phrases) != 2:
            raise ValueError("a relation needs exactly two phrases")
        joiner = {"left of": "to the left of", "right of": "to the right of", "above": "above",
                  "below": "below"}[relation]
        return f"{phrases[0].text()} {joiner} {phrases[1].text()}"
    return " and ".join(p.text() for p in phrases)


def parse_caption(caption: str) -> tuple[tuple[Phrase, ...], Optional[str]]:
    """Inverse of :func:`caption_for`: the phrases and relation of a caption of the grammar.

    Raises ``ValueError`` naming the offending word when the caption is not in the grammar.
    """
    words = caption.strip().split()
    if not words:
        return (), None
    plural = {s + "s": s for s in SHAPES}
    numbers = {w: n for n, w in NUMBER_WORDS.items()}
    numbers["an"] = 1
    phrases: list[Phrase] = []
    relation: Optional[str] = None
    i = 0

    def phrase() -> Phrase:
        nonlocal i
        if i >= len(words) or words[i] not in numbers:
            raise ValueError(f"caption {caption!r}: expected a number or article at word {i + 1}")
        count = numbers[words[i]]
        i += 1
        fill = color = None
        if i < len(words) and words[i] in FILLS:
            fill = words[i]
            i += 1
        if i < len(words) and words[i] in COLORS:
            color = words[i]
            i += 1
        if i >= len(words):
            raise ValueError(f"caption {caption!r}: missing a shape")
        noun = words[i]
        i += 1
        if count == 1 and noun in SHAPES:
            return Phrase(noun, color, fill, 1)
        if count > 1 and noun in plural:
            return Phrase(plural[noun], color, fill, count)
        raise ValueError(f"caption {caption!r}: unexpected word {noun!r}")

    phrases.append(phrase())
    while i < len(words):
        rest = words[i:]
        if rest[0] == "and":
            i += 1
        elif rest[:4] in (["to", "the", "left", "of"], ["to", "the", "right", "of"]):
            relation = rest[2] + " of"
            i += 4
        elif rest[0] in ("above", "below"):
            relation = rest[0]
            i += 1
        else:
            raise ValueError(f"caption {caption!r}: unexpected word {rest[0]!r}")
        phrases.append(phrase())
    if relation is not None and len(phrases) != 2:
        raise ValueError(f"caption {caption!r}: a relation joins exactly two phrases")
    return tuple(phrases), relation


def describes(phrases: tuple[Phrase, ...] | list[Phrase], relation: Optional[str],
              objects: tuple[MicroObject, ...] | list[MicroObject]) -> bool:
    """Is the caption (``phrases``, ``relation``) true of exactly these objects? Every object must be
    claimed by one phrase (counts exact), each phrase's named attributes must hold, and a relation
    must hold between the centres of the objects of phrase 0 and phrase 1. The empty caption
    describes everything."""
    if not phrases:
        return True
    if sum(p.count for p in phrases) != len(objects):
        return False
    slots = [p for p in phrases for _ in range(p.count)]
    owner = [i for i, p in enumerate(phrases) for _ in range(p.count)]
    for perm in itertools.permutations(range(len(objects))):
        if all(slots[k].matches(objects[perm[k]]) for k in range(len(slots))):
            if relation is None:
                return True
            a = [objects[perm[k]] for k in range(len(slots)) if owner[k] == 0]
            b = [objects[perm[k]] for k in range(len(slots)) if owner[k] == 1]
            if all(_relation_holds(relation, x, y) for x in a for y in b):
                return True
    return False


def _relation_holds(relation: str, a: MicroObject, b: MicroObject) -> bool:
    dx, dy = a.x - b.x, a.y - b.y
    return {"left of": dx < -abs(dy), "right of": dx > abs(dy), "above": dy < -abs(dx),
            "below": dy > abs(dx)}[relation]


# ---------------------------------------------------------------------------------------------
# scene generation


def scene_rng(split: str, index: int, seed: int = 0) -> np.random.Generator:
    """The generator of scene ``index`` of ``split`` in stream ``seed``; splits never share one."""
    if split not in SPLITS:
        raise UsageError(f"unknown micro split {split!r}; expected one of {', '.join(SPLITS)}")
    return np.random.default_rng([SPLITS[split], int(seed), int(index)])


def _check_mix(mix: dict[str, float]) -> tuple[list[str], np.ndarray]:
    bad = [k for k in mix if k not in KINDS]
    if bad:
        raise UsageError(f"unknown scene kind(s) {bad} in mix; expected some of {', '.join(KINDS)}")
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    weights = np.array([float(mix[k]) for k in kinds])
    if not kinds or np.any(weights < 0):
        raise UsageError(f"scene mix {mix} must give a positive weight to at least one kind")
    return kinds, np.cumsum(weights / weights.sum())


def _allowed_pairs(split: str) -> list[tuple[str, str]]:
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    if split == "compositional":
        return sorted(HELD_OUT)
    return [p for p in pairs if p not in HELD_OUT]


def _place(rng: np.random.Generator, sizes: list[int], relation: Optional[str]) -> Optional[list[tuple[float, float]]]:
    """Centres for objects of these sizes: inside the image, bounding boxes ≥ MIN_GAP apart, and for
    a relation, object 0 clearly on that side of object 1. None when no placement was found."""
    for _ in range(200):
        centres = []
        for size in sizes:
            lo, hi = size / 2 + 1, IMAGE_SIZE - size / 2 - 1
            # integer or half-integer centres so that the object's box lands on pixel edges
            x = np.floor(rng.uniform(lo, hi)) + (size % 2) * 0.5
            y = np.floor(rng.uniform(lo, hi)) + (size % 2) * 0.5
            centres.append((float(x), float(y)))
        ok = True
        for a in range(len(sizes)):
            for b in range(a):
                gap = (sizes[a] + sizes[b]) / 2 + MIN_GAP
                if abs(centres[a][0] - centres[b][0]) < gap and abs(centres[a][1] - centres[b][1]) < gap:
                    ok = False
        if ok and relation is not None:
            (x0, y0), (x1, y1) = centres
            dx, dy = x1 - x0, y1 - y0  # object 0 relative to object 1: "left of" means x0 < x1
            margin = (sizes[0] + sizes[1]) / 2  # a clear separation along the relation's axis
            if relation == "left of":
                ok = dx >= margin and abs(dy) < dx
            elif relation == "right of":
                ok = -dx >= margin and abs(dy) < -dx
            elif relation == "above":
                ok = dy >= margin and abs(dx) < dy
            else:
                ok = -dy >= margin and abs(dx) < -dy
        if ok:
            return centres
    return None


def _draw_fill(rng: np.random.Generator) -> str:
    return "striped" if rng.random() < P_STRIPED else "solid"


def _name(rng: np.random.Generator, shape: str, color: str, fill: str, count: int = 1,
          force_color: bool = False) -> Phrase:
    named_color = color if (force_color or rng.random() < P_COLOR_NAMED) else None
    named_fill = fill if rng.random() < P_FILL_NAMED[fill] else None
    return Phrase(shape, named_color, named_fill, count)


def generate_scene(rng: np.random.Generator, kind: str, split: str = "train") -> Scene:
    """One scene of ``kind`` drawn from ``rng``; (colour, shape) pairs as allowed in ``split``."""
    pairs = _allowed_pairs(split)
    bg_level = int(rng.integers(215, 246))
    background = tuple(int(np.clip(bg_level + rng.integers(-6, 7), 0, 255)) for _ in range(3))
    for _ in range(50):
        relation = None
        if kind == "single":
            combos = [pairs[rng.integers(len(pairs))]]
            fills = [_draw_fill(rng)]
        elif kind in ("two", "relation"):
            first = pairs[rng.integers(len(pairs))]
            others = [p for p in (pairs if split != "compositional" else _allowed_pairs("train") + pairs)
                      if p != first]
            combos = [first, others[rng.integers(len(others))]]
            fills = [_draw_fill(rng), _draw_fill(rng)]
            if kind == "relation":
                relation = RELATIONS[rng.integers(len(RELATIONS))]
        elif kind == "count":
            n = int(rng.integers(2, 5))
            shape = SHAPES[rng.integers(len(SHAPES))]
            colors = [c for c, s in pairs if s == shape]
            color = colors[rng.integers(len(colors))]
            fill = _draw_fill(rng)
            combos, fills = [(color, shape)] * n, [fill] * n
        else:
            raise UsageError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
        lo, hi = SIZE_RANGE[len(combos)]
        sizes = [int(rng.integers(lo, hi + 1)) for _ in combos]
        centres = _place(rng, sizes, relation)
        if centres is None:
            continue
        objects = tuple(MicroObject(s, c, f, size, x, y)
                        for (c, s), f, size, (x, y) in zip(combos, fills, sizes, centres))
        if kind == "count":
            phrases: tuple[Phrase, ...] = (_name(rng, combos[0][1], combos[0][0], fills[0], len(combos),
                                                 force_color=split == "compositional"),)
        else:
            # a two-object caption must tell its objects apart: name colours when shapes coincide
            # (and always in the compositional split, whose point is the colour-shape pair)
            force = split == "compositional" or (len(objects) == 2 and objects[0].shape == objects[1].shape)
            phrases = tuple(_name(rng, o.shape, o.color, o.fill, force_color=force) for o in objects)
        return Scene(objects, background, caption_for(phrases, relation), kind, phrases, relation)  # type: ignore[arg-type]
    raise RuntimeError(f"could not place a {kind} scene")  # pragma: no cover - sizes always fit


def realize(phrases: tuple[Phrase, ...] | list[Phrase], relation: Optional[str], rng: np.random.Generator,
            split: str = "test") -> Scene:
    """A scene the caption (``phrases``, ``relation``) is true of: named attributes as named, the others
    drawn from ``rng`` as ``split`` draws them (colours of an unnamed colour from the split's pairs).
    The suites use it for held-out real images of their prompts' captions."""
    if not phrases:
        raise UsageError("cannot realise the empty caption")
    pairs = _allowed_pairs(split) if split != "compositional" else [(c, s) for c in COLORS for s in SHAPES]
    bg_level = int(rng.integers(215, 246))
    background = tuple(int(np.clip(bg_level + rng.integers(-6, 7), 0, 255)) for _ in range(3))
    n = sum(p.count for p in phrases)
    if n > 4:
        raise UsageError(f"a micro scene holds at most 4 objects; the caption names {n}")
    for _ in range(50):
        specs = []
        for ph in phrases:
            colors = [c for c, sh in pairs if sh == ph.shape] if ph.color is None else [ph.color]
            color = colors[rng.integers(len(colors))]
            fill = ph.fill or _draw_fill(rng)
            specs += [(ph.shape, color, fill)] * ph.count  # a plural phrase: one colour, one fill
        lo, hi = SIZE_RANGE[n]
        sizes = [int(rng.integers(lo, hi + 1)) for _ in specs]
        centres = _place(rng, sizes, relation)
        if centres is None:
            continue
        objects = tuple(MicroObject(sh, c, f, size, x, y) for (sh, c, f), size, (x, y) in zip(specs, sizes, centres))
        kind = "relation" if relation else ("count" if phrases[0].count > 1 else ("single" if n == 1 else "two"))
        return Scene(objects, background, caption_for(phrases, relation), kind, tuple(phrases), relation)  # type: ignore[arg-type]
    raise RuntimeError(f"could not place a scene for {caption_for(phrases, relation)!r}")  # pragma: no cover


def make_scenes(split: str, n: int, mix: Optional[dict[str, float]] = None, seed: int = 0) -> list[Scene]:
    """The first ``n`` scenes of ``split`` (deterministic; a prefix of any longer call).

    ``mix`` gives the fraction of each kind (default :data:`DEFAULT_MIX`; the compositional split
    defaults to :data:`COMPOSITIONAL_MIX`). Each scene's kind is drawn from its own generator.
    """
    if mix is None:
        mix = COMPOSITIONAL_MIX if split == "compositional" else DEFAULT_MIX
    kinds, cum = _check_mix(mix)
    scenes = []
    for i in range(int(n)):
        rng = scene_rng(split, i, seed)
        kind = kinds[min(int(np.searchsorted(cum, rng.random(), side="right")), len(kinds) - 1)]
        scenes.append(generate_scene(rng, kind, split))
    return scenes


# ---------------------------------------------------------------------------------------------
# rendering


def object_mask(obj: MicroObject, size: int = IMAGE_SIZE) -> np.ndarray:
    """Boolean [size, size] silhouette of ``obj`` (pixel centres inside the shape)."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    dx, dy, h = xs - obj.x, ys - obj.y, obj.size / 2
    if obj.shape == "circle":
        return dx * dx + dy * dy <= h * h
    if obj.shape == "square":
        s = h * 0.9  # a slightly smaller square has about the circle's visual weight
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if obj.shape == "triangle":  # apex up, base at the bottom of the box
        inside_y = (dy >= -h) & (dy <= h)
        half_width = (dy + h) / 2  # 0 at the apex, h at the base
        return inside_y & (np.abs(dx) <= half_width + 0.25)
    raise ValueError(f"unknown shape {obj.shape!r}")


def fill_pattern(obj: MicroObject, silhouette: np.ndarray) -> np.ndarray:
    """Pixels of the silhouette painted in the object's colour (all of them when solid)."""
    if obj.fill == "solid":
        return silhouette
    interior = silhouette.copy()
    interior[1:, :] &= silhouette[:-1, :]
    interior[:-1, :] &= silhouette[1:, :]
    interior[:, 1:] &= silhouette[:, :-1]
    interior[:, :-1] &= silhouette[:, 1:]
    outline = silhouette & ~interior
    rows = (np.arange(silhouette.shape[0]) % STRIPE_PERIOD) < STRIPE_PERIOD // 2
    return outline | (interior & rows[:, None])


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 [32, 32, 3]."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    img[...] = np.asarray(scene.background, dtype=np.uint8)
    for obj in scene.objects:
        paint = fill_pattern(obj, object_mask(obj))
        img[paint] = np.asarray(COLORS[obj.color], dtype=np.uint8)
    return img


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """uint8 [N, 32, 32, 3]."""
    if not scenes:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return np.stack([render(s) for s in scenes])


def iterate_batches(split: str, batch_size: int, seed: int, mix: Optional[dict[str, float]] = None
                    ) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Endless deterministic stream of (uint8 images [B,32,32,3], captions) from ``split``.

    Batch ``b`` holds scenes ``b*batch_size ...`` of stream ``seed``, so the stream is the same
    however it is consumed; different seeds give different streams of the same split.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if mix is None:
        mix = COMPOSITIONAL_MIX if split == "compositional" else DEFAULT_MIX
    kinds, cum = _check_mix(mix)
    index = 0
    while True:
        scenes = []
        for _ in range(batch_size):
            rng = scene_rng(split, index, seed)
            kind = kinds[min(int(np.searchsorted(cum, rng.random(), side="right")), len(kinds) - 1)]
            scenes.append(generate_scene(rng, kind, split))
            index += 1
        yield render_batch(scenes), [s.caption for s in scenes]
