"""What the Evaluate page needs besides the metrics themselves (pure: files and frames in, values out).

Predictions and ground truth (pipeline.evaluation.groundtruth.load_ground_truth) are both ``xyxy_rel`` of the
prepared image darknet saw (``yolo/<ImageID>.jpg``), so both are drawn on that same image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from darknet_runner.rundir import RunDir
from pipeline.cli import UserError
from pipeline.dataset import DatasetDir
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


def _class_name(names: dict[int, str], index) -> str:
    return str(names.get(int(index), index))


def _det_result(status: str, overlap: float, iou: float) -> str:
    """Why a drawn detection is what it is, in words."""
    if status == "tp":
        return "TP"
    if status == "ignored":
        return "ignored (inside a group-of box)"
    if overlap >= iou:
        return "FP: duplicate (its box was already found)"
    if overlap > 0:
        return f"FP: near miss (IoU {overlap:.2f} < {iou:.2f})"
    return "FP: nothing of that class here"


def tile_boxes(gt: pd.DataFrame, det: pd.DataFrame, names: dict[int, str], numbered: bool = False):
    """Boxes (``xyxy_rel``), labels and colours for one image: matched ground truth, missed ground
    truth (FN), true and false positives, each with its own colour; detections show confidence and
    a false positive that overlaps a box of its class shows that IoU (a near miss).

    ``gt`` and ``det`` carry ``status`` and ``iou`` columns (pipeline.evaluation.metrics.image_box_status);
    ignored detections (Open Images group-of) are not drawn. The class name is left out when there is
    one class. ``numbered`` prefixes every label with the row number of :func:`box_table`.
    """
    show_class = len(names) > 1
    boxes, labels, colors = [], [], []

    def add(row, text: str, color) -> None:
        boxes.append((row.XMin, row.YMin, row.XMax, row.YMax))
        number = f"{len(boxes)} " if numbered else ""
        labels.append((number + text).strip())
        colors.append(color)

    for row in gt.itertuples(index=False):
        missed = row.status == "fn"
        name = f" {_class_name(names, row.ClassIndex)}" if show_class else ""
        add(row, f"FN{name}" if missed else "", COLORS["fn"] if missed else COLORS["gt"])
    for row in det.itertuples(index=False):
        if row.status not in ("tp", "fp"):
            continue
        name = f" {_class_name(names, row.ClassIndex)}" if show_class else ""
        near = f" IoU {row.iou:.2f}" if row.status == "fp" and row.iou > 0 else ""
        add(row, f"{row.status.upper()}{name} {row.Confidence:.2f}{near}", COLORS[row.status])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), labels, colors


def box_table(gt: pd.DataFrame, det: pd.DataFrame, names: dict[int, str], iou: float) -> pd.DataFrame:
    """One row per box drawn by :func:`tile_boxes` (same order, numbered from 1): what it is,
    class, confidence, IoU and the verdict (TP / FN / FP with the reason)."""
    rows = []
    for row in gt.itertuples(index=False):
        found = row.status != "fn"
        rows.append({"box": "ground truth", "class": _class_name(names, row.ClassIndex), "confidence": "",
                     "IoU": f"{row.iou:.2f}" if found else "",
                     "result": "found (TP)" if found else "missed (FN)"})
    for row in det.itertuples(index=False):
        if row.status not in ("tp", "fp"):
            continue
        rows.append({"box": "prediction", "class": _class_name(names, row.ClassIndex),
                     "confidence": f"{row.Confidence:.2f}", "IoU": f"{row.iou:.2f}" if row.iou > 0 else "",
                     "result": _det_result(row.status, float(row.iou), iou)})
    table = pd.DataFrame(rows, columns=["box", "class", "confidence", "IoU", "result"])
    table.insert(0, "#", [str(i) for i in range(1, len(table) + 1)])  # the number drawn on the image
    return table.set_index("#")


def evaluation_inputs(run_dir: Path, predictions: Path, dataset_dir: Path | None = None) -> list[Path]:
    """The files a run's evaluation reads, for a cache stamp: the predictions, the test list, each
    test image's label file, and the dataset's manifest and boxes.parquet (IsGroupOf) when known."""
    run = RunDir(run_dir)
    paths = [predictions, run.list_path("test")]
    if dataset_dir is not None:
        dataset = DatasetDir(Path(dataset_dir))
        paths += [dataset.manifest_path, dataset.boxes_path]
    try:
        paths += [image.with_suffix(".txt") for _, image in run.split_images("test")]
    except UserError:  # no test list: the evaluation says so itself
        pass
    return paths


def class_table(result: dict) -> pd.DataFrame:
    """The per-class rows of a result for display: numbers as text, "—" where a value is undefined."""
    def pct(value) -> str:
        return "—" if value is None else f"{100 * value:.1f} %"

    rows = [{"class": c["name"], "AP": pct(c["ap"]), "TP": c["tp"], "FP": c["fp"], "FN": c["fn"],
             "precision": pct(c.get("precision")), "recall": pct(c.get("recall")), "F1": pct(c.get("f1"))}
            for c in result.get("classes", [])]
    return pd.DataFrame(rows, columns=["class", "AP", "TP", "FP", "FN", "precision", "recall", "F1"])


def floor2(value: float) -> float:
    """``value`` rounded down to the slider's 0.01 step (so the detection at ``value`` stays above it)."""
    return float(np.floor(value * 100 + 1e-9) / 100)


def empty_states(result: dict, det: pd.DataFrame, conf: float) -> list[str]:
    """Sentences saying why the numbers are empty or zero, and what to do; [] when nothing is."""
    out = []
    n_gt = sum(int(c["tp"]) + int(c["fn"]) for c in result.get("classes", []))
    if n_gt == 0:
        out.append("The test images have no ground-truth boxes, so AP and recall are undefined (shown as —): "
                   "split the dataset again so the test split gets labelled images.")
    if len(det) == 0:
        out.append(f"These weights found nothing in the {result.get('images', 0)} test images, at any confidence: "
                   "mAP is 0 and there is no precision–recall curve. Early weights often predict nothing; "
                   "train longer (or start from pretrained weights) and predict again.")
    elif float(det["Confidence"].max()) < conf:
        top = float(det["Confidence"].max())
        out.append(f"No prediction reaches the confidence threshold {conf:.2f} (the highest is {top:.2f}), so TP "
                   f"and FP are 0 and precision is undefined (—): lower the threshold.")
    return out
