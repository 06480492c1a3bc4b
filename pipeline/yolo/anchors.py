"""Anchor boxes for a YOLO cfg: k-means over box (width, height) with a 1 − IoU distance.

As in YOLOv2 (Redmon & Farhadi, §"Dimension Clusters") and darknet's ``calc_anchors``: boxes are
compared by shape only (both anchored at the origin), so big boxes do not dominate the way they
would under a Euclidean distance. Deterministic for a seed (k-means++ initialisation).
"""
from __future__ import annotations

import numpy as np

MAX_ITERATIONS = 300
RESTARTS = 5          # k-means finds local optima; the best of a few seeded starts is kept
FIT_SAMPLE = 20_000   # boxes the clusters are fitted on (a seeded sample); avg IoU uses all boxes


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of (N, 2) widths/heights against (K, 2) anchors, all placed at the origin → (N, K)."""
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def kmeans_anchors(wh_px: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Cluster box sizes into ``k`` anchors.

    Args:
        wh_px: (N, 2) box widths and heights in network pixels; non-positive rows are ignored.
        k: number of anchors (9 for yolov3, 6 for yolov3-tiny).
        seed: seeds the k-means++ initialisation.

    Returns:
        ``(anchors, avg_iou)``: (k, 2) float anchors sorted by area, and the mean over boxes of
        the IoU with their best anchor.

    Raises:
        ValueError: fewer usable boxes than ``k``, or ``k`` < 1.
    """
    wh = np.asarray(wh_px, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh > 0).all(axis=1)]
    if k < 1 or len(wh) < k:
        raise ValueError(f"{len(wh)} boxes cannot make {k} anchors: need at least as many boxes as anchors")
    fit = wh if len(wh) <= FIT_SAMPLE else wh[np.random.default_rng(seed).choice(len(wh), FIT_SAMPLE, replace=False)]
    best, best_iou = None, -1.0
    for restart in range(RESTARTS):
        anchors = _lloyd(fit, _init_plus_plus(fit, k, np.random.default_rng([seed, restart])))
        avg_iou = float(wh_iou(wh, anchors).max(axis=1).mean())
        if avg_iou > best_iou:
            best, best_iou = anchors, avg_iou
    return best[np.argsort(best[:, 0] * best[:, 1], kind="stable")], best_iou


def cfg_anchors(anchors: np.ndarray) -> str:
    """The ``anchors=`` value of a darknet cfg: ``10,14, 23,27, …`` (rounded pixels)."""
    return ", ".join(f"{round(w)},{round(h)}" for w, h in np.asarray(anchors).reshape(-1, 2))


def _lloyd(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Assign each box to its best-IoU anchor, move anchors to their members' mean; until stable."""
    assignment = None
    for _ in range(MAX_ITERATIONS):
        new_assignment = wh_iou(wh, anchors).argmax(axis=1)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        anchors = _update(wh, anchors, assignment)
    return anchors


def _init_plus_plus(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: a box becomes the next centre with probability ∝ (1 − IoU)²."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        distance = (1.0 - wh_iou(wh, np.array(centres)).max(axis=1)) ** 2
        total = distance.sum()
        if total <= 0:  # every box already coincides with a centre: take any box
            centres.append(wh[rng.integers(len(wh))])
            continue
        centres.append(wh[rng.choice(len(wh), p=distance / total)])
    return np.array(centres, dtype=np.float64)


def _update(wh: np.ndarray, anchors: np.ndarray, assignment: np.ndarray) -> np.ndarray:
    """Mean size per cluster; an emptied cluster restarts at the box its anchor fits worst."""
    k = len(anchors)
    members = np.bincount(assignment, minlength=k)
    sums = np.stack([np.bincount(assignment, weights=wh[:, axis], minlength=k) for axis in (0, 1)], axis=1)
    updated = np.divide(sums, members[:, None], out=anchors.copy(), where=members[:, None] > 0)
    for cluster in np.flatnonzero(members == 0):
        updated[cluster] = wh[wh_iou(wh, updated).max(axis=1).argmin()]
    return updated
