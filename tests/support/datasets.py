"""Hand-built datasets for the prepare, split, health and evaluate tests.

``make_dataset`` writes a dataset folder (tables, manifest, original JPEGs) without the builder
and fetch steps; ``dataset_from_demo`` does the same from the demo's metadata CSVs with pandas.
"""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from pipeline.demo import generate as demo
from pipeline.atomic import write_json
from pipeline.workspace import Workspace

FLAGS = ["IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside"]


def jpeg_bytes(rgb: np.ndarray, quality: int = 92, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    extra = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, **extra)
    return buf.getvalue()


def make_dataset(root: Path, images: list[dict], slug: str = "boat", classes=("Boat",)) -> Workspace:
    """Write a minimal dataset folder by hand.

    ``images``: dicts with ``id``, optional ``subset`` (train), ``data`` (original file bytes; None =
    no original), ``boxes`` [(class, xmin, ymin, xmax, ymax)] in xyxy_rel, ``rotation`` (0.0).
    """
    ws = Workspace(Path(root)).ensure()
    folder = ws.dataset_dir(slug)
    (folder / "originals").mkdir(parents=True, exist_ok=True)
    image_rows, box_rows = [], []
    for spec in images:
        boxes = spec.get("boxes", [])
        image_rows.append({
            "ImageID": spec["id"], "Subset": spec.get("subset", "train"), "OriginalURL": "", "Thumbnail300KURL": "",
            "OriginalSize": len(spec.get("data") or b""), "OriginalMD5": "", "Rotation": spec.get("rotation", 0.0),
            "License": "", "Author": "", "Title": "", "IsNegative": not boxes, "NumBoxes": len(boxes)})
        for cls, x0, y0, x1, y1 in boxes:
            box_rows.append({"ImageID": spec["id"], "Subset": spec.get("subset", "train"), "Source": "xclick",
                             "LabelName": "/m/019jd", "ClassIndex": cls, "XMin": x0, "XMax": x1, "YMin": y0,
                             "YMax": y1, **{f: 0 for f in FLAGS}})
        if spec.get("data") is not None:
            (folder / "originals" / f"{spec['id']}.jpg").write_bytes(spec["data"])
    write_tables(folder, image_rows, box_rows)
    write_json(folder / "dataset.json", {
        "name": slug, "slug": slug, "created": "2026-11-24T00:00:00Z", "policies": {},
        "classes": [{"index": i, "mid": f"/m/{i}", "name": n, "members": [f"/m/{i}"]} for i, n in enumerate(classes)]})
    return ws


def write_tables(folder: Path, image_rows: list[dict], box_rows: list[dict]) -> None:
    """images.parquet and boxes.parquet with the contract's dtypes."""
    images = pd.DataFrame(image_rows, columns=[
        "ImageID", "Subset", "OriginalURL", "Thumbnail300KURL", "OriginalSize", "OriginalMD5", "Rotation",
        "License", "Author", "Title", "IsNegative", "NumBoxes"])
    images = images.astype({"OriginalSize": "int64", "Rotation": "float32", "IsNegative": bool, "NumBoxes": "int32"})
    boxes = pd.DataFrame(box_rows, columns=["ImageID", "Subset", "Source", "LabelName", "ClassIndex",
                                            "XMin", "XMax", "YMin", "YMax", *FLAGS])
    boxes = boxes.astype({"ClassIndex": "int16", **{c: "float32" for c in ("XMin", "XMax", "YMin", "YMax")},
                          **{f: "int8" for f in FLAGS}})
    images.to_parquet(folder / "images.parquet", index=False)
    boxes.to_parquet(folder / "boxes.parquet", index=False)


def dataset_from_demo(demo_root: Path, target: Path, slug: str = "boat") -> Workspace:
    """A Boat dataset (Boat + Barge, Gondola, Canoe → class 0) built from the demo CSVs with pandas."""
    boat_family = {demo.MIDS[n] for n in ("Boat", "Barge", "Gondola", "Canoe")}
    meta = Path(demo_root) / "metadata"
    boxes = pd.concat([pd.read_csv(meta / demo.BBOX_FILES[s], usecols=demo.BBOX_COLUMNS, dtype={"ImageID": str})
                       for s in demo.SUBSETS])
    info = pd.concat([pd.read_csv(meta / demo.IMAGE_FILES[s], dtype={"ImageID": str}) for s in demo.SUBSETS])
    boxes = boxes[boxes["LabelName"].isin(boat_family)].merge(info[["ImageID", "Subset"]], on="ImageID")
    with_boxes = set(boxes["ImageID"])
    negatives = set(info["ImageID"]) - set(pd.concat(
        [pd.read_csv(meta / demo.BBOX_FILES[s], usecols=["ImageID"], dtype=str) for s in demo.SUBSETS])["ImageID"])
    info = info[info["ImageID"].isin(with_boxes | negatives)]
    ws = Workspace(Path(target)).ensure()
    folder = ws.dataset_dir(slug)
    (folder / "originals").mkdir(parents=True, exist_ok=True)
    for image_id, subset in zip(info["ImageID"], info["Subset"]):
        shutil.copyfile(demo.originals_dir(demo_root) / subset / f"{image_id}.jpg",
                        folder / "originals" / f"{image_id}.jpg")
    image_rows = [{"ImageID": r.ImageID, "Subset": r.Subset, "OriginalURL": r.OriginalURL,
                   "Thumbnail300KURL": r.Thumbnail300KURL if isinstance(r.Thumbnail300KURL, str) else "",
                   "OriginalSize": r.OriginalSize, "OriginalMD5": r.OriginalMD5, "Rotation": r.Rotation,
                   "License": r.License, "Author": r.Author, "Title": r.Title, "IsNegative": r.ImageID in negatives,
                   "NumBoxes": int((boxes["ImageID"] == r.ImageID).sum())} for r in info.itertuples()]
    box_rows = boxes.assign(ClassIndex=0).to_dict("records")
    write_tables(folder, image_rows, box_rows)
    write_json(folder / "dataset.json", {"name": "Boat", "slug": slug, "created": "2026-11-24T00:00:00Z",
                                         "classes": [{"index": 0, "mid": demo.BOAT_MID, "name": "Boat",
                                                      "members": sorted(boat_family)}], "policies": {}})
    return ws


def noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def yolo_files(ws: Workspace, slug: str = "boat") -> dict[str, bytes]:
    folder = ws.dataset_dir(slug) / "yolo"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.is_dir() else {}
