"""What the Evaluate page needs besides the metrics themselves (pure: files and frames in, values out).

Predictions and ground truth (pipeline.evaluation.groundtruth.load_ground_truth) are both ``xyxy_rel`` of the
prepared image darknet saw (``yolo/<ImageID>.jpg``), so both are drawn on that same image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from darknet_runner.rundir import RunDir
from pipeline.images.draw import COLORS

FILTERS = {"all": "all images, worst first", "fp": "images with false positives",
           "fn": "images with missed boxes (FN)"}


def list_weights(run_dir: Path) -> list[Path]:
    """The run's complete saved weights, newest first (``backup/*.weights``; see :func:`broken_weights`)."""
    return [p for p in RunDir(run_dir).usable_weights()[0] if p.suffix == ".weights"]


def broken_weights(run_dir: Path) -> list[str]:
    """One sentence per saved weights file that is not complete (e.g. cut off by a full disk)."""
    return RunDir(run_dir).usable_weights()[1]


def threshold_point(curve: dict, conf: float) -> tuple[float, float] | None:
    """(recall, precision) of a PR curve at the last point whose confidence is still ≥ ``conf``."""
    confidence = np.asarray(curve.get("confidence", []), dtype=np.float64)
    above = np.nonzero(confidence >= conf)[0]
    if len(above) == 0:
        return None
    i = int(above[-1])
    return float(curve["recall"][i]), float(curve["precision"][i])


def filter_images(table: pd.DataFrame, which: str) -> pd.DataFrame:
    """Per-image TP/FP/FN rows kept by the browser filter (``all``, ``fp`` or ``fn``)."""
    if which == "fp":
        return table[table["fp"] > 0]
    if which == "fn":
        return table[table["fn"] > 0]
    return table


def tile_boxes(gt: pd.DataFrame, det: pd.DataFrame, names: dict[int, str]):
    """Boxes (``xyxy_rel``), labels and colours for one image: matched ground truth, missed ground
    truth (FN), true and false positives, each with its own colour; detections show confidence.

    ``gt`` and ``det`` carry a ``status`` column (pipeline.evaluation.metrics.image_box_status); ignored
    detections (Open Images group-of) are not drawn.
    """
    boxes, labels, colors = [], [], []
    for row in gt.itertuples(index=False):
        missed = row.status == "fn"
        boxes.append((row.XMin, row.YMin, row.XMax, row.YMax))
        labels.append(f"FN {names.get(row.ClassIndex, row.ClassIndex)}" if missed else "")
        colors.append(COLORS["fn"] if missed else COLORS["gt"])
    for row in det.itertuples(index=False):
        if row.status not in ("tp", "fp"):
            continue
        boxes.append((row.XMin, row.YMin, row.XMax, row.YMax))
        labels.append(f"{row.status.upper()} {names.get(row.ClassIndex, row.ClassIndex)} {row.Confidence:.2f}")
        colors.append(COLORS[row.status])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, colors
