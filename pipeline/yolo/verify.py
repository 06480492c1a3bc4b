"""Verification: the prepared image with its *written* label boxes beside the original with the
Open Images boxes, so a misaligned label is seen before a GPU day is spent on it.

The prepared side reads ``yolo/<ImageID>.txt`` back (not the boxes it was made from): what is
drawn is what darknet will train on. Both sides are decoded as stored (no EXIF orientation).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.boxes import cxcywh_rel_to_xyxy_rel
from pipeline.cli import UserError
from pipeline.images.draw import class_color, draw_boxes, thumbnail
from pipeline.yolo.health import TINY_PX
from pipeline.images.imageio import ImageDecodeError, decode_rgb, exif_orientation
from pipeline.yolo.prepare import prepared_ids
from pipeline.yolo.split import split_key
from pipeline.workspace import Workspace, read_json

DEFAULT_SIZE = 416
FLAG_MARKS = {"IsGroupOf": "group", "IsDepiction": "depiction", "IsTruncated": "truncated"}


def read_label_file(path) -> tuple[np.ndarray, np.ndarray]:
    """(class indices, boxes in ``xyxy_rel``) of a YOLO label file (``class cx cy w h`` lines)."""
    text = path.read_text(encoding="ascii")
    rows = np.array([line.split() for line in text.splitlines() if line.strip()], dtype=np.float64).reshape(-1, 5)
    return rows[:, 0].astype(np.int64), cxcywh_rel_to_xyxy_rel(rows[:, 1:])


def verification_pair(ws: Workspace, slug: str, image_id: str, max_side: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(prepared image with its written label boxes, original with its Open Images boxes), RGB.

    Args:
        max_side: shrink the original (before drawing, so lines stay visible) to this longest side.

    Raises:
        UserError: the image is not prepared or its original cannot be read.
    """
    folder = ws.dataset_dir(slug)
    names = _class_names(folder)
    label_path = folder / "yolo" / f"{image_id}.txt"
    if not label_path.is_file() or not (folder / "yolo" / f"{image_id}.jpg").is_file():
        raise UserError(f"image {image_id} of dataset {slug!r} is not prepared: run prepare first")
    try:
        prepared = decode_rgb(folder / "yolo" / f"{image_id}.jpg")
        original = decode_rgb(folder / "originals" / f"{image_id}.jpg", reduce_to=max_side)
    except ImageDecodeError as err:
        raise UserError(str(err)) from err
    classes, label_boxes = read_label_file(label_path)
    left = draw_boxes(prepared, label_boxes, labels=[names.get(c, str(c)) for c in classes],
                      colors=[class_color(c) for c in classes])
    if max_side:
        original = thumbnail(original, max_side)
    boxes = _image_boxes(folder, image_id)
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
    folder = ws.dataset_dir(slug)
    size = size or (read_json(folder / "dataset.json", {}).get("prepare") or {}).get("settings", {}).get(
        "size", DEFAULT_SIZE)
    images = pd.read_parquet(folder / "images.parquet", columns=["ImageID", "Rotation"])
    boxes = pd.read_parquet(folder / "boxes.parquet", columns=["ImageID", "XMin", "YMin", "XMax", "YMax"])
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
            if exif_orientation(folder / "originals" / f"{image_id}.jpg") not in (None, 1):
                reasons.setdefault(image_id, []).append("exif")
    rows = [{"ImageID": i, "Reasons": ", ".join(reasons[i])} for i in sorted(reasons)]
    return pd.DataFrame(rows, columns=["ImageID", "Reasons"])


def _class_names(folder) -> dict[int, str]:
    manifest = read_json(folder / "dataset.json", {}) or {}
    return {int(c["index"]): str(c["name"]) for c in manifest.get("classes", [])}


def _image_boxes(folder, image_id: str) -> pd.DataFrame:
    boxes = pd.read_parquet(folder / "boxes.parquet", filters=[("ImageID", "==", image_id)])
    return boxes.reset_index(drop=True)


def _box_label(row, names: dict[int, str]) -> str:
    marks = [mark for flag, mark in FLAG_MARKS.items() if getattr(row, flag, 0) == 1]
    name = names.get(int(row.ClassIndex), str(row.ClassIndex))
    return f"{name} ({', '.join(marks)})" if marks else name
