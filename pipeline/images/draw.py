"""The one box-drawing helper: dataset gallery, label verification and prediction browser.

Boxes come in as ``xyxy_rel`` (see pipeline/boxes.py) and are drawn on a copy of an RGB array,
so what the dashboard shows is exactly the pixel matrix the labels refer to (browsers and
``st.image`` have their own EXIF habits). Colours are the Okabe–Ito palette, which stays
distinguishable for the common forms of colour blindness.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from pipeline.boxes import xyxy_rel_to_xyxy_px

RGB = tuple[int, int, int]

# Okabe & Ito (2008), "Color Universal Design": the eight colours, as RGB.
OKABE_ITO: dict[str, RGB] = {
    "black": (0, 0, 0),
    "orange": (230, 159, 0),
    "sky_blue": (86, 180, 233),
    "bluish_green": (0, 158, 115),
    "yellow": (240, 228, 66),
    "blue": (0, 114, 178),
    "vermillion": (213, 94, 0),
    "reddish_purple": (204, 121, 167),
}

# Meaning → colour, the same on every page.
COLORS: dict[str, RGB] = {
    "gt": OKABE_ITO["sky_blue"],        # ground truth (Open Images boxes, written labels)
    "tp": OKABE_ITO["bluish_green"],    # prediction matched to a ground-truth box
    "fp": OKABE_ITO["vermillion"],      # prediction with no match
    "fn": OKABE_ITO["yellow"],          # ground-truth box no prediction found
}

# Per-class colours, cycled by class index (black is left out: it vanishes on dark photos).
CLASS_CYCLE: tuple[RGB, ...] = tuple(OKABE_ITO[name] for name in (
    "orange", "sky_blue", "bluish_green", "yellow", "blue", "vermillion", "reddish_purple"))

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
FONT_THICKNESS = 1
LABEL_PAD = 2  # pixels around the label text inside its background


def class_color(index: int) -> RGB:
    """The colour of class ``index`` in :data:`CLASS_CYCLE`."""
    return CLASS_CYCLE[int(index) % len(CLASS_CYCLE)]


def draw_boxes(
    rgb: np.ndarray,
    boxes_xyxy_rel: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    colors: RGB | Sequence[RGB] | None = None,
    width: int = 2,
) -> np.ndarray:
    """Draw boxes (and optional labels) on a copy of an RGB image.

    Args:
        rgb: (H, W, 3) uint8 image; not modified.
        boxes_xyxy_rel: (N, 4) boxes in ``xyxy_rel``; corners outside the image are clipped.
        labels: one text per box (``None`` or ``""`` draws no label).
        colors: one RGB tuple for all boxes, one per box, or ``None`` for ``COLORS["gt"]``.
        width: line width in pixels, drawn inside the box so the outline never covers
            pixels outside it.

    Returns:
        A new (H, W, 3) uint8 array.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True)
    height, width_px = out.shape[:2]
    px = np.rint(xyxy_rel_to_xyxy_px(np.asarray(boxes_xyxy_rel, dtype=np.float64), width_px, height))
    per_box = _per_box_colors(colors, len(px))
    if labels is not None and len(labels) != len(px):
        raise ValueError(f"got {len(labels)} labels for {len(px)} boxes: give one label per box")
    finite = np.isfinite(px).all(axis=1)
    drawn: list[tuple[int, tuple[int, int, int, int]]] = []
    for i, (x0, y0, x1, y1) in enumerate(np.where(finite[:, None], px, 0).astype(np.int64)):
        x0, x1 = np.clip([x0, x1], 0, width_px)
        y0, y1 = np.clip([y0, y1], 0, height)
        if x1 <= x0 or y1 <= y0:
            continue
        _outline(out, int(x0), int(y0), int(x1), int(y1), per_box[i], width)
        drawn.append((i, (int(x0), int(y0), int(x1), int(y1))))
    # Labels after every outline, each placed where it hides the least: outside a small box
    # (above, below, beside), never on another label, and as little as possible on other boxes.
    placed: list[tuple[int, int, int, int]] = []
    rects = [rect for _, rect in drawn]
    for n, (i, rect) in enumerate(drawn):
        if labels is not None and labels[i]:
            placed.append(_label(out, str(labels[i]), rect, per_box[i], rects[:n] + rects[n + 1:], placed))
    return out


def thumbnail(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """A copy scaled so its longest side is at most ``max_side`` (never enlarged)."""
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return np.array(rgb, copy=True)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _per_box_colors(colors, count: int) -> list[RGB]:
    if colors is None:
        return [COLORS["gt"]] * count
    if len(colors) == 3 and all(np.isscalar(c) for c in colors):
        return [tuple(int(c) for c in colors)] * count
    if len(colors) != count:
        raise ValueError(f"got {len(colors)} colours for {count} boxes: give one colour or one per box")
    return [tuple(int(c) for c in color) for color in colors]


def _outline(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: RGB, width: int) -> None:
    """Paint a frame of ``width`` pixels inside [x0, x1) × [y0, y1) (0-based, end exclusive)."""
    w = max(1, min(width, (x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2))
    img[y0:y0 + w, x0:x1] = color
    img[y1 - w:y1, x0:x1] = color
    img[y0:y1, x0:x0 + w] = color
    img[y0:y1, x1 - w:x1] = color


def _label(img: np.ndarray, text: str, box: tuple[int, int, int, int], color: RGB,
           others: list[tuple[int, int, int, int]], placed: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Text on a filled background in the box colour, at the best of :func:`_label_spots`; returns
    the label's rectangle (x0, y0, x1, y1), end exclusive."""
    (tw, th), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
    size = (tw + 2 * LABEL_PAD, th + baseline + 2 * LABEL_PAD)
    height, width = img.shape[:2]
    spots = _label_spots(box, size, width, height)
    costs = [_label_cost(spot, box, others, placed) + rank * 1e-3 for rank, spot in enumerate(spots)]
    left, top, right, bottom = spots[int(np.argmin(costs))]
    cv2.rectangle(img, (left, top), (right - 1, bottom - 1), color, thickness=-1)
    ink = (0, 0, 0) if _black_ink_reads_better(color) else (255, 255, 255)
    cv2.putText(img, text, (left + LABEL_PAD, top + LABEL_PAD + th), FONT, FONT_SCALE, ink,
                FONT_THICKNESS, lineType=cv2.LINE_AA)
    return left, top, right, bottom


def _label_spots(box, size, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Candidate label rectangles in order of preference: above the box, below it, right of it,
    left of it (each moved inside the image), then further above or below (stacked)."""
    x0, y0, x1, y1 = box
    w, h = size
    corners = [(x0, y0 - h), (x0, y1), (x1, y0), (x0 - w, y0), (x1 - w, y0 - h), (x1 - w, y1),
               (x0, y0 - 2 * h), (x0, y1 + h), (x0, y0 - 3 * h), (x0, y1 + 2 * h)]
    spots = []
    for left, top in corners:
        left = min(max(0, left), max(0, width - w))
        top = min(max(0, top), max(0, height - h))
        spots.append((left, top, left + w, top + h))
    return spots


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _area(rect) -> int:
    return max(1, (rect[2] - rect[0]) * (rect[3] - rect[1]))


def _label_cost(spot, box, others, placed) -> float:
    """How much a label at ``spot`` hides: another label (worst), the share of each other box it
    covers, and the share of its own box beyond a 10 % corner (a big box may carry its label inside)."""
    cost = 10.0 * sum(_overlap(spot, p) / _area(spot) for p in placed)
    cost += 2.0 * sum(_overlap(spot, o) / _area(o) for o in others)
    return cost + 4.0 * max(0.0, _overlap(spot, box) / _area(box) - 0.1)


def _black_ink_reads_better(color: RGB) -> bool:
    """WCAG contrast: black text on ``color`` beats white text on it."""
    lin = [(c / 255) / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in color]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05)
