"""Choosing and drawing gallery tiles (pure: no Streamlit, so plain pytest covers it).

Boxes cross into here as ``xyxy_rel`` relative to the *stored* pixels; tiles are decoded without
EXIF orientation (pipeline.images.imageio) so the drawn boxes sit where the labels say.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.images import draw
from pipeline.images.imageio import decode_rgb
from pipeline.demo.generate import originals_dir as demo_originals
from pipeline.workspace import Workspace

# Gallery filters: label shown to the user → boxes.parquet flag column that must be 1 on some box.
FLAG_FILTERS = {
    "group-of": "IsGroupOf",
    "occluded": "IsOccluded",
    "truncated": "IsTruncated",
    "depiction": "IsDepiction",
}
ROTATED = "rotation ≠ 0"
TILE_SIDE = 320  # longest side of a gallery tile, in pixels
JPEG_QUALITY = 85


def filter_images(images: pd.DataFrame, boxes: pd.DataFrame, flags: list[str]) -> pd.DataFrame:
    """Rows of ``images`` having, for every chosen flag, at least one box with that flag set to 1.

    ``ROTATED`` keeps images whose Rotation is known and not 0 (NaN means unknown, not rotated).
    """
    keep = pd.Series(True, index=images.index)
    for flag in flags:
        if flag == ROTATED:
            rotation = images["Rotation"].astype("float64")
            keep &= rotation.notna() & (rotation != 0)
        else:
            flagged = set(boxes.loc[boxes[FLAG_FILTERS[flag]] == 1, "ImageID"])
            keep &= images["ImageID"].isin(flagged)
    return images[keep]


def sample_ids(image_ids: list[str], n: int, seed: int) -> list[str]:
    """``n`` ids drawn without replacement, the same for the same ids, ``n`` and seed."""
    if n <= 0 or not image_ids:
        return []
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(image_ids), size=min(n, len(image_ids)), replace=False)
    return [image_ids[i] for i in picked]


def original_path(ws: Workspace, slug: str, image_id: str, subset: str) -> Path | None:
    """Where this image's source pixels are on disk: the dataset's originals/, else the demo's
    CVDF-layout folder; None when the image has not been fetched."""
    candidates = [ws.dataset(slug).original(image_id), demo_originals(ws.root) / subset / f"{image_id}.jpg"]
    return next((p for p in candidates if p.exists()), None)


def render_tile(path: Path, boxes_xyxy_rel: np.ndarray, labels: list[str] | None = None,
                colors=None, side: int = TILE_SIDE) -> np.ndarray:
    """Decode ``path`` (no EXIF), scale its longest side to ``side`` and draw ``boxes_xyxy_rel`` on it.

    Boxes are relative, so they are drawn after scaling: lines and labels keep one size whatever
    the source (a 128 px prepared image is enlarged first, or its labels would be blown up).
    """
    rgb = decode_rgb(path, reduce_to=side)
    height, width = rgb.shape[:2]
    if max(height, width) < side:
        scale = side / max(height, width)
        rgb = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_LINEAR)
    rgb = draw.thumbnail(rgb, side)
    return draw.draw_boxes(rgb, boxes_xyxy_rel, labels=labels, colors=colors)


def to_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """RGB array → JPEG bytes (what the browser receives)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the tile as JPEG")
    return buf.tobytes()


def boxes_xyxy_rel(boxes: pd.DataFrame) -> np.ndarray:
    """Open Images columns (XMin, XMax, YMin, YMax) → (N, 4) ``xyxy_rel``."""
    return boxes[["XMin", "YMin", "XMax", "YMax"]].to_numpy(dtype=np.float64).reshape(-1, 4)


def box_table(boxes: pd.DataFrame, names: dict[int, str]) -> pd.DataFrame:
    """One row per Open Images box of an image (numbered from 1, the order they are drawn in): class,
    size in percent of the image, and the flags that are set."""
    rows = []
    for row in boxes.itertuples(index=False):
        flags = [label for label, column in FLAG_FILTERS.items() if getattr(row, column, 0) == 1]
        rows.append({"class": names.get(int(row.ClassIndex), str(row.ClassIndex)),
                     "width": f"{100 * (row.XMax - row.XMin):.0f} %", "height": f"{100 * (row.YMax - row.YMin):.0f} %",
                     "flags": ", ".join(flags)})
    table = pd.DataFrame(rows, columns=["class", "width", "height", "flags"])
    table.insert(0, "#", [str(i) for i in range(1, len(table) + 1)])  # the number drawn on the image
    return table.set_index("#")


def numbered(labels: list[str]) -> list[str]:
    """``["Boat", "Boat"]`` → ``["1 Boat", "2 Boat"]``: labels matching a :func:`box_table`'s rows."""
    return [f"{i} {label}".strip() for i, label in enumerate(labels, start=1)]
