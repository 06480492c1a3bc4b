"""Benchmark: our AP50 (pipeline.evaluation.metrics, COCO 101-point) against pycocotools on the same data.

Run: ``.venv/bin/python bench/evaluate.py [--images 10000] [--gt 10] [--dets 100] [--classes 5]``.
Prints a side-by-side table (seconds, ratio to pycocotools) and the largest AP difference.
Both sides start from in-memory tables: ours from the DataFrames, pycocotools from the COCO dicts
(building its index, ``loadRes``, ``evaluate`` and ``accumulate`` are timed; AP50 only).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.evaluation import export, metrics  # noqa: E402


def synthetic(images: int, gt_per: int, det_per: int, classes: int, seed: int = 0):
    """Random ground truth and detections (xyxy_rel): ~60% of detections jitter a GT box."""
    rng = np.random.default_rng(seed)
    n_gt = rng.poisson(gt_per, images)
    n_det = rng.poisson(det_per, images)
    g_img = np.repeat(np.arange(images), n_gt)
    xy = rng.random((len(g_img), 2)) * 0.7
    g_box = np.c_[xy, xy + rng.random((len(g_img), 2)) * 0.3 + 0.02]
    g_cls = rng.integers(0, classes, len(g_img))
    d_img = np.repeat(np.arange(images), n_det)
    gt_start = np.cumsum(n_gt) - n_gt
    pick = gt_start[d_img] + (rng.random(len(d_img)) * np.maximum(n_gt[d_img], 1)).astype(np.int64)
    near = (rng.random(len(d_img)) < 0.6) & (n_gt[d_img] > 0)
    xy = rng.random((len(d_img), 2)) * 0.7
    d_box = np.c_[xy, xy + rng.random((len(d_img), 2)) * 0.3 + 0.02]
    d_cls = rng.integers(0, classes, len(d_img))
    safe = np.minimum(pick, len(g_img) - 1)
    d_box[near] = g_box[safe[near]] + rng.normal(0, 0.02, (near.sum(), 4))
    d_cls[near] = g_cls[safe[near]]
    d_box[:, 2:] = np.maximum(d_box[:, 2:], d_box[:, :2] + 1e-3)
    ids = np.array([f"img{i:06d}" for i in range(images)], dtype=object)
    gt = pd.DataFrame({"ImageID": ids[g_img], "ClassIndex": g_cls, "XMin": g_box[:, 0], "YMin": g_box[:, 1],
                       "XMax": g_box[:, 2], "YMax": g_box[:, 3], "IsGroupOf": np.zeros(len(g_img), np.int8)})
    det = pd.DataFrame({"ImageID": ids[d_img], "ClassIndex": d_cls, "Confidence": rng.random(len(d_img)),
                        "XMin": d_box[:, 0], "YMin": d_box[:, 1], "XMax": d_box[:, 2], "YMax": d_box[:, 3]})
    sizes = pd.DataFrame({"ImageID": ids, "width": 640, "height": 480})
    return gt, det, sizes


def run_pycocotools(gt_json: dict, det_json: list, max_dets: int) -> tuple[float, np.ndarray]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_json
        coco.createIndex()
        results = coco.loadRes(det_json)
        ev = COCOeval(coco, results, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    elapsed = time.perf_counter() - start
    precision = ev.eval["precision"][0, :, :, 0, -1]  # [recall, class]
    return elapsed, np.where((precision > -1).all(axis=0), precision.mean(axis=0), np.nan)


def run_ours(gt: pd.DataFrame, det: pd.DataFrame, classes: int, method: str = "coco101") -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = metrics.evaluate_detections(gt, det, method=method, class_names={i: str(i) for i in range(classes)})
    elapsed = time.perf_counter() - start
    return elapsed, np.array([np.nan if c["ap"] is None else c["ap"] for c in result["classes"]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--gt", type=int, default=10)
    parser.add_argument("--dets", type=int, default=100)
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args()
    gt, det, sizes = synthetic(args.images, args.gt, args.dets, args.classes)
    gt_json, det_json = export.to_coco(gt, det, sizes, {i: str(i) for i in range(args.classes)})
    max_dets = int(det.groupby(["ImageID", "ClassIndex"]).size().max())  # no truncation in pycocotools
    ours_s, ours_ap = run_ours(gt, det, args.classes)
    coco_s, coco_ap = run_pycocotools(gt_json, det_json, max_dets)
    print(f"{args.images} images, {len(gt)} GT boxes, {len(det)} detections, {args.classes} classes, "
          f"AP@0.5 (101-point)")
    print(f"{'implementation':<28}{'seconds':>10}{'ratio':>10}{'mAP50':>12}")
    print(f"{'pycocotools COCOeval':<28}{coco_s:>10.2f}{1.0:>10.2f}{np.nanmean(coco_ap):>12.6f}")
    print(f"{'pipeline.evaluation.metrics (ours)':<28}{ours_s:>10.2f}{ours_s / coco_s:>10.2f}{np.nanmean(ours_ap):>12.6f}")
    print(f"largest per-class AP difference: {np.nanmax(np.abs(ours_ap - coco_ap)):.2e}")
    print("other methods of ours on the same data (no pycocotools equivalent; 10% of GT marked group-of):")
    grouped = gt.assign(IsGroupOf=(np.arange(len(gt)) % 10 == 0).astype(np.int8))
    for method, table in (("voc", gt), ("voc07", gt), ("openimages", grouped)):
        seconds, aps = run_ours(table, det, args.classes, method)
        print(f"{'pipeline.evaluation.metrics ' + method:<28}{seconds:>10.2f}{seconds / coco_s:>10.2f}{np.nanmean(aps):>12.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
