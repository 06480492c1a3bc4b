"""Verification: the prepared image with its *written* label boxes beside the original with the
Open Images boxes, so a misaligned label is seen before a GPU day is spent on it.

The prepared side reads ``yolo/<ImageID>.txt`` back (not the boxes it was made from): what is
drawn is what darknet will train on. Both sides are decoded as stored (no EXIF orientation).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cli import UserError
from pipeline.images.draw import class_color, draw_boxes, thumbnail
from pipeline.yolo.health import TINY_PX
from pipeline.images.imageio import ImageDecodeError, decode_rgb, exif_orientation
from pipeline.yolo.prepare import prepared_ids
from pipeline.yolo.split import split_key
from pipeline.dataset import DatasetDir
from pipeline.yolo.labels import read_labels
from pipeline.workspace import Workspace

DEFAULT_SIZE = 416
FLAG_MARKS = {"IsGroupOf": "group", "IsDepiction": "depiction", "IsTruncated": "truncated"}


def verification_pair(ws: Workspace, slug: str, image_id: str, max_side: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(prepared image with its written label boxes, original with its Open Images boxes), RGB.

    Args:
        max_side: shrink the original (before drawing, so lines stay visible) to this longest side.

    Raises:
        UserError: the image is not prepared or its original cannot be read.
    """
    dataset = ws.dataset(slug)
    names = _class_names(dataset)
    if not dataset.label(image_id).is_file() or not dataset.image(image_id).is_file():
        raise UserError(f"image {image_id} of dataset {slug!r} is not prepared: run prepare first")
    try:
        prepared = decode_rgb(dataset.image(image_id))
        original = decode_rgb(dataset.original(image_id), reduce_to=max_side)
    except ImageDecodeError as err:
        raise UserError(str(err)) from err
    labels = read_labels(dataset.label(image_id))
    left = draw_boxes(prepared, labels.xyxy, labels=[names.get(int(c), str(c)) for c in labels.classes],
                      colors=[class_color(int(c)) for c in labels.classes])
    if max_side:
        original = thumbnail(original, max_side)
    boxes = _image_boxes(dataset, image_id)
    right = draw_boxes(original, boxes[["XMin", "YMin", "XMax", "YMax"]].to_numpy(dtype=np.float64),
                       labels=[_box_label(row, names) for row in boxes.itertuples()],
                       colors=[class_color(c) for c in boxes["ClassIndex"]])
    return left, right


def sample_ids(ws: Workspace, slug: str, n: int, seed: int = 0) -> list[str]:
    """``n`` prepared ImageIDs, a deterministic sample for ``seed`` (all of them if fewer)."""
    ranked = sorted(prepared_ids(ws, slug), key=lambda image_id: (split_key(image_id, seed + 1_000_003), image_id))
    return ranked[:max(0, n)]


def suspicious(ws: Workspace, slug: str, size: int | None = None, check_exif: bool = True) -> pd.DataFrame:
    """Images worth a look, with why: ``tiny`` box, ``clipped`` box, ``rotation`` ≠ 0, ``exif`` tag.

    Returns:
        Columns ``ImageID`` and ``Reasons`` (comma-separated, fixed order), sorted by ImageID.
    """
    dataset = ws.dataset(slug)
    size = size or dataset.prepared_size() or DEFAULT_SIZE
    images = pd.read_parquet(dataset.images_path, columns=["ImageID", "Rotation"])
    boxes = pd.read_parquet(dataset.boxes_path, columns=["ImageID", "XMin", "YMin", "XMax", "YMax"])
    raw = boxes[["XMin", "YMin", "XMax", "YMax"]].to_numpy(dtype=np.float64)
    clipped_xyxy = np.clip(raw, 0.0, 1.0)
    sides = np.minimum(clipped_xyxy[:, 2] - clipped_xyxy[:, 0], clipped_xyxy[:, 3] - clipped_xyxy[:, 1]) * size
    reasons: dict[str, list[str]] = {}
    for name, ids in (("tiny", boxes["ImageID"][sides < TINY_PX]),
                      ("clipped", boxes["ImageID"][np.any(clipped_xyxy != raw, axis=1)]),
                      ("rotation", images["ImageID"][images["Rotation"].fillna(0) != 0])):
        for image_id in sorted(set(map(str, ids))):
            reasons.setdefault(image_id, []).append(name)
    if check_exif:
        for image_id in sorted(map(str, images["ImageID"])):
            if exif_orientation(dataset.original(image_id)) not in (None, 1):
                reasons.setdefault(image_id, []).append("exif")
    rows = [{"ImageID": i, "Reasons": ", ".join(reasons[i])} for i in sorted(reasons)]
    return pd.DataFrame(rows, columns=["ImageID", "Reasons"])


def _class_names(dataset: DatasetDir) -> dict[int, str]:
    manifest = dataset.load({}) or {}
    return {int(c["index"]): str(c["name"]) for c in manifest.get("classes", [])}


def _image_boxes(dataset: DatasetDir, image_id: str) -> pd.DataFrame:
    boxes = pd.read_parquet(dataset.boxes_path, filters=[("ImageID", "==", image_id)])
    return boxes.reset_index(drop=True)


def _box_label(row, names: dict[int, str]) -> str:
    marks = [mark for flag, mark in FLAG_MARKS.items() if getattr(row, flag, 0) == 1]
    name = names.get(int(row.ClassIndex), str(row.ClassIndex))
    return f"{name} ({', '.join(marks)})" if marks else name
