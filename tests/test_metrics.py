"""pipeline.evaluation.metrics: hand-computed cases (empty first), every method, group-of, pycocotools parity."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.evaluation import export, metrics

GT_COLS = ["ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax", "IsGroupOf"]
DET_COLS = ["ImageID", "ClassIndex", "Confidence", "XMin", "YMin", "XMax", "YMax"]


def gt_frame(rows) -> pd.DataFrame:
    """rows: (image, class, xmin, ymin, xmax, ymax[, group]) in xyxy_rel."""
    rows = [r if len(r) == 7 else (*r, 0) for r in rows]
    return pd.DataFrame(rows, columns=GT_COLS).astype({"ClassIndex": "int16", "IsGroupOf": "int8"})


def det_frame(rows) -> pd.DataFrame:
    """rows: (image, class, confidence, xmin, ymin, xmax, ymax) in xyxy_rel."""
    return pd.DataFrame(rows, columns=DET_COLS).astype({"ClassIndex": "int16"})


EMPTY_GT, EMPTY_DET = gt_frame([]), det_frame([])
ALL = metrics.METHODS


# --- empty cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ALL)
def test_nothing_at_all(method):
    result = metrics.evaluate_detections(EMPTY_GT, EMPTY_DET, method=method)
    assert result == {"method": method, "iou": 0.5, "map50": None, "classes": [], "pr_curve": {},
                      "best_f1_threshold": None}


@pytest.mark.parametrize("method", ALL)
def test_named_class_without_boxes_is_listed_with_undefined_values(method):
    result = metrics.evaluate_detections(EMPTY_GT, EMPTY_DET, method=method, class_names={0: "boat"})
    assert result["classes"] == [{"name": "boat", "ap": None, "tp": 0, "fp": 0, "fn": 0, "precision": None,
                                  "recall": None, "f1": None, "avg_iou": None}]
    assert result["map50"] is None


@pytest.mark.parametrize("method", ALL)
def test_ground_truth_without_detections_scores_zero(method):
    gt = gt_frame([("a", 0, 0.1, 0.1, 0.3, 0.3), ("b", 0, 0.5, 0.5, 0.9, 0.9)])
    result = metrics.evaluate_detections(gt, EMPTY_DET, method=method, class_names={0: "boat"})
    assert result["map50"] == 0.0
    assert result["classes"][0] == {"name": "boat", "ap": 0.0, "tp": 0, "fp": 0, "fn": 2, "precision": None,
                                    "recall": 0.0, "f1": None, "avg_iou": None}
    assert result["pr_curve"] == {"boat": {"precision": [], "recall": [], "confidence": []}}
    assert result["best_f1_threshold"] is None


@pytest.mark.parametrize("method", ALL)
def test_detections_without_ground_truth_are_false_positives_and_no_ap(method):
    det = det_frame([("a", 0, 0.9, 0.1, 0.1, 0.3, 0.3), ("a", 0, 0.2, 0.5, 0.5, 0.6, 0.6)])
    result = metrics.evaluate_detections(EMPTY_GT, det, method=method, conf=0.25)
    assert result["map50"] is None
    assert result["classes"] == [{"name": "0", "ap": None, "tp": 0, "fp": 1, "fn": 0, "precision": 0.0,
                                  "recall": None, "f1": None, "avg_iou": 0.0}]
    assert result["pr_curve"] == {}


@pytest.mark.parametrize("method", ALL)
def test_average_precision_of_empty_inputs(method):
    assert metrics.average_precision(np.zeros(0, bool), 0, method) is None
    assert metrics.average_precision(np.zeros(0, bool), 3, method) == 0.0
    assert metrics.average_precision(np.array([False, False]), 3, method) == 0.0


# --- one image, two boxes: TP, FP, TP ------------------------------------------------------

CASE_A_GT = gt_frame([("img", 0, 0.0, 0.0, 0.5, 0.5), ("img", 0, 0.5, 0.5, 1.0, 1.0)])
CASE_A_DET = det_frame([
    ("img", 0, 0.7, 0.5, 0.5, 1.0, 1.0),   # exactly the second box: TP
    ("img", 0, 0.9, 0.0, 0.0, 0.5, 0.5),   # exactly the first box: TP
    ("img", 0, 0.8, 0.0, 0.6, 0.2, 0.8),   # nothing there: FP
])
# precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
CASE_A_AP = {
    "voc": 0.5 * 1 + 0.5 * (2 / 3),
    "openimages": 0.5 * 1 + 0.5 * (2 / 3),
    "voc07": (6 * 1 + 5 * (2 / 3)) / 11,
    "coco101": (51 * 1 + 50 * (2 / 3)) / 101,
}


@pytest.mark.parametrize("method", ALL)
def test_hand_computed_ap_for_every_method(method):
    result = metrics.evaluate_detections(CASE_A_GT, CASE_A_DET, method=method, conf=0.75, class_names={0: "boat"})
    assert result["map50"] == pytest.approx(CASE_A_AP[method], abs=1e-12)
    row = result["classes"][0]
    assert row["ap"] == pytest.approx(CASE_A_AP[method], abs=1e-12)
    # at conf 0.75: the 0.9 TP and the 0.8 FP; darknet's avg IoU = (1.0 + 0) / 2
    assert (row["tp"], row["fp"], row["fn"]) == (1, 1, 1)
    assert (row["precision"], row["recall"], row["f1"], row["avg_iou"]) == (0.5, 0.5, 0.5, 0.5)
    curve = result["pr_curve"]["boat"]
    assert curve["confidence"] == [0.9, 0.8, 0.7]
    assert curve["recall"] == [0.5, 0.5, 1.0]
    assert curve["precision"] == pytest.approx([1.0, 0.5, 2 / 3])
    # F1 at 0.9: 2/(1+0+2)=.667, at 0.8: .5, at 0.7: 4/(2+1+2)=.8
    assert result["best_f1_threshold"] == 0.7


def test_pr_curve_is_thinned_to_the_requested_points_keeping_the_last():
    result = metrics.evaluate_detections(CASE_A_GT, CASE_A_DET, curve_points=2)
    assert result["pr_curve"]["0"]["confidence"] == [0.9, 0.7]


def test_iou_exactly_at_threshold_matches():
    gt = gt_frame([("img", 0, 0.0, 0.0, 1.0, 1.0)])
    det = det_frame([("img", 0, 0.9, 0.0, 0.0, 1.0, 0.5)])  # IoU = 0.5 exactly
    assert metrics.evaluate_detections(gt, det, iou=0.5)["map50"] == 1.0
    assert metrics.evaluate_detections(gt, det, iou=0.51)["map50"] == 0.0


def test_classes_are_matched_separately_and_map_skips_classes_without_ground_truth():
    gt = gt_frame([("img", 0, 0.0, 0.0, 0.5, 0.5), ("img", 1, 0.5, 0.5, 1.0, 1.0)])
    det = det_frame([("img", 0, 0.9, 0.0, 0.0, 0.5, 0.5),
                     ("img", 2, 0.8, 0.5, 0.5, 1.0, 1.0)])  # right place, wrong class
    result = metrics.evaluate_detections(gt, det, class_names={0: "boat", 1: "canoe", 2: "barge"})
    assert [(c["name"], c["ap"]) for c in result["classes"]] == [("boat", 1.0), ("canoe", 0.0), ("barge", None)]
    assert result["map50"] == 0.5
    assert list(result["pr_curve"]) == ["boat", "canoe"]


# --- a duplicate: VOC's "best box only" vs COCO's "best free box" ---------------------------

DUP_GT = gt_frame([("img", 0, 0.0, 0.0, 0.4, 0.4), ("img", 0, 0.2, 0.0, 0.6, 0.4)])
DUP_DET = det_frame([
    ("img", 0, 0.9, 0.0, 0.0, 0.4, 0.4),    # first box exactly
    ("img", 0, 0.8, 0.08, 0.0, 0.48, 0.4),  # IoU 0.667 with the (taken) first box, 0.538 with the second
])


@pytest.mark.parametrize("method, ap, tp", [("voc", 0.5, 1), ("voc07", 6 / 11, 1), ("openimages", 0.5, 1),
                                            ("coco101", 1.0, 2)])
def test_duplicate_is_fp_for_voc_but_takes_the_free_box_for_coco(method, ap, tp):
    result = metrics.evaluate_detections(DUP_GT, DUP_DET, method=method, conf=0.0)
    assert result["map50"] == pytest.approx(ap, abs=1e-12)
    assert result["classes"][0]["tp"] == tp


# --- Open Images group-of --------------------------------------------------------------------

GROUP_GT = gt_frame([
    ("img", 0, 0.0, 0.0, 0.2, 0.2, 0),   # N: normal
    ("img", 0, 0.5, 0.5, 1.0, 1.0, 1),   # G: group-of
    ("img", 0, 0.0, 0.6, 0.2, 0.8, -1),  # U: flag unknown → a normal box, never detected
])
GROUP_DET = det_frame([
    ("img", 0, 0.95, 0.0, 0.0, 0.2, 0.2),  # N exactly: TP
    ("img", 0, 0.90, 0.6, 0.6, 0.7, 0.7),  # inside G (IoA 1): the group's one TP
    ("img", 0, 0.85, 0.8, 0.8, 0.9, 0.9),  # inside G too: ignored
    ("img", 0, 0.80, 0.0, 0.3, 0.1, 0.4),  # nowhere: FP
    ("img", 0, 0.70, 0.4, 0.4, 0.6, 0.6),  # a quarter inside G (IoA 0.25): FP
])


def test_open_images_group_of_counts_once_and_ignores_the_rest():
    result = metrics.evaluate_detections(GROUP_GT, GROUP_DET, method="openimages", conf=0.0)
    # counted: TP .95, TP .90, FP .80, FP .70 over 3 boxes (N, G, U) → AP = 1/3 + 1/3
    assert result["map50"] == pytest.approx(2 / 3, abs=1e-12)
    row = result["classes"][0]
    assert (row["tp"], row["fp"], row["fn"]) == (2, 2, 1)
    assert result["pr_curve"]["0"]["confidence"] == [0.95, 0.90, 0.80, 0.70]


@pytest.mark.parametrize("method", ["voc", "voc07", "coco101"])
def test_other_methods_treat_group_of_as_a_normal_box(method):
    result = metrics.evaluate_detections(GROUP_GT, GROUP_DET, method=method, conf=0.0)
    # only N is found: TP then four FPs over 3 boxes
    expected = {"voc": 1 / 3, "voc07": 4 / 11, "coco101": 34 / 101}[method]
    assert result["map50"] == pytest.approx(expected, abs=1e-12)
    assert (result["classes"][0]["tp"], result["classes"][0]["fp"]) == (1, 4)


def test_group_of_box_without_detection_is_a_miss():
    gt = gt_frame([("img", 0, 0.5, 0.5, 1.0, 1.0, 1)])
    det = det_frame([("img", 0, 0.9, 0.0, 0.0, 0.1, 0.1)])
    result = metrics.evaluate_detections(gt, det, method="openimages", conf=0.0)
    assert result["map50"] == 0.0
    assert result["classes"][0]["fn"] == 1


def test_per_image_counts_worst_first():
    assert metrics.per_image(EMPTY_GT, EMPTY_DET).empty
    gt = pd.concat([GROUP_GT, gt_frame([("clean", 0, 0.1, 0.1, 0.5, 0.5)])], ignore_index=True)
    det = pd.concat([GROUP_DET, det_frame([("clean", 0, 0.9, 0.1, 0.1, 0.5, 0.5)])], ignore_index=True)
    table = metrics.per_image(gt, det, method="openimages", conf=0.25, images=["empty"])
    assert table.to_dict("records") == [
        {"ImageID": "img", "tp": 2, "fp": 2, "fn": 1, "ignored": 1},
        {"ImageID": "clean", "tp": 1, "fp": 0, "fn": 0, "ignored": 0},
        {"ImageID": "empty", "tp": 0, "fp": 0, "fn": 0, "ignored": 0},
    ]
    voc = metrics.per_image(gt, det, method="voc", conf=0.86)  # keeps .95 and .90 of img
    assert voc.to_dict("records")[0] == {"ImageID": "img", "tp": 1, "fp": 1, "fn": 2, "ignored": 0}


def test_image_box_status_labels_each_box():
    g, d = metrics.image_box_status(GROUP_GT, GROUP_DET, "img", method="openimages", conf=0.75)
    assert g["status"].tolist() == ["tp", "tp", "fn"]
    assert g["iou"].tolist() == [1.0, 1.0, 0.0]
    assert d["status"].tolist() == ["tp", "tp", "ignored", "fp"]  # the 0.70 one is below conf
    assert d["gt_row"].tolist() == [0, 1, 1, -1]
    g, d = metrics.image_box_status(GROUP_GT, GROUP_DET, "missing")
    assert g.empty and d.empty


def test_bad_arguments_are_one_sentence():
    with pytest.raises(ValueError, match="unknown method 'map'"):
        metrics.evaluate_detections(EMPTY_GT, EMPTY_DET, method="map")
    with pytest.raises(ValueError, match="IoU threshold"):
        metrics.evaluate_detections(EMPTY_GT, EMPTY_DET, iou=0)
    with pytest.raises(ValueError, match="detection table lacks the column.s. Confidence"):
        metrics.evaluate_detections(EMPTY_GT, EMPTY_DET.drop(columns="Confidence"))


# --- random data: pycocotools parity and a plain-loop reference --------------------------------

def random_case(seed: int, images: int = 300, classes: int = 4, group_rate: float = 0.0):
    rng = np.random.default_rng(seed)
    g, d = [], []
    for i in range(images):
        boxes = []
        for _ in range(rng.integers(0, 9)):
            xy = rng.random(2) * 0.7
            box = (*xy, *(xy + rng.random(2) * 0.3 + 0.02))
            cls = int(rng.integers(classes))
            boxes.append((cls, box))
            g.append((f"im{i}", cls, *box, int(rng.random() < group_rate)))
        for _ in range(rng.integers(0, 30)):
            if boxes and rng.random() < 0.6:
                cls, box = boxes[rng.integers(len(boxes))]
                box = np.array(box) + rng.normal(0, 0.04, 4)
            else:
                xy = rng.random(2) * 0.7
                cls, box = int(rng.integers(classes)), np.r_[xy, xy + rng.random(2) * 0.3 + 0.02]
            box[2:] = np.maximum(box[2:], box[:2] + 1e-3)
            d.append((f"im{i}", cls, float(rng.random()), *box))
    return gt_frame(g), det_frame(d), pd.DataFrame({"ImageID": [f"im{i}" for i in range(images)],
                                                     "width": 640, "height": 480})


def pycocotools_ap50(gt, det, sizes, classes, iou=0.5):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_json, det_json = export.to_coco(gt, det, sizes, {i: str(i) for i in range(classes)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_json
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(det_json), "bbox")
        ev.params.iouThrs = np.array([iou])
        ev.params.maxDets = [1000]  # no per-image truncation: compare like with like
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]
    return [float(precision[:, k].mean()) if (precision[:, k] > -1).all() else None for k in range(classes)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco101_equals_pycocotools_ap50(seed):
    gt, det, sizes = random_case(seed)
    expected = pycocotools_ap50(gt, det, sizes, 4)
    ours = [c["ap"] for c in metrics.evaluate_detections(gt, det, method="coco101",
                                                         class_names={i: str(i) for i in range(4)})["classes"]]
    assert len(gt) > 500 and len(det) > 3000
    assert ours == pytest.approx(expected, abs=1e-6)
    assert ours != pytest.approx(expected[::-1], abs=1e-6)  # the classes differ, so order is checked


def reference_match(gt, det, thr, method):
    """A plain loop per (image, class): the VOC devkit / TF Open Images rules, and pycocotools'
    "best free box" (last of equal IoUs wins, as in ``evaluateImg``) for coco101."""
    status = np.zeros(len(det), np.int8)
    for (image, cls), dgroup in det.groupby(["ImageID", "ClassIndex"]):
        g = gt[(gt.ImageID == image) & (gt.ClassIndex == cls)]
        group = (g.IsGroupOf == 1).to_numpy() if method == "openimages" else np.zeros(len(g), bool)
        normal, grp = g[~group][["XMin", "YMin", "XMax", "YMax"]].to_numpy(), g[group][
            ["XMin", "YMin", "XMax", "YMax"]].to_numpy()
        taken = np.zeros(len(normal), bool)
        group_taken = np.zeros(len(grp), bool)
        for pos in dgroup.sort_values("Confidence", ascending=False, kind="stable").index:
            box = det.loc[pos, ["XMin", "YMin", "XMax", "YMax"]].to_numpy(float)
            status[pos] = metrics.FP
            if method == "coco101":
                best, chosen = thr, -1
                for k, other in enumerate(normal):
                    if taken[k] or _iou(box, other) < best:
                        continue
                    best, chosen = _iou(box, other), k
                if chosen >= 0:
                    taken[chosen] = True
                    status[pos] = metrics.TP
                continue
            if len(normal):
                ious = [_iou(box, b) for b in normal]
                best = int(np.argmax(ious))
                if ious[best] >= thr and not taken[best]:
                    taken[best] = True
                    status[pos] = metrics.TP
                    continue
            if len(grp):
                ioas = [_inter(box, b) / ((box[2] - box[0]) * (box[3] - box[1])) for b in grp]
                best = int(np.argmax(ioas))
                if ioas[best] >= thr:
                    status[pos] = metrics.IGNORED if group_taken[best] else metrics.TP
                    group_taken[best] = True
    return status


def _inter(a, b):
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _iou(a, b):
    inter = _inter(a, b)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("method", ["voc", "openimages", "coco101"])
def test_vectorised_matching_equals_a_plain_loop(method, monkeypatch):
    gt, det, _ = random_case(5, images=60, classes=2, group_rate=0.3)
    expected = reference_match(gt, det, 0.5, method)
    assert (expected == metrics.TP).sum() > 50 and (expected == metrics.FP).sum() > 50
    if method == "openimages":
        assert (expected == metrics.IGNORED).sum() > 5
    assert metrics.match(gt, det, method=method).det_status.tolist() == expected.tolist()
    monkeypatch.setattr(metrics, "_CHUNK_PAIRS", 50)  # many small chunks: same answer
    assert metrics.match(gt, det, method=method).det_status.tolist() == expected.tolist()


def test_voc_all_points_equals_the_devkit_formula_on_random_data():
    gt, det, _ = random_case(7, images=80, classes=1)
    m = metrics.match(gt, det, method="voc")
    order = np.argsort(-det["Confidence"].to_numpy(), kind="stable")
    tp = (m.det_status == metrics.TP)[order]
    rec = np.cumsum(tp) / len(gt)
    prec = np.cumsum(tp) / np.arange(1, len(tp) + 1)
    # VOCdevkit voc_ap(use_07_metric=False), written out as loops
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    expected = sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])
    assert metrics.evaluate_detections(gt, det, method="voc")["map50"] == pytest.approx(expected, abs=1e-12)


# Boxes on a coarse dyadic grid: many exact IoU and confidence ties, the hard case for tie-breaking.
_grid_box = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 3), st.integers(1, 3))


@settings(max_examples=100, deadline=None)
@given(gts=st.lists(st.tuples(st.just(0), st.integers(0, 1), _grid_box, st.booleans()), max_size=8),
       dets=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), _grid_box, st.integers(1, 3)), max_size=12),
       method=st.sampled_from(["voc", "openimages", "coco101"]),
       thr=st.sampled_from([0.3, 0.5, 1 / 3]))
def test_matching_equals_the_plain_loop_with_ties(gts, dets, method, thr):
    gt = gt_frame([(f"i{img}", cls, x / 16, y / 16, (x + w) / 16, (y + h) / 16, int(grp))
                   for img, cls, (x, y, w, h), grp in gts])
    det = det_frame([(f"i{img}", cls, conf / 5, x / 16, y / 16, (x + w) / 16, (y + h) / 16)
                     for img, cls, (x, y, w, h), conf in dets])
    expected = reference_match(gt, det, thr, method)
    assert metrics.match(gt, det, iou=thr, method=method).det_status.tolist() == expected.tolist()


def test_coco_equal_iou_tie_takes_the_last_free_box_like_pycocotools():
    # the first detection overlaps both boxes equally (IoU 1/3); the second only the second box
    # (dyadic fractions, so the tie is exact in floating point too)
    gt = gt_frame([("img", 0, 0.0, 0.0, 0.25, 0.25), ("img", 0, 0.25, 0.0, 0.5, 0.25)])
    det = det_frame([("img", 0, 0.9, 0.125, 0.0, 0.375, 0.25), ("img", 0, 0.8, 0.375, 0.0, 0.625, 0.25)])
    sizes = pd.DataFrame({"ImageID": ["img"], "width": [640], "height": [640]})  # exact pixel ties
    ours = metrics.evaluate_detections(gt, det, iou=0.3, method="coco101")["map50"]
    assert ours == pytest.approx(51 / 101, abs=1e-12)  # the tie went to the second box: then an FP
    theirs = pycocotools_ap50(gt, det, sizes, 1, iou=0.3)[0]
    assert ours == pytest.approx(theirs, abs=1e-12)
    assert metrics.evaluate_detections(gt, det, iou=0.3, method="voc")["map50"] == 1.0  # VOC: first max
