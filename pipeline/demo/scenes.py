"""Procedural boat scenes for the demo workspace: pixels plus the tight box of everything drawn.

A scene is a sky gradient over water, then objects drawn flat (no anti-aliasing) from back to
front. Every object is drawn twice: in colour on the picture and in white on its own mask, so
its box and its four extreme points are exactly the extent of its pixels (boxes are
``xyxy_px`` with an exclusive right/bottom edge, i.e. ``xyxy_rel`` once divided by the size).

Colours are chosen so that sky and water are always blue-dominant and every object is not:
:func:`object_mask` separates them, which is how tests check that boxes line up with pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# Background colours (RGB). Sky goes top → horizon, water horizon → bottom.
SKY_TOP_COLOR = (96, 150, 222)
SKY_COLOR = (165, 200, 238)          # at the horizon
WATER_COLOR = (38, 98, 150)          # at the horizon
WATER_DEEP_COLOR = (18, 58, 108)     # at the bottom edge
NOISE_SIGMA = 3.0                    # background grain, so JPEGs look like photos, not cartoons

# Object colours: none of them is blue-dominant (see object_mask).
HULL_COLORS = ((212, 36, 36), (236, 196, 22), (238, 118, 14), (40, 160, 64), (200, 40, 140))
CABIN_COLOR = (242, 240, 232)
WINDOW_COLOR = (60, 56, 52)
SAIL_COLOR = (250, 244, 226)
MAST_COLOR = (96, 62, 30)
BARGE_COLOR = (128, 66, 40)
CARGO_COLORS = ((204, 120, 32), (160, 150, 40), (150, 40, 30))
GONDOLA_COLOR = (24, 22, 20)
CANOE_COLORS = ((196, 70, 28), (222, 170, 44))
JETSKI_COLOR = (246, 226, 30)
SEAT_COLOR = (30, 28, 26)
SKIN_COLOR = (226, 178, 136)
SHIRT_COLORS = ((220, 60, 60), (60, 160, 80), (230, 200, 40))
TROUSER_COLOR = (70, 60, 50)
SURFBOARD_COLOR = (250, 226, 120)
MAGPIE_BLACK = (20, 20, 24)
MAGPIE_WHITE = (236, 236, 236)
CANVAS_COLOR = (236, 228, 204)
DECK_COLOR = (176, 124, 72)
FRAME_COLOR = (110, 76, 40)
DRAWING_COLORS = ((150, 110, 90), (120, 120, 60))

# A pixel is background when blue exceeds red by at least this much (sky and water always do).
BACKGROUND_BLUE_MARGIN = 40

# Scene kinds, and the boat styles that each class is drawn with.
KINDS = ("boats", "group", "distractor", "depiction", "inside", "empty")
BOAT_STYLES = {"Boat": ("sailboat", "motorboat"), "Barge": ("barge",), "Gondola": ("gondola",),
               "Canoe": ("canoe",), "Jet ski": ("jetski",)}


@dataclass
class DrawnObject:
    """One annotated object: class name, its pixel box and extreme points, and Open Images flags.

    ``box`` is ``xyxy_px`` (x0, y0, x1, y1) with x1/y1 exclusive, clipped to the image.
    ``extremes`` are the four extreme points (left, top, right, bottom) in the same pixel frame.
    """

    name: str
    box: tuple[int, int, int, int]
    extremes: list[tuple[float, float]]
    truncated: bool = False
    occluded: bool = False
    group_of: bool = False
    depiction: bool = False
    inside: bool = False
    mask: np.ndarray | None = field(default=None, repr=False)


class _Canvas:
    """The picture plus a drawing helper that also paints one object's mask."""

    def __init__(self, image: Image.Image):
        self.image = image
        self.draw = ImageDraw.Draw(image)

    def paint(self, shapes: list[tuple]) -> np.ndarray:
        """Draw ``shapes`` (kind, geometry, colour[, width]) in colour; return their bool mask."""
        mask = Image.new("L", self.image.size, 0)
        mdraw = ImageDraw.Draw(mask)
        for shape in shapes:
            kind, geom, color = shape[:3]
            for target, fill in ((self.draw, color), (mdraw, 255)):
                if kind == "polygon":
                    target.polygon(geom, fill=fill)
                elif kind == "rect":
                    target.rectangle(geom, fill=fill)
                elif kind == "ellipse":
                    target.ellipse(geom, fill=fill)
                elif kind == "line":
                    target.line(geom, fill=fill, width=shape[3])
        return np.asarray(mask) > 0


def object_mask(rgb: np.ndarray) -> np.ndarray:
    """Bool (H, W) mask of the pixels that are not sky or water in an RGB demo picture."""
    rgb = np.asarray(rgb).astype(np.int16)
    return (rgb[..., 2] - rgb[..., 0]) < BACKGROUND_BLUE_MARGIN


def mask_extent(mask: np.ndarray) -> tuple[tuple[int, int, int, int], list[tuple[float, float]]] | None:
    """Tight ``xyxy_px`` box (exclusive x1/y1) and extreme points (left, top, right, bottom) of a mask."""
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    x0, x1, y0, y1 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    left = (float(x0), float(np.flatnonzero(mask[:, x0]).mean()) + 0.5)
    right = (float(x1), float(np.flatnonzero(mask[:, x1 - 1]).mean()) + 0.5)
    top = (float(np.flatnonzero(mask[y0]).mean()) + 0.5, float(y0))
    bottom = (float(np.flatnonzero(mask[y1 - 1]).mean()) + 0.5, float(y1))
    return (x0, y0, x1, y1), [left, top, right, bottom]


def background(rng: np.random.Generator, width: int, height: int, horizon: int) -> Image.Image:
    """Sky gradient above ``horizon``, water gradient below, with a little grain."""
    rows = np.empty((height, 3), dtype=np.float32)
    t_sky = np.linspace(0.0, 1.0, max(horizon, 1), dtype=np.float32)[:, None]
    rows[:horizon] = (1 - t_sky) * np.array(SKY_TOP_COLOR) + t_sky * np.array(SKY_COLOR)
    t_sea = np.linspace(0.0, 1.0, max(height - horizon, 1), dtype=np.float32)[:, None]
    rows[horizon:] = (1 - t_sea) * np.array(WATER_COLOR) + t_sea * np.array(WATER_DEEP_COLOR)
    pixels = np.repeat(rows[:, None, :], width, axis=1)
    pixels += rng.normal(0.0, NOISE_SIGMA, size=(height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))  # (H, W, 3) uint8 → RGB


# --- object shapes, in local units: u along the hull (0 = stern, 1 = bow), v up from the waterline.

def _placer(x: float, waterline: float, length: float, facing: int):
    """Map local (u, v) to pixels; ``facing`` +1 puts the bow on the right, -1 on the left."""
    def to_px(u: float, v: float) -> tuple[float, float]:
        along = u if facing > 0 else 1.0 - u
        return (x + along * length, waterline - v * length)
    return to_px


def _poly(to_px, points) -> list[tuple[float, float]]:
    return [to_px(u, v) for u, v in points]


def boat_shapes(style: str, to_px, length: float, rng: np.random.Generator) -> list[tuple]:
    """The flat shapes of one boat of ``style`` (see BOAT_STYLES)."""
    width = max(1, int(round(length / 60)))
    if style == "sailboat":
        hull = HULL_COLORS[int(rng.integers(len(HULL_COLORS)))]
        return [("polygon", _poly(to_px, [(0.06, 0), (0.86, 0), (1.0, 0.2), (0.0, 0.16)]), hull),
                ("line", _poly(to_px, [(0.45, 0.16), (0.45, 1.05)]), MAST_COLOR, width),
                ("polygon", _poly(to_px, [(0.48, 0.24), (0.48, 1.0), (0.84, 0.24)]), SAIL_COLOR)]
    if style == "motorboat":
        hull = HULL_COLORS[int(rng.integers(len(HULL_COLORS)))]
        return [("polygon", _poly(to_px, [(0.05, 0), (0.84, 0), (1.0, 0.2), (0.0, 0.18)]), hull),
                ("polygon", _poly(to_px, [(0.22, 0.18), (0.22, 0.36), (0.5, 0.36), (0.62, 0.19)]), CABIN_COLOR),
                ("polygon", _poly(to_px, [(0.27, 0.25), (0.27, 0.32), (0.45, 0.32), (0.45, 0.25)]), WINDOW_COLOR)]
    if style == "barge":
        cargo = [("polygon", _poly(to_px, [(0.08 + 0.22 * i, 0.09), (0.08 + 0.22 * i, 0.17),
                                           (0.27 + 0.22 * i, 0.17), (0.27 + 0.22 * i, 0.09)]),
                  CARGO_COLORS[i % len(CARGO_COLORS)]) for i in range(4)]
        return [("polygon", _poly(to_px, [(0.0, 0), (1.0, 0), (1.0, 0.09), (0.0, 0.09)]), BARGE_COLOR)] + cargo
    if style == "gondola":
        return [("polygon", _poly(to_px, [(0.12, 0), (0.88, 0), (1.0, 0.22), (0.96, 0.23), (0.86, 0.06),
                                          (0.14, 0.06), (0.03, 0.16), (0.0, 0.14)]), GONDOLA_COLOR)]
    if style == "canoe":
        color = CANOE_COLORS[int(rng.integers(len(CANOE_COLORS)))]
        return [("polygon", _poly(to_px, [(0.08, 0), (0.92, 0), (1.0, 0.11), (0.0, 0.11)]), color)]
    if style == "jetski":
        return [("polygon", _poly(to_px, [(0.0, 0), (0.85, 0), (1.0, 0.16), (0.1, 0.2)]), JETSKI_COLOR),
                ("polygon", _poly(to_px, [(0.25, 0.18), (0.25, 0.28), (0.6, 0.28), (0.6, 0.18)]), SEAT_COLOR)]
    raise ValueError(f"unknown boat style {style!r}")


def person_shapes(x: float, feet: float, height: float, rng: np.random.Generator) -> list[tuple]:
    """A standing person: legs, torso, head (``x`` is the centre, ``feet`` the bottom row)."""
    w = height * 0.3
    shirt = SHIRT_COLORS[int(rng.integers(len(SHIRT_COLORS)))]
    head = height * 0.16
    return [("rect", [x - w * 0.35, feet - height * 0.45, x + w * 0.35, feet - 1], TROUSER_COLOR),
            ("rect", [x - w / 2, feet - height * 0.82, x + w / 2, feet - height * 0.45], shirt),
            ("ellipse", [x - head / 2, feet - height, x + head / 2, feet - height + head], SKIN_COLOR)]


def surfboard_shapes(x: float, y: float, length: float) -> list[tuple]:
    """A surfboard lying flat on the water, seen from the side (``x`` left end, ``y`` centre row)."""
    return [("ellipse", [x, y - length * 0.07, x + length, y + length * 0.07], SURFBOARD_COLOR)]


def magpie_shapes(x: float, y: float, size: float) -> list[tuple]:
    """A black-and-white bird in the sky (body, white belly, tail, head)."""
    return [("polygon", [(x, y + size * 0.2), (x + size * 0.35, y + size * 0.3), (x + size * 0.35, y + size * 0.4)],
             MAGPIE_BLACK),
            ("ellipse", [x + size * 0.3, y + size * 0.15, x + size * 0.85, y + size * 0.5], MAGPIE_BLACK),
            ("ellipse", [x + size * 0.45, y + size * 0.3, x + size * 0.75, y + size * 0.48], MAGPIE_WHITE),
            ("ellipse", [x + size * 0.72, y, x + size, y + size * 0.28], MAGPIE_BLACK)]


# --- composing a scene

# Relative frequency of each class among single boats, and its length relative to a Boat.
BOAT_CLASS_WEIGHTS = {"Boat": 0.70, "Canoe": 0.08, "Barge": 0.07, "Gondola": 0.07, "Jet ski": 0.08}
BOAT_LENGTH_FACTOR = {"Boat": 1.0, "Canoe": 0.8, "Barge": 1.4, "Gondola": 1.0, "Jet ski": 0.45}
TRUNCATE_PROBABILITY = 0.15   # first boat of a scene crosses the left or right edge
OVERLAP_PROBABILITY = 0.15    # a boat may sit partly behind another (IsOccluded)
MIN_BOAT_PX = 18


@dataclass
class _Planned:
    name: str
    shapes: list[tuple]
    depth: float                   # waterline row: larger = nearer = drawn later
    group_of: bool = False
    depiction: bool = False
    inside: bool = False


def _geometry_box(shapes: list[tuple]) -> tuple[float, float, float, float]:
    """Unclipped extent of a list of shapes, in pixels."""
    xs, ys = [], []
    for shape in shapes:
        geom = shape[1]
        pts = geom if isinstance(geom[0], tuple) else [(geom[0], geom[1]), (geom[2], geom[3])]
        pad = shape[3] / 2 if shape[0] == "line" else 0.0
        xs += [p[0] - pad for p in pts] + [p[0] + pad for p in pts]
        ys += [p[1] for p in pts]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _plan_boat(rng, name: str, width: int, height: int, horizon: int, at_edge: bool) -> _Planned:
    waterline = float(rng.uniform(horizon + 0.1 * (height - horizon), height - 0.04 * height))
    depth = (waterline - horizon) / (height - horizon)
    length = width * (0.12 + 0.3 * depth) * BOAT_LENGTH_FACTOR[name] * float(rng.uniform(0.8, 1.2))
    length = max(length, MIN_BOAT_PX)
    if at_edge:
        # part of the hull beyond the left or the right edge
        if rng.random() < 0.5:
            x = -float(rng.uniform(0.25, 0.5)) * length
        else:
            x = width - float(rng.uniform(0.5, 0.75)) * length
    else:
        x = float(rng.uniform(0, max(1.0, width - length - 1)))
    facing = 1 if rng.random() < 0.5 else -1
    styles = BOAT_STYLES[name]
    style = styles[int(rng.integers(len(styles)))]
    shapes = boat_shapes(style, _placer(x, waterline, length, facing), length, rng)
    return _Planned(name, shapes, waterline)


def _overlap(a, b, margin: float = 3.0) -> float:
    """Intersection over the smaller box, after growing ``a`` by ``margin`` (0 when apart)."""
    ix = min(a[2] + margin, b[2]) - max(a[0] - margin, b[0])
    iy = min(a[3] + margin, b[3]) - max(a[1] - margin, b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    return ix * iy / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _plan_boats(rng, count: int, width: int, height: int, horizon: int, taken: list) -> list[_Planned]:
    """Up to ``count`` single boats, mostly apart, sometimes partly overlapping."""
    names = list(BOAT_CLASS_WEIGHTS)
    weights = np.array(list(BOAT_CLASS_WEIGHTS.values()))
    planned = []
    for i in range(count):
        for _ in range(25):
            name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            at_edge = i == 0 and rng.random() < TRUNCATE_PROBABILITY
            boat = _plan_boat(rng, name, width, height, horizon, at_edge)
            box = _geometry_box(boat.shapes)
            limit = 0.35 if rng.random() < OVERLAP_PROBABILITY else 0.0
            if all(_overlap(box, other) <= limit for other in taken):
                taken.append(box)
                planned.append(boat)
                break
    return planned


def _plan_group(rng, width: int, height: int, horizon: int) -> _Planned:
    """Five to eight small touching boats in a row: one group-of Boat box, no per-boat boxes."""
    count = int(rng.integers(5, 9))
    length = max(MIN_BOAT_PX, width * float(rng.uniform(0.06, 0.09)))
    x = float(rng.uniform(0, max(1.0, width - count * length * 0.85 - length)))
    waterline = float(rng.uniform(horizon + 0.25 * (height - horizon), height - 0.1 * height))
    facing = 1 if rng.random() < 0.5 else -1
    shapes = []
    for i in range(count):
        style = ("motorboat", "sailboat")[int(rng.integers(2))]
        wl = waterline + float(rng.uniform(-2, 2))
        shapes += boat_shapes(style, _placer(x + i * length * 0.85, wl, length, facing), length, rng)
    return _Planned("Boat", shapes, waterline, group_of=True)


def _plan_depiction(rng, width: int, height: int, horizon: int) -> list[_Planned]:
    """A framed painting of a boat standing on a pier: the painted boat is a Boat depiction."""
    w = width * float(rng.uniform(0.3, 0.45))
    h = w * 0.7
    x = float(rng.uniform(2, width - w - 2))
    bottom = float(rng.uniform(horizon + 0.4 * (height - horizon), height - 4))
    y = bottom - h
    frame = [("rect", [x, y, x + w, bottom], FRAME_COLOR),
             ("rect", [x + w * 0.05, y + h * 0.07, x + w * 0.95, bottom - h * 0.07], CANVAS_COLOR),
             ("rect", [x + w / 2 - 3, bottom, x + w / 2 + 3, height], FRAME_COLOR)]
    length = w * 0.6
    to_px = _placer(x + w * 0.2, bottom - h * 0.3, length, 1)
    drawing = [("polygon", _poly(to_px, [(0.06, 0), (0.86, 0), (1.0, 0.2), (0.0, 0.16)]), DRAWING_COLORS[0]),
               ("line", _poly(to_px, [(0.45, 0.16), (0.45, 0.8)]), DRAWING_COLORS[1], 2)]
    return [_Planned("", frame, bottom - 0.5), _Planned("Boat", drawing, bottom, depiction=True)]


def _plan_inside(rng, width: int, height: int) -> _Planned:
    """The view from a boat's own bow (IsInside): its deck fills the bottom of the frame."""
    bow = float(rng.uniform(0.3, 0.7)) * width
    top = height * float(rng.uniform(0.7, 0.8))
    side = height * float(rng.uniform(0.88, 0.95))
    hull = HULL_COLORS[int(rng.integers(len(HULL_COLORS)))]
    inset = (height - top) * 0.12
    left, right, bottom = -2.0, width + 2.0, height + 2.0  # beyond the frame: the deck is truncated
    shapes = [("polygon", [(left, bottom), (left, side), (bow, top), (right, side), (right, bottom)], hull),
              ("polygon", [(left, bottom), (left, side + inset), (bow, top + inset), (right, side + inset),
                           (right, bottom)], DECK_COLOR)]
    return _Planned("Boat", shapes, float(height + 10), inside=True)


def _plan_distractors(rng, width: int, height: int, horizon: int) -> list[_Planned]:
    """One or two non-boat objects: a surfer (Person + Surfboard), a floating board, a magpie."""
    planned = []
    for choice in rng.permutation(3)[: int(rng.integers(1, 3))]:
        if choice == 0:
            feet = float(rng.uniform(horizon + 0.3 * (height - horizon), height - 0.08 * height))
            tall = height * float(rng.uniform(0.2, 0.35))
            x = float(rng.uniform(tall * 0.6, width - tall * 0.6))
            planned.append(_Planned("Surfboard", surfboard_shapes(x - tall * 0.45, feet, tall * 0.9), feet))
            planned.append(_Planned("Person", person_shapes(x, feet - tall * 0.05, tall, rng), feet + 0.5))
        elif choice == 1:
            y = float(rng.uniform(horizon + 0.2 * (height - horizon), height - 0.1 * height))
            length = width * float(rng.uniform(0.12, 0.22))
            x = float(rng.uniform(0, width - length - 1))
            planned.append(_Planned("Surfboard", surfboard_shapes(x, y, length), y))
        else:
            size = width * float(rng.uniform(0.06, 0.1))
            x, y = float(rng.uniform(0, width - size - 1)), float(rng.uniform(2, max(3.0, horizon - size - 2)))
            planned.append(_Planned("Magpie", magpie_shapes(x, y, size), -1.0))
    return planned


def _plan(rng, kind: str, width: int, height: int, horizon: int) -> list[_Planned]:
    if kind == "boats":
        return _plan_boats(rng, int(rng.integers(1, 5)), width, height, horizon, [])
    if kind == "group":
        group = _plan_group(rng, width, height, horizon)
        singles = _plan_boats(rng, int(rng.integers(0, 2)), width, height, horizon, [_geometry_box(group.shapes)])
        return [group] + singles
    if kind == "depiction":
        return _plan_depiction(rng, width, height, horizon)
    if kind == "distractor":
        return _plan_distractors(rng, width, height, horizon)
    if kind == "inside":
        deck = _plan_inside(rng, width, height)
        return [deck] + _plan_boats(rng, int(rng.integers(0, 2)), width, height, horizon, [_geometry_box(deck.shapes)])
    if kind == "empty":
        return []
    raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")


def render_scene(rng: np.random.Generator, width: int, height: int, kind: str) -> tuple[Image.Image, list[DrawnObject]]:
    """Draw one scene of ``kind`` (see KINDS); return the RGB picture and its annotated objects.

    Boxes are the extent of each object's *visible* pixels (a nearer object may hide part of a
    farther one, which is then flagged occluded); pixels outside the frame are clipped and the
    object flagged truncated.
    """
    horizon = int(height * float(rng.uniform(0.3, 0.5)))
    image = background(rng, width, height, horizon)
    canvas = _Canvas(image)
    planned = sorted(_plan(rng, kind, width, height, horizon), key=lambda p: p.depth)
    masks = [canvas.paint(p.shapes) for p in planned]
    objects = []
    for i, plan in enumerate(planned):
        if not plan.name:
            continue
        visible = masks[i].copy()
        for later in masks[i + 1:]:
            visible &= ~later
        extent = mask_extent(visible)
        if extent is None or visible.sum() < 0.3 * masks[i].sum():
            continue  # mostly hidden: an annotator would not box it either
        gx0, gy0, gx1, gy1 = _geometry_box(plan.shapes)
        truncated = gx0 < 0 or gy0 < 0 or gx1 > width or gy1 > height
        objects.append(DrawnObject(plan.name, extent[0], extent[1], truncated=truncated,
                                   occluded=bool((visible != masks[i]).any()), group_of=plan.group_of,
                                   depiction=plan.depiction, inside=plan.inside, mask=visible))
    return image, objects
