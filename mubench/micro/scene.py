"""The micro world's scene grammar: objects, captions, placement and rendering, shared by its distributions.

A :class:`Scene` holds 1–4 :class:`MicroObject` (shape, colour, fill, size, centre) on a background, the caption
that describes it and the caption's structure (:class:`Phrase` noun phrases plus an optional spatial relation),
which is the ground truth the oracle is checked against. Captions follow a small grammar in the style of the real
prompt sets::

    a red circle | a striped square | an orange triangle                 (kind "single")
    a blue square and a green triangle                                  (kind "two")
    two yellow circles | three squares                                  (kind "count")
    a red circle to the left of a blue square | ... above / below ...   (kind "relation")

A distribution (:mod:`mubench.micro.data` for the base ``micro`` world, :mod:`mubench.micro.classes` for its
class-conditional view) decides which (colour, shape) pairs it draws, its background and its seeds; this module
draws a scene of a kind from those (:func:`draw_scene`), or a scene a given caption is true of
(:func:`draw_scene_for`), always from a generator it is handed, never from global state.

Images are 32×32 uint8 RGB with hard edges (each pixel is either background or an object's palette colour), so
the oracle in :mod:`mubench.micro.oracle` can recover them exactly.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional

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
STRIPE_PERIOD = 4  # striped fill: a 1-px outline and horizontal stripes, 2 px on / 2 px off
MIN_GAP = 3  # pixels between the bounding boxes of two objects
# size (bounding-box side in px) range per number of objects in the scene
SIZE_RANGE: dict[int, tuple[int, int]] = {1: (14, 24), 2: (10, 15), 3: (9, 12), 4: (8, 11)}
P_COLOR_NAMED = 0.85  # probability that a caption names an object's colour
P_FILL_NAMED = {"striped": 0.9, "solid": 0.25}  # ... and its fill
P_STRIPED = 0.35  # probability that an object is striped
#: P(striped | the caption names no fill) ≈ 0.067 (Bayes over the two above): what the scenes behind such
#: a caption show
P_STRIPED_UNNAMED = (P_STRIPED * (1 - P_FILL_NAMED["striped"])
                     / (P_STRIPED * (1 - P_FILL_NAMED["striped"]) + (1 - P_STRIPED) * (1 - P_FILL_NAMED["solid"])))


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
            if all(relation_holds(relation, x, y) for x in a for y in b):
                return True
    return False


def relation_holds(relation: str, a: MicroObject, b: MicroObject) -> bool:
    dx, dy = a.x - b.x, a.y - b.y
    return {"left of": dx < -abs(dy), "right of": dx > abs(dy), "above": dy < -abs(dx),
            "below": dy > abs(dx)}[relation]


# ---------------------------------------------------------------------------------------------
# drawing scenes


def check_mix(mix: dict[str, float]) -> tuple[list[str], np.ndarray]:
    """The kinds a scene mix draws and their cumulative probabilities (for :func:`draw_kind`)."""
    bad = [k for k in mix if k not in KINDS]
    if bad:
        raise UsageError(f"unknown scene kind(s) {bad} in mix; expected some of {', '.join(KINDS)}")
    kinds = [k for k in KINDS if mix.get(k, 0) > 0]
    weights = np.array([float(mix[k]) for k in kinds])
    if not kinds or np.any(weights < 0):
        raise UsageError(f"scene mix {mix} must give a positive weight to at least one kind")
    return kinds, np.cumsum(weights / weights.sum())


def draw_kind(rng: np.random.Generator, kinds: list[str], cum: np.ndarray) -> str:
    """A scene kind drawn from ``rng`` with the probabilities of :func:`check_mix`'s ``(kinds, cum)``."""
    return kinds[min(int(np.searchsorted(cum, rng.random(), side="right")), len(kinds) - 1)]


def place_objects(rng: np.random.Generator, sizes: list[int], relation: Optional[str]) -> Optional[list[tuple[float, float]]]:
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
            along, across = {"left of": (dx, dy), "right of": (-dx, dy),
                             "above": (dy, dx), "below": (-dy, dx)}[relation]
            ok = along >= margin and abs(across) < along
        if ok:
            return centres
    return None


def draw_fill(rng: np.random.Generator, p_striped: float = P_STRIPED) -> str:
    """An object's fill as scenes draw it (``p_striped=P_STRIPED_UNNAMED``: as scenes whose caption names none)."""
    return "striped" if rng.random() < p_striped else "solid"


def name_object(rng: np.random.Generator, shape: str, color: str, fill: str, count: int = 1,
                force_color: bool = False) -> Phrase:
    """The phrase a caption uses for an object (or ``count`` equal ones): colour and fill named at random."""
    named_color = color if (force_color or rng.random() < P_COLOR_NAMED) else None
    named_fill = fill if rng.random() < P_FILL_NAMED[fill] else None
    return Phrase(shape, named_color, named_fill, count)


def draw_scene(rng: np.random.Generator, kind: str, pairs: list[tuple[str, str]], background: tuple[int, int, int],
               *, partner_pairs: Optional[list[tuple[str, str]]] = None, always_name_color: bool = False) -> Scene:
    """One scene of ``kind`` on ``background`` drawn from ``rng``: its objects' (colour, shape) pairs from ``pairs``
    (the second object of a two-object scene from ``partner_pairs``, default ``pairs``); ``always_name_color``
    makes every caption name its objects' colours."""
    partners = pairs if partner_pairs is None else partner_pairs
    for _ in range(50):
        relation = None
        if kind == "single":
            combos = [pairs[rng.integers(len(pairs))]]
            fills = [draw_fill(rng)]
        elif kind in ("two", "relation"):
            first = pairs[rng.integers(len(pairs))]
            others = [p for p in partners if p != first]
            combos = [first, others[rng.integers(len(others))]]
            fills = [draw_fill(rng), draw_fill(rng)]
            if kind == "relation":
                relation = RELATIONS[rng.integers(len(RELATIONS))]
        elif kind == "count":
            n = int(rng.integers(2, 5))
            shape = SHAPES[rng.integers(len(SHAPES))]
            colors = [c for c, s in pairs if s == shape]
            color = colors[rng.integers(len(colors))]
            fill = draw_fill(rng)
            combos, fills = [(color, shape)] * n, [fill] * n
        else:
            raise UsageError(f"unknown scene kind {kind!r}; expected one of {', '.join(KINDS)}")
        lo, hi = SIZE_RANGE[len(combos)]
        sizes = [int(rng.integers(lo, hi + 1)) for _ in combos]
        centres = place_objects(rng, sizes, relation)
        if centres is None:
            continue
        objects = tuple(MicroObject(s, c, f, size, x, y)
                        for (c, s), f, size, (x, y) in zip(combos, fills, sizes, centres))
        if kind == "count":
            phrases: tuple[Phrase, ...] = (name_object(rng, combos[0][1], combos[0][0], fills[0], len(combos),
                                                       force_color=always_name_color),)
        else:
            # a two-object caption must tell its objects apart: name colours when shapes coincide
            force = always_name_color or (len(objects) == 2 and objects[0].shape == objects[1].shape)
            phrases = tuple(name_object(rng, o.shape, o.color, o.fill, force_color=force) for o in objects)
        return Scene(objects, background, caption_for(phrases, relation), kind, phrases, relation)  # type: ignore[arg-type]
    raise RuntimeError(f"could not place a {kind} scene")  # pragma: no cover - sizes always fit


def draw_scene_for(phrases: tuple[Phrase, ...] | list[Phrase], relation: Optional[str], rng: np.random.Generator,
                   pairs: list[tuple[str, str]], background: tuple[int, int, int],
                   p_striped: float = P_STRIPED_UNNAMED) -> Scene:
    """A scene on ``background`` the caption (``phrases``, ``relation``) is true of: named attributes as named, the
    others drawn from ``rng`` (the colour of a phrase that names none from ``pairs``, its fill striped with
    ``p_striped``: by default as the scenes behind such captions show it; the micro-class classes use P_STRIPED)."""
    if not phrases:
        raise UsageError("cannot realise the empty caption")
    n = sum(p.count for p in phrases)
    if n > 4:
        raise UsageError(f"a micro scene holds at most 4 objects; the caption names {n}")
    for _ in range(50):
        specs = []
        for ph in phrases:
            colors = [c for c, sh in pairs if sh == ph.shape] if ph.color is None else [ph.color]
            color = colors[rng.integers(len(colors))]
            fill = ph.fill or draw_fill(rng, p_striped)
            specs += [(ph.shape, color, fill)] * ph.count  # a plural phrase: one colour, one fill
        lo, hi = SIZE_RANGE[n]
        sizes = [int(rng.integers(lo, hi + 1)) for _ in specs]
        centres = place_objects(rng, sizes, relation)
        if centres is None:
            continue
        objects = tuple(MicroObject(sh, c, f, size, x, y) for (sh, c, f), size, (x, y) in zip(specs, sizes, centres))
        kind = "relation" if relation else ("count" if phrases[0].count > 1 else ("single" if n == 1 else "two"))
        return Scene(objects, background, caption_for(phrases, relation), kind, tuple(phrases), relation)  # type: ignore[arg-type]
    raise RuntimeError(f"could not place a scene for {caption_for(phrases, relation)!r}")  # pragma: no cover


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


def paint_objects(img: np.ndarray, objects: tuple[MicroObject, ...] | list[MicroObject]) -> np.ndarray:
    """Paint ``objects`` (in order, later ones on top) onto ``img`` (uint8 [32, 32, 3], in place); returns it."""
    for obj in objects:
        paint = fill_pattern(obj, object_mask(obj))
        img[paint] = np.asarray(COLORS[obj.color], dtype=np.uint8)
    return img


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 [32, 32, 3]: its objects on its flat background."""
    img = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    img[...] = np.asarray(scene.background, dtype=np.uint8)
    return paint_objects(img, scene.objects)


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """uint8 [N, 32, 32, 3]."""
    if not scenes:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return np.stack([render(s) for s in scenes])
