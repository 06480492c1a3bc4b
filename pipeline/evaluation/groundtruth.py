"""Ground truth of a list of prepared images: their written YOLO labels, ``xyxy_rel``.

Ground truth is what the detector was trained on: the ``yolo/<ImageID>.txt`` label of each image
(``cxcywh_rel`` of the prepared image → ``xyxy_rel``). ``IsGroupOf`` (for the Open Images method)
comes from the dataset's boxes.parquet: each label box is aligned with the same-class
boxes.parquet row of that image whose box, placed the way prepare placed it (stretch, or the
letterbox geometry in the JPEG's marker), overlaps it best with IoU >= 0.9; a label box without
such a row gets -1 (unknown, scored as a normal box). Images whose label file is missing are left
out (logged and counted): a missing file is "unknown", not "no objects".
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.boxes import iou_xyxy, xyxy_rel_to_letterbox_xyxy_rel
from pipeline.dataset import DatasetDir
from pipeline.yolo.labels import Labels, read_labels

log = logging.getLogger(__name__)

ALIGN_IOU = 0.9  # a label box and a boxes.parquet row this close are the same object
GT_COLUMNS = ["ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax", "IsGroupOf"]  # xyxy_rel


def labels_frame(labels: Labels, image_id: str) -> pd.DataFrame:
    """One image's label boxes as ground-truth rows (``xyxy_rel``, IsGroupOf -1 = unknown)."""
    xyxy = labels.xyxy
    return pd.DataFrame({"ImageID": [image_id] * len(labels), "ClassIndex": labels.classes.astype(np.int16),
                         "XMin": xyxy[:, 0], "YMin": xyxy[:, 1], "XMax": xyxy[:, 2], "YMax": xyxy[:, 3],
                         "IsGroupOf": np.full(len(labels), -1, np.int8)})


def load_ground_truth(images: list[tuple[str, Path]], dataset: DatasetDir | None = None,
                      what: str = "test") -> tuple[pd.DataFrame, list[str], list[str]]:
    """The labels of ``images`` ((ImageID, prepared image path) pairs) with IsGroupOf aligned.

    Args:
        images: the prepared images; each label is the ``.txt`` beside its image.
        dataset: where boxes.parquet comes from for the IsGroupOf alignment (None: all -1).
        what: how the images are named in the warning about missing labels.

    Returns:
        (ground truth rows, ImageIDs evaluated, ImageIDs left out because their label is missing).
    """
    frames, kept, missing = [], [], []
    for image_id, path in images:
        label = path.with_suffix(".txt")
        if not label.is_file():
            missing.append(image_id)
            continue
        kept.append(image_id)
        frames.append(_aligned(labels_frame(read_labels(label), image_id), path, dataset))
    if missing:
        log.warning("%d %s images have no label file and are left out, e.g. %s", len(missing), what, missing[0])
    gt = pd.concat(frames, ignore_index=True) if frames else _empty_ground_truth()
    return gt[GT_COLUMNS], kept, missing


def _empty_ground_truth() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        GT_COLUMNS, [object, np.int16, np.float64, np.float64, np.float64, np.float64, np.int8])})


_BOXES_CACHE: dict[str, pd.DataFrame] = {}


def _dataset_boxes(dataset: DatasetDir | None) -> pd.DataFrame | None:
    path = dataset.boxes_path if dataset else None
    if path is None or not path.is_file():
        return None
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _BOXES_CACHE:
        _BOXES_CACHE.clear()
        table = pd.read_parquet(path, columns=["ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax", "IsGroupOf"])
        _BOXES_CACHE[key] = table.set_index(table["ImageID"].astype(str)).sort_index()
    return _BOXES_CACHE[key]


def _aligned(labels: pd.DataFrame, image_path: Path, dataset: DatasetDir | None) -> pd.DataFrame:
    """Copy IsGroupOf onto label rows from the best-overlapping same-class boxes.parquet row."""
    boxes = _dataset_boxes(dataset)
    image_id = labels["ImageID"].iloc[0] if len(labels) else None
    if boxes is None or image_id is None or image_id not in boxes.index:
        return labels
    rows = boxes.loc[[image_id]]
    source = rows[["XMin", "YMin", "XMax", "YMax"]].to_numpy(np.float64)
    placed = _placed(np.clip(source, 0.0, 1.0), image_path)
    overlap = iou_xyxy(labels[["XMin", "YMin", "XMax", "YMax"]].to_numpy(), placed)
    same = labels["ClassIndex"].to_numpy()[:, None] == rows["ClassIndex"].to_numpy()[None, :]
    overlap = np.where(same, overlap, 0.0)
    best = overlap.argmax(axis=1)
    ok = overlap[np.arange(len(labels)), best] >= ALIGN_IOU
    flags = labels["IsGroupOf"].to_numpy().copy()
    flags[ok] = rows["IsGroupOf"].to_numpy(np.int8)[best[ok]]
    return labels.assign(IsGroupOf=flags)


def _placed(xyxy_rel: np.ndarray, image_path: Path) -> np.ndarray:
    """Original ``xyxy_rel`` → ``xyxy_rel`` of the prepared image (letterbox geometry from its marker)."""
    from pipeline.yolo.prepare import read_marker

    marker = read_marker(image_path)
    if marker is None:
        return xyxy_rel
    geometry = marker.geometry
    from PIL import Image

    with Image.open(image_path) as image:
        canvas = image.size
    return xyxy_rel_to_letterbox_xyxy_rel(xyxy_rel, (geometry.width, geometry.height),
                                          (geometry.left, geometry.top), canvas)
