"""Export ground truth and detections for other tools: COCO JSON (pycocotools, FiftyOne), YOLO txt.

Input boxes are ``xyxy_rel`` (the project's tables); COCO wants 0-based pixel ``[x, y, w, h]``
and YOLO wants ``cxcywh_rel``.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.boxes import xyxy_rel_to_cxcywh_rel
from pipeline.atomic import atomic_write_text

BOX_COLUMNS = ["XMin", "YMin", "XMax", "YMax"]  # xyxy_rel
COCO_CATEGORY_OFFSET = 1  # COCO category ids start at 1; ours (ClassIndex) at 0


def _image_table(images: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ("ImageID", "width", "height") if c not in images.columns]
    if missing:
        raise ValueError(f"the image table lacks the column(s) {', '.join(missing)}")
    table = images[["ImageID", "width", "height"]].drop_duplicates("ImageID").reset_index(drop=True)
    table["ImageID"] = table["ImageID"].astype(str)
    table["id"] = np.arange(1, len(table) + 1)
    return table


def _pixel_xywh(frame: pd.DataFrame, sizes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """xyxy_rel rows → (COCO image id per row, 0-based pixel [x, y, w, h])."""
    joined = frame[["ImageID"]].astype(str).merge(sizes, on="ImageID", how="left")
    if joined["id"].isna().any():
        unknown = joined.loc[joined["id"].isna(), "ImageID"].iloc[0]
        raise ValueError(f"image {unknown} has boxes but no width and height in the image table")
    w = joined["width"].to_numpy(np.float64)
    h = joined["height"].to_numpy(np.float64)
    rel = frame[BOX_COLUMNS].to_numpy(np.float64).reshape(-1, 4)
    px = rel * np.stack([w, h, w, h], axis=1)  # xyxy_rel_to_xyxy_px, one size per row
    xywh = np.c_[px[:, :2], px[:, 2:] - px[:, :2]]
    return joined["id"].to_numpy(np.int64), xywh


def to_coco(gt: pd.DataFrame, det: pd.DataFrame, images: pd.DataFrame,
            class_names: dict[int, str]) -> tuple[dict, list[dict]]:
    """Ground truth and detections (``xyxy_rel``) → COCO dicts.

    Args:
        gt: ``ImageID, ClassIndex, XMin, YMin, XMax, YMax`` (+ ``IsGroupOf`` → ``iscrowd``).
        det: ``ImageID, ClassIndex, Confidence, XMin, YMin, XMax, YMax``.
        images: ``ImageID, width, height`` of every image to evaluate (image ids follow its order).
        class_names: ClassIndex → name; category id = ClassIndex + 1.

    Returns:
        (ground truth dict with ``images``/``annotations``/``categories``, detection result list),
        ready for ``COCO.dataset`` + ``createIndex()`` and ``COCO.loadRes``.
    """
    sizes = _image_table(images)
    gids, gxywh = _pixel_xywh(gt, sizes)
    crowd = (gt["IsGroupOf"].fillna(-1).to_numpy(np.int64) == 1) if "IsGroupOf" in gt else np.zeros(len(gt), bool)
    gcls = gt["ClassIndex"].to_numpy(np.int64) + COCO_CATEGORY_OFFSET
    annotations = [
        {"id": i + 1, "image_id": int(img), "category_id": int(c), "bbox": [float(v) for v in box],
         "area": float(box[2] * box[3]), "iscrowd": int(cr)}
        for i, (img, c, box, cr) in enumerate(zip(gids, gcls, gxywh, crowd))
    ]
    gt_json = {
        "images": [{"id": int(r.id), "file_name": f"{r.ImageID}.jpg", "width": int(r.width),
                    "height": int(r.height)} for r in sizes.itertuples()],
        "annotations": annotations,
        "categories": [{"id": int(i) + COCO_CATEGORY_OFFSET, "name": str(n)} for i, n in sorted(class_names.items())],
    }
    dids, dxywh = _pixel_xywh(det, sizes)
    dcls = det["ClassIndex"].to_numpy(np.int64) + COCO_CATEGORY_OFFSET
    scores = det["Confidence"].to_numpy(np.float64)
    det_json = [{"image_id": int(img), "category_id": int(c), "bbox": [float(v) for v in box], "score": float(s)}
                for img, c, box, s in zip(dids, dcls, dxywh, scores)]
    return gt_json, det_json


def yolo_lines(boxes: pd.DataFrame, with_confidence: bool = False) -> list[str]:
    """``xyxy_rel`` rows → darknet label lines ``class cx cy w h`` (``cxcywh_rel``), +confidence."""
    cxcywh = xyxy_rel_to_cxcywh_rel(boxes[BOX_COLUMNS].to_numpy(np.float64))
    classes = boxes["ClassIndex"].to_numpy(np.int64)
    lines = [f"{c} {b[0]:.6f} {b[1]:.6f} {b[2]:.6f} {b[3]:.6f}" for c, b in zip(classes, cxcywh)]
    if with_confidence:
        lines = [f"{line} {s:.6f}" for line, s in zip(lines, boxes["Confidence"].to_numpy(np.float64))]
    return lines


def write_yolo_txt(boxes: pd.DataFrame, folder: Path, images: Iterable[str] | None = None,
                   with_confidence: bool = False) -> int:
    """Write one ``<ImageID>.txt`` per image (atomically), YOLO ``cxcywh_rel`` lines.

    Args:
        boxes: ``ImageID, ClassIndex, XMin, YMin, XMax, YMax`` (+ ``Confidence``).
        folder: where the files go (created).
        images: images to write even when they have no box: they get an empty file, which says
            "no objects" (a missing file says "unknown").
        with_confidence: append the confidence as a sixth column (detections).

    Returns:
        The number of files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = boxes["ImageID"].astype(str)
    wanted = list(dict.fromkeys([*(str(i) for i in (images or [])), *ids.unique()]))
    groups = {key: frame for key, frame in boxes.groupby(ids, sort=False)}
    for image_id in wanted:
        frame = groups.get(image_id)
        lines = yolo_lines(frame, with_confidence) if frame is not None else []
        atomic_write_text(folder / f"{image_id}.txt", "".join(f"{line}\n" for line in lines))
    return len(wanted)
