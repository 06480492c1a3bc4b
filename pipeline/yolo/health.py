"""Dataset health: plain tables (pandas DataFrames) the dashboard charts and the CLI prints.

Sizes are in network pixels. Before ``prepare`` they come from boxes.parquet (``xyxy_rel``
clipped, stretched to ``size`` × ``size``); once label files exist, :func:`written_labels` gives
the exact boxes darknet will read, whatever the resize mode.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.yolo.anchors import cfg_anchors, kmeans_anchors
from pipeline import numbers
from pipeline.boxes import clip_xyxy_rel
from pipeline.cli import UserError
from pipeline.dataset import SPLITS
from pipeline.yolo.split import read_split
from pipeline.yolo.labels import read_labels
from pipeline.workspace import Workspace

TINY_PX = 8          # under this (width or height) at network size: below YOLOv3's finest stride
FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
FLAG_VALUES = {1: "yes", 0: "no", -1: "unknown"}
DEFAULT_SIZE = 416
MAX_ANCHORS = 100


def load_tables(ws: Workspace, slug: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(images, boxes) of a dataset, as stored in its parquet files."""
    dataset = ws.dataset(slug)
    if not dataset.images_path.is_file() or not dataset.boxes_path.is_file():
        raise UserError(f"there is no built dataset {slug!r} in this workspace: build it first")
    return pd.read_parquet(dataset.images_path), pd.read_parquet(dataset.boxes_path)


def check_size(size) -> int:
    """The network size tables are drawn at: a whole number of pixels from 32 to 4096.

    Raises:
        UserError: anything else (NaN, infinity, 0, negative, huge).
    """
    return numbers.whole(size, "--size", 32, 4096, " (network pixels)")


def check_anchors(k) -> int:
    """A number of anchors: a whole number from 1 to 100 (6 for yolov3-tiny, 9 for yolov3)."""
    return numbers.whole(k, "--anchors", 1, MAX_ANCHORS, " (6 for yolov3-tiny, 9 for yolov3)")


def box_table(boxes: pd.DataFrame, size: int = DEFAULT_SIZE) -> pd.DataFrame:
    """One row per box: ImageID, ClassIndex, WidthPx, HeightPx, Aspect (w / h), Tiny, from ``xyxy_rel``."""
    size = check_size(size)
    xyxy = clip_xyxy_rel(boxes[["XMin", "YMin", "XMax", "YMax"]].to_numpy(dtype=np.float64))
    return _sizes(boxes["ImageID"].astype(str).to_numpy(), boxes["ClassIndex"].to_numpy(),
                  (xyxy[:, 2] - xyxy[:, 0]) * size, (xyxy[:, 3] - xyxy[:, 1]) * size)


def written_labels(ws: Workspace, slug: str, size: int = DEFAULT_SIZE) -> pd.DataFrame:
    """The boxes of the written ``yolo/*.txt`` files as a :func:`box_table` (empty before prepare)."""
    size = check_size(size)
    yolo = ws.dataset(slug).yolo
    ids, classes, boxes = [], [np.zeros(0, np.int64)], [np.zeros((0, 4))]
    for path in sorted(yolo.glob("*.txt")) if yolo.is_dir() else []:
        labels = read_labels(path)
        ids += [path.stem] * len(labels)
        classes.append(labels.classes)
        boxes.append(labels.cxcywh)
    wh = np.concatenate(boxes)[:, 2:] * size
    return _sizes(np.array(ids, dtype=object), np.concatenate(classes), wh[:, 0], wh[:, 1])


def _sizes(ids, classes, widths: np.ndarray, heights: np.ndarray) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(heights > 0, widths / heights, np.nan)
    return pd.DataFrame({
        "ImageID": pd.Series(ids, dtype=object), "ClassIndex": pd.Series(classes, dtype=np.int64),
        "WidthPx": widths, "HeightPx": heights, "Aspect": aspect,
        "Tiny": np.minimum(widths, heights) < TINY_PX,
    })


def boxes_per_image(images: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """Histogram: how many images have 0, 1, 2, … boxes (columns ``boxes``, ``images``)."""
    per_image = boxes.groupby("ImageID").size()
    counts = images["ImageID"].astype(str).map(per_image).fillna(0).astype(int)
    table = counts.value_counts().sort_index()
    return pd.DataFrame({"boxes": table.index.astype(int), "images": table.to_numpy(dtype=int)})


def size_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Percentiles of width, height and aspect (rows) — min, 5 %, 25 %, 50 %, 75 %, 95 %, max."""
    quantiles = [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]
    labels = ["min", "p5", "p25", "median", "p75", "p95", "max"]
    rows = {col: table[col].quantile(quantiles).to_numpy() if len(table) else [np.nan] * 7
            for col in ("WidthPx", "HeightPx", "Aspect")}
    return pd.DataFrame(rows, index=labels).T


def tiny_boxes(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`box_table` under :data:`TINY_PX` in width or height, smallest first."""
    tiny = table[table["Tiny"]]
    return tiny.assign(MinSide=np.minimum(tiny["WidthPx"], tiny["HeightPx"])).sort_values(
        ["MinSide", "ImageID"], kind="stable").drop(columns="MinSide").reset_index(drop=True)


def flag_counts(boxes: pd.DataFrame) -> pd.DataFrame:
    """Per Open Images flag (rows): boxes with yes / no / unknown (-1 is kept apart, never coerced)."""
    rows = {flag: [int((boxes[flag] == value).sum()) for value in FLAG_VALUES] for flag in FLAGS if flag in boxes}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(FLAG_VALUES.values()))


def class_counts(boxes: pd.DataFrame, classes: list[dict]) -> pd.DataFrame:
    """Boxes and images per class of dataset.json (``index``, ``name``, ``boxes``, ``images``)."""
    rows = []
    for cls in classes:
        mine = boxes[boxes["ClassIndex"] == cls["index"]]
        rows.append({"index": cls["index"], "name": cls["name"], "boxes": len(mine),
                     "images": mine["ImageID"].nunique()})
    return pd.DataFrame(rows, columns=["index", "name", "boxes", "images"])


def split_table(parts: dict[str, list[str]] | None, boxes: pd.DataFrame) -> pd.DataFrame:
    """Per split (rows): images, boxes, images without boxes; empty before ``split``."""
    columns = ["images", "boxes", "empty_images"]
    if parts is None:
        return pd.DataFrame(columns=columns, dtype=int)
    per_image = boxes.groupby("ImageID").size()
    rows = {}
    for name in SPLITS:
        counts = pd.Series(parts.get(name, []), dtype=object).map(per_image).fillna(0).astype(int)
        rows[name] = [len(counts), int(counts.sum()), int((counts == 0).sum())]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def anchors_for(table: pd.DataFrame, k: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """:func:`pipeline.yolo.anchors.kmeans_anchors` over a box table's (WidthPx, HeightPx).

    Raises:
        UserError: ``k`` not a whole number from 1 to 100, or a seed outside 0..2**32-1.
        ValueError: fewer usable boxes than ``k``.
    """
    k, seed = check_anchors(k), numbers.seed(seed)
    return kmeans_anchors(table[["WidthPx", "HeightPx"]].to_numpy(), k, seed=seed)


def register(subparsers) -> None:
    """``health --dataset boat [--anchors 9] [--size N]``."""
    parser = subparsers.add_parser("health", help="dataset health tables and k-means anchors")
    parser.add_argument("--dataset", required=True, help="dataset slug (folder under datasets/)")
    parser.add_argument("--anchors", type=int, default=9, help="number of anchors (default 9; 6 for tiny)")
    parser.add_argument("--size", type=int, default=None, help="network size (default: prepare's, else 416)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed (default 0)")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    dataset = ws.dataset(args.dataset)
    manifest = dataset.load({}) or {}
    size = check_size(args.size if args.size is not None else dataset.prepared_size() or DEFAULT_SIZE)
    check_anchors(args.anchors), numbers.seed(args.seed)  # before the tables are read
    images, boxes = load_tables(ws, args.dataset)
    labels = written_labels(ws, args.dataset, size)
    table = labels if len(labels) else box_table(boxes, size)
    source = "written labels" if len(labels) else "Open Images boxes, stretched"
    sections = [
        ("classes", class_counts(boxes, manifest.get("classes", []))),
        ("boxes per image", boxes_per_image(images, boxes)),
        (f"box size in network pixels at {size} ({source})", size_summary(table).round(2)),
        (f"tiny boxes (< {TINY_PX} px): {int(table['Tiny'].sum())} of {len(table)}", tiny_boxes(table).head(10)),
        ("flags", flag_counts(boxes)),
        ("splits", split_table(read_split(ws, args.dataset), boxes)),
    ]
    for title, frame in sections:
        print(f"\n== {title}")
        print(frame.to_string() if len(frame) else "(none)")
    try:
        anchors, avg_iou = anchors_for(table, args.anchors, seed=args.seed)
    except ValueError as err:
        raise UserError(str(err)) from err
    print(f"\nanchors = {cfg_anchors(anchors)}")
    print(f"avg IoU = {avg_iou:.4f} ({args.anchors} anchors, {len(table)} boxes, seed {args.seed})")
    return 0
