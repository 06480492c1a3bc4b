"""Evaluate a run: its predictions against the labels it was trained on → ``runs/<id>/metrics.json``.

Ground truth is what the detector was trained on: the written ``yolo/<ImageID>.txt`` labels of
the images in the run's split list (``cxcywh_rel`` of the prepared image → ``xyxy_rel``).
``IsGroupOf`` (for the Open Images method) comes from the dataset's boxes.parquet: each label box
is aligned with the same-class boxes.parquet row of that image whose box, placed the way prepare
placed it (stretch, or the letterbox geometry in the JPEG's marker), overlaps it best with
IoU >= 0.9; a label box without such a row gets -1 (unknown, scored as a normal box). Images
whose label file is missing are left out (logged and counted in ``missing_labels``): a missing
file is "unknown", not "no objects".
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.evaluation import export, metrics
from pipeline.boxes import cxcywh_rel_to_xyxy_rel, iou_xyxy, xyxy_rel_to_letterbox_xyxy_rel
from pipeline.cli import UserError
from pipeline.workspace import Workspace, atomic_write_text, write_json

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
ALIGN_IOU = 0.9  # a label box and a boxes.parquet row this close are the same object
GT_COLUMNS = ["ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax", "IsGroupOf"]  # xyxy_rel


def _predict_module():
    """darknet_runner.predict knows the run layout (lists, weights, predictions file names)."""
    from darknet_runner import predict

    return predict


def read_label_file(path: Path, image_id: str) -> pd.DataFrame:
    """One darknet label file (``class cx cy w h``, ``cxcywh_rel``) → rows ``xyxy_rel``.

    Reading stops at the first line that is not five numbers, as darknet's ``fscanf`` does.
    """
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        try:
            cls, *box = int(parts[0]), *(float(v) for v in parts[1:5])
        except (ValueError, IndexError):
            break
        if len(box) != 4:
            break
        rows.append((cls, *box))
    table = np.array(rows, np.float64).reshape(-1, 5)
    xyxy = cxcywh_rel_to_xyxy_rel(table[:, 1:])
    return pd.DataFrame({"ImageID": [image_id] * len(table), "ClassIndex": table[:, 0].astype(np.int16),
                         "XMin": xyxy[:, 0], "YMin": xyxy[:, 1], "XMax": xyxy[:, 2], "YMax": xyxy[:, 3],
                         "IsGroupOf": np.full(len(table), -1, np.int8)})


def load_ground_truth(run_dir: Path, split: str = "test",
                      dataset_dir: Path | None = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The labels of a run's split (``xyxy_rel``) with IsGroupOf aligned from boxes.parquet.

    Returns:
        (ground truth rows, ImageIDs evaluated, ImageIDs left out because their label is missing).
    """
    images = _predict_module().split_images(run_dir, split)
    frames, kept, missing = [], [], []
    for image_id, path in images:
        label = path.with_suffix(".txt")
        if not label.is_file():
            missing.append(image_id)
            continue
        kept.append(image_id)
        frames.append(_aligned(read_label_file(label, image_id), path, dataset_dir))
    if missing:
        log.warning("%d %s images have no label file and are left out, e.g. %s", len(missing), split, missing[0])
    gt = pd.concat(frames, ignore_index=True) if frames else _empty_ground_truth()
    return gt[GT_COLUMNS], kept, missing


def _empty_ground_truth() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
        GT_COLUMNS, [object, np.int16, np.float64, np.float64, np.float64, np.float64, np.int8])})


_BOXES_CACHE: dict[str, pd.DataFrame] = {}


def _dataset_boxes(dataset_dir: Path | None) -> pd.DataFrame | None:
    path = dataset_dir / "boxes.parquet" if dataset_dir else None
    if path is None or not path.is_file():
        return None
    key = f"{path}:{path.stat().st_mtime_ns}"
    if key not in _BOXES_CACHE:
        _BOXES_CACHE.clear()
        table = pd.read_parquet(path, columns=["ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax", "IsGroupOf"])
        _BOXES_CACHE[key] = table.set_index(table["ImageID"].astype(str)).sort_index()
    return _BOXES_CACHE[key]


def _aligned(labels: pd.DataFrame, image_path: Path, dataset_dir: Path | None) -> pd.DataFrame:
    """Copy IsGroupOf onto label rows from the best-overlapping same-class boxes.parquet row."""
    boxes = _dataset_boxes(dataset_dir)
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


def _dataset_dir(ws: Workspace, run: dict) -> Path | None:
    dataset = run.get("dataset") or {}
    if dataset.get("slug") and ws.dataset_dir(dataset["slug"]).is_dir():
        return ws.dataset_dir(dataset["slug"])
    return Path(dataset["path"]) if dataset.get("path") else None


def find_predictions(run_dir: Path, weights: str | os.PathLike, backend: str | None, split: str) -> Path:
    """The predictions parquet for ``weights`` (best|last|final|path|a predictions .parquet)."""
    predict = _predict_module()
    if str(weights).endswith(".parquet"):
        path = Path(weights) if Path(weights).is_absolute() else run_dir / weights
        if not path.is_file():
            path = run_dir / predict.PREDICTIONS_DIR / Path(weights).name
        if path.is_file():
            return path
        raise UserError(f"there is no predictions file {weights} in run {run_dir.name}")
    weights_path = predict.resolve_weights(run_dir, weights)
    for choice in ([backend] if backend else list(predict.BACKENDS)):
        path = predict.predictions_path(run_dir, weights_path, choice, split)
        if path.is_file():
            return path
    raise FileNotFoundError(predict.predictions_path(run_dir, weights_path, backend or "darknet", split))


@dataclass
class RunInputs:
    """What a run's evaluation reads: ground truth and detections (``xyxy_rel``) and where from."""

    run_dir: Path
    predictions: Path
    gt: pd.DataFrame
    det: pd.DataFrame
    images: list[str]
    missing_labels: list[str]
    class_names: dict[int, str]


def load_run_inputs(ws: Workspace, run_id: str, *, weights: str | os.PathLike = "best", split: str = "test",
                    backend: str | None = None, predict_missing: bool = True, progress=None) -> RunInputs:
    """Resolve a run's predictions (predicting first if allowed and missing) and its ground truth.

    Raises:
        UserError: unknown run, weights or split; no predictions and ``predict_missing`` off.
    """
    predict = _predict_module()
    from darknet_runner import rundir

    run_dir = rundir.resolve_run(ws, run_id)
    run = rundir.load_run(run_dir)
    try:
        path = find_predictions(run_dir, weights, backend, split)
    except FileNotFoundError as err:
        if not predict_missing:
            raise UserError(f"there are no predictions at {err.args[0]}; run "
                            f"`python -m darknet_runner predict {run_dir.name}` first") from err
        path = predict.predict(run_dir, weights=weights, backend=backend or "darknet", split=split, progress=progress)
    gt, kept, missing = load_ground_truth(run_dir, split, _dataset_dir(ws, run))
    det = pd.read_parquet(path)
    det = det[det["ImageID"].astype(str).isin(set(kept))].reset_index(drop=True)
    names = dict(enumerate(run.get("classes") or _names_file(run_dir)))
    return RunInputs(run_dir, path, gt, det, kept, missing, names)


def evaluate_run(ws: Workspace, run_id: str, *, weights: str | os.PathLike = "best", iou: float = 0.5,
                 method: str = "voc", conf: float = 0.25, split: str = "test", backend: str | None = None,
                 predict_missing: bool = True, progress=None) -> dict:
    """Score a run's predictions on ``split`` and write ``runs/<id>/metrics.json``.

    Args:
        ws: the workspace. run_id: a run id (or run folder).
        weights: best | last | final | a .weights path | a predictions .parquet.
        iou, method, conf: see :func:`pipeline.evaluation.metrics.evaluate_detections`.
        split: the run's list to score. backend: "darknet" | "opencv" | None (whichever exists,
            darknet first).
        predict_missing: run the prediction first when its parquet does not exist yet.

    Returns:
        The metrics dict plus ``run``, ``weights``, ``predictions``, ``split``, ``images``,
        ``missing_labels``, ``conf``.

    Raises:
        UserError: unknown run, weights, method or split; no predictions and ``predict_missing`` off.
    """
    inputs = load_run_inputs(ws, run_id, weights=weights, split=split, backend=backend,
                             predict_missing=predict_missing, progress=progress)
    try:
        result = metrics.evaluate_detections(inputs.gt, inputs.det, iou=iou, method=method, conf=conf,
                                             class_names=inputs.class_names)
    except ValueError as err:
        raise UserError(str(err)) from err
    about = _predict_module().read_predictions_info(inputs.predictions)
    result.update({"run": inputs.run_dir.name, "weights": about.get("weights", str(weights)),
                   "predictions": str(inputs.predictions.relative_to(inputs.run_dir)), "split": split,
                   "images": len(inputs.images), "missing_labels": len(inputs.missing_labels), "conf": conf})
    write_json(inputs.run_dir / METRICS_NAME, result)
    return result


def export_run(ws: Workspace, run_id: str, folder: str | os.PathLike, *, weights: str | os.PathLike = "best",
               split: str = "test", backend: str | None = None, conf: float = 0.0) -> dict[str, Path]:
    """Write a run's split for other tools: COCO JSON (ground truth, detections) and YOLO txt.

    Files: ``<folder>/ground_truth_coco.json``, ``<folder>/detections_coco.json`` (pixel boxes of
    the prepared images) and ``<folder>/detections_yolo/<ImageID>.txt`` (``class cx cy w h conf``,
    an empty file for an image without detections). Detections below ``conf`` are left out.

    Returns:
        name → path of what was written.
    """
    from PIL import Image

    inputs = load_run_inputs(ws, run_id, weights=weights, split=split, backend=backend, predict_missing=False)
    paths = dict(_predict_module().split_images(inputs.run_dir, split))
    sizes = []
    for image_id in inputs.images:
        with Image.open(paths[image_id]) as image:
            sizes.append((image_id, *image.size))
    det = inputs.det[inputs.det["Confidence"] >= conf]
    gt_json, det_json = export.to_coco(inputs.gt, det, pd.DataFrame(sizes, columns=["ImageID", "width", "height"]),
                                       inputs.class_names)
    folder = Path(folder)
    written = {"ground_truth_coco": folder / "ground_truth_coco.json",
               "detections_coco": folder / "detections_coco.json", "detections_yolo": folder / "detections_yolo"}
    atomic_write_text(written["ground_truth_coco"], json.dumps(gt_json))
    atomic_write_text(written["detections_coco"], json.dumps(det_json))
    export.write_yolo_txt(det, written["detections_yolo"], images=inputs.images, with_confidence=True)
    return written


def _names_file(run_dir: Path) -> list[str]:
    path = run_dir / "obj.names"
    return [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()] if path.is_file() else []


def register(subparsers) -> None:
    """``evaluate --run RUN [--weights …] [--iou 0.5] [--method voc|…] [--conf 0.25] [--json]``."""
    parser = subparsers.add_parser("evaluate", help="score a run's test predictions (mAP, PR curves)")
    parser.add_argument("--run", required=True, help="run id or run folder")
    parser.add_argument("--weights", default="best", help="best, last, final, a .weights or predictions .parquet")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--method", choices=metrics.METHODS, default="voc")
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold of the TP/FP/FN summary")
    parser.add_argument("--split", choices=("test", "valid", "train"), default="test")
    parser.add_argument("--backend", choices=("darknet", "opencv"), default=None)
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.add_argument("--export", metavar="DIR", help="also write COCO JSON (ground truth, detections) and "
                        "YOLO txt detections (conf >= --conf) into DIR, for pycocotools or FiftyOne")
    parser.set_defaults(func=_cli)


def _cli(args) -> int:
    ws = Workspace.open(getattr(args, "workspace", None))
    result = evaluate_run(ws, args.run, weights=args.weights, iou=args.iou, method=args.method, conf=args.conf,
                          split=args.split, backend=args.backend)
    if args.export:
        written = export_run(ws, args.run, args.export, weights=args.weights, split=args.split,
                             backend=args.backend, conf=args.conf)
        print(f"exported {', '.join(str(p) for p in written.values())}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    map50 = result["map50"]
    print(f"{result['run']}  {result['predictions']}  {result['images']} {result['split']} images  "
          f"method={result['method']} IoU={result['iou']}")
    print(f"{'class':<24}{'AP':>8}{'TP':>7}{'FP':>7}{'FN':>7}  (conf >= {args.conf})")
    for row in result["classes"]:
        ap = "-" if row["ap"] is None else f"{100 * row['ap']:.2f}"
        print(f"{row['name']:<24}{ap:>8}{row['tp']:>7}{row['fp']:>7}{row['fn']:>7}")
    print(f"mAP@{result['iou']:.2f} = {'-' if map50 is None else f'{100 * map50:.2f} %'}")
    return 0
