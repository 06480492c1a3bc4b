"""Evaluate a run: predict its split (when needed), score the detections against the labels it
was trained on, and write ``runs/<id>/metrics.json``; also export them for other tools.

The scoring itself is :mod:`pipeline.evaluation.metrics` (pure), the ground truth
:mod:`pipeline.evaluation.groundtruth`; this module knows where a run keeps its files.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from darknet_runner import predict
from darknet_runner.rundir import RunDir, open_run
from pipeline.atomic import atomic_write_text, write_json
from pipeline.cli import UserError
from pipeline.evaluation import export, metrics
from pipeline.evaluation.groundtruth import load_ground_truth
from pipeline.workspace import Workspace


def find_predictions(run: RunDir, weights: str | os.PathLike, backend: str | None, split: str) -> Path:
    """The predictions parquet for ``weights`` (best|last|final|path|a predictions .parquet).

    Raises:
        UserError: no such predictions file or weights; FileNotFoundError: not predicted yet.
    """
    if str(weights).endswith(".parquet"):
        path = Path(weights) if Path(weights).is_absolute() else run.path / weights
        if not path.is_file():
            path = run.predictions / Path(weights).name
        if path.is_file():
            return path
        raise UserError(f"there is no predictions file {weights} in run {run.id}")
    weights_path = run.resolve_weights(weights)
    for choice in ([backend] if backend else list(predict.BACKENDS)):
        path = run.predictions_path(weights_path, choice, split)
        if path.is_file():
            return path
    raise FileNotFoundError(run.predictions_path(weights_path, backend or "darknet", split))


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
    run = open_run(ws, run_id)
    try:
        path = find_predictions(run, weights, backend, split)
    except FileNotFoundError as err:
        if not predict_missing:
            raise UserError(f"there are no predictions at {err.args[0]}; run "
                            f"`python -m darknet_runner predict {run.id}` first") from err
        path = predict.predict(run.path, weights=weights, backend=backend or "darknet", split=split, progress=progress)
    gt, kept, missing = load_ground_truth(run.split_images(split), run.dataset(ws), split)
    det = pd.read_parquet(path)
    det = det[det["ImageID"].astype(str).isin(set(kept))].reset_index(drop=True)
    manifest = run.load()
    if manifest.get("class_map"):  # a detector with other classes (the COCO baseline): keep the mapped ones
        mapping = {int(k): int(v) for k, v in manifest["class_map"].items()}
        det = det[det["ClassIndex"].isin(list(mapping))].reset_index(drop=True)
        det["ClassIndex"] = det["ClassIndex"].map(mapping).astype(det["ClassIndex"].dtype)
    names = dict(enumerate(manifest.get("classes") or run.class_names()))
    return RunInputs(run.path, path, gt, det, kept, missing, names)


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
    about = predict.read_predictions_info(inputs.predictions)
    result.update({"run": inputs.run_dir.name, "weights": about.get("weights", str(weights)),
                   "predictions": str(inputs.predictions.relative_to(inputs.run_dir)), "split": split,
                   "images": len(inputs.images), "missing_labels": len(inputs.missing_labels), "conf": conf})
    write_json(RunDir(inputs.run_dir).metrics, result)
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
    paths = dict(RunDir(inputs.run_dir).split_images(split))
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
