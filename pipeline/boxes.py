"""Box conventions and the one function per conversion between them.

Names used across the project, wherever a box crosses a boundary:

- ``xyxy_rel``: (xmin, ymin, xmax, ymax) relative to the stored pixels, in [0, 1]. Open Images'
  XMin/XMax/YMin/YMax are this, re-ordered.
- ``cxcywh_rel``: (cx, cy, w, h) relative: a YOLO/darknet label line.
- ``xyxy_px_1based``: darknet ``detector valid`` output: 1-based pixel corners.
- ``xyxy_px``: 0-based pixel corners as drawn on an array (x right, y down).
"""
from __future__ import annotations

import numpy as np


def xyxy_rel_to_cxcywh_rel(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy_rel → (N, 4) cxcywh_rel."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    return np.stack([b[:, 0] + w / 2, b[:, 1] + h / 2, w, h], axis=1)


def cxcywh_rel_to_xyxy_rel(cxcywh: np.ndarray) -> np.ndarray:
    """(N, 4) cxcywh_rel → (N, 4) xyxy_rel."""
    b = np.asarray(cxcywh, dtype=np.float64).reshape(-1, 4)
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    return np.stack([b[:, 0] - half_w, b[:, 1] - half_h, b[:, 0] + half_w, b[:, 1] + half_h], axis=1)


def xyxy_px_1based_to_xyxy_rel(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """darknet ``valid`` corners (1-based pixels) → xyxy_rel of an image ``width`` × ``height``."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    scale = np.array([width, height, width, height], dtype=np.float64)
    return (b - 1.0) / scale


def xyxy_rel_to_xyxy_px(xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """xyxy_rel → 0-based pixel corners of an image ``width`` × ``height``."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return b * np.array([width, height, width, height], dtype=np.float64)


def clip_xyxy_rel(xyxy: np.ndarray) -> np.ndarray:
    """Clip xyxy_rel corners into [0, 1]."""
    return np.clip(np.asarray(xyxy, dtype=np.float64).reshape(-1, 4), 0.0, 1.0)


def iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU between (N, 4) and (M, 4) boxes of one convention (xyxy, any unit) → (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def xyxy_rel_to_letterbox_xyxy_rel(
    xyxy: np.ndarray, content_px: tuple[int, int], offset_px: tuple[int, int], canvas_px: tuple[int, int]
) -> np.ndarray:
    """xyxy_rel of an image → xyxy_rel of the canvas it was pasted into (letterbox).

    The image was resized to ``content_px`` = (width, height) and pasted at ``offset_px`` =
    (left, top) on a canvas of ``canvas_px`` = (width, height); stretching is the case
    content = canvas, offset = (0, 0), where this is the identity.
    """
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    (cw, ch), (ox, oy), (W, H) = content_px, offset_px, canvas_px
    scale = np.array([cw / W, ch / H, cw / W, ch / H])
    shift = np.array([ox / W, oy / H, ox / W, oy / H])
    return b * scale + shift
