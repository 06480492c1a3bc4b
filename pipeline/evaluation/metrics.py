"""Detection metrics: greedy matching, AP (VOC, VOC2007, COCO, Open Images), PR curves, summaries.

Boxes are ``xyxy_rel`` everywhere in this module. Inputs are DataFrames:

- ground truth: ``ImageID, ClassIndex, XMin, YMin, XMax, YMax`` and optionally ``IsGroupOf``
  (int8; -1 = unknown is treated as *not* group-of);
- detections: ``ImageID, ClassIndex, Confidence, XMin, YMin, XMax, YMax``.

Matching is greedy by confidence inside each (image, class), at IoU >= ``iou`` (pycocotools also
uses >=; darknet uses >, which differs only at an exact tie). The rule depends on the method:

- ``voc``, ``voc07`` and ``openimages``: a detection looks only at its highest-IoU ground truth
  box; if that box is already taken, the detection is a false positive (VOC devkit, darknet's
  ``map``, TF's Open Images evaluator).
- ``coco101``: a detection takes the highest-IoU box that is still free (pycocotools).

Group-of boxes: ``voc``, ``voc07`` and ``coco101`` treat them as normal boxes. ``openimages``
implements the *challenge* protocol (TF ``OpenImagesDetectionChallengeEvaluator``,
``group_of_weight=1``): detections are first matched to the non-group-of boxes; a detection that
is not a TP and whose intersection over its *own* area (IoA) with its best same-class group-of box
is >= ``iou`` is absorbed by that box. The highest-scoring absorbed detection counts as one TP
(status ``tp``), the others are ignored (status ``ignored``: neither TP nor FP). Every group-of
box counts once in the recall denominator, so a group-of box that absorbs nothing is a miss.
Image-level labels and the class hierarchy of the full Open Images metric are not applied.

AP: ``voc`` and ``openimages`` use the all-points precision envelope (VOC2010+, darknet's
default), ``voc07`` the 11-point interpolation at recall 0, 0.1, …, 1 (thresholds from
``np.linspace``, so recall 0.3 reaches the 0.3 point), ``coco101`` pycocotools' 101-point rule
exactly (so it equals COCOeval's AP at one IoU threshold with no crowd boxes). mAP is the mean
over classes that have ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METHODS = ("voc", "voc07", "coco101", "openimages")
GT_COLUMNS = ("ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax")
DET_COLUMNS = ("ImageID", "ClassIndex", "Confidence", "XMin", "YMin", "XMax", "YMax")
BOX_COLUMNS = ["XMin", "YMin", "XMax", "YMax"]  # xyxy_rel order

# Detection status codes in :class:`Matches`.
TP, FP, IGNORED = 1, 0, -1
STATUS_NAMES = {TP: "tp", FP: "fp", IGNORED: "ignored"}

# The matching rule of each method: "best" looks at the best box only, "free" at the best free box.
_RULE = {"voc": "best", "voc07": "best", "openimages": "best", "coco101": "free"}
# pycocotools' recall thresholds, computed the same way so searchsorted ties agree bit for bit.
_COCO_RECALLS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_VOC07_RECALLS = np.linspace(0.0, 1.0, 11)
# Pairs (detection × same-class ground truth) processed at once; bounds memory on huge inputs.
_CHUNK_PAIRS = 2_000_000
DEFAULT_CURVE_POINTS = 500


@dataclass
class Matches:
    """Outcome of matching, aligned with the input rows (positional).

    Attributes:
        det_status: per detection, ``TP`` (1), ``FP`` (0) or ``IGNORED`` (-1, Open Images group-of).
        det_iou: overlap with the matched (or best) box: IoU, or IoA for a group-of TP; 0 if none.
        det_gt: positional index of the matched ground truth row (for a VOC-rule duplicate, the
            already-taken box it hit), -1 if none.
        gt_hit: per ground truth row, True when a TP detection took it.
    """

    det_status: np.ndarray
    det_iou: np.ndarray
    det_gt: np.ndarray
    gt_hit: np.ndarray


def _check_frame(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"the {what} table lacks the column(s) {', '.join(missing)}")


def _check_args(method: str, iou: float) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    if not 0.0 < float(iou) <= 1.0:
        raise ValueError(f"the IoU threshold must be in (0, 1], not {iou}")


def _keys(gt: pd.DataFrame, det: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One int64 key per (image, class), shared by both tables."""
    ids = pd.concat([gt["ImageID"].astype(str), det["ImageID"].astype(str)], ignore_index=True)
    codes = pd.factorize(ids)[0].astype(np.int64)
    gcls = gt["ClassIndex"].to_numpy(np.int64)
    dcls = det["ClassIndex"].to_numpy(np.int64)
    ncls = int(max(gcls.max(initial=0), dcls.max(initial=0))) + 1
    return codes[: len(gt)] * ncls + gcls, codes[len(gt):] * ncls + dcls


def _boxes(frame: pd.DataFrame) -> np.ndarray:
    return frame[BOX_COLUMNS].to_numpy(np.float64).reshape(-1, 4)


def _pair_overlap(d: np.ndarray, g: np.ndarray, over_det_area: bool = False) -> np.ndarray:
    """Element-wise IoU (or IoA over ``d``'s area) of two (P, 4) xyxy arrays."""
    iw = np.minimum(d[:, 2], g[:, 2]) - np.maximum(d[:, 0], g[:, 0])
    ih = np.minimum(d[:, 3], g[:, 3]) - np.maximum(d[:, 1], g[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_d = (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])
    denom = area_d if over_det_area else area_d + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, inter / denom, 0.0)


class _Index:
    """Ground truth rows sorted by key, and where each detection key's block of rows starts."""

    def __init__(self, keys: np.ndarray):
        self.order = np.argsort(keys, kind="stable")
        self.uniq, self.start, self.count = np.unique(keys[self.order], return_index=True, return_counts=True)

    def lookup(self, det_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) in the sorted ground truth for each detection key (count 0 if none)."""
        if len(self.uniq) == 0:
            zeros = np.zeros(len(det_keys), np.int64)
            return zeros, zeros
        pos = np.searchsorted(self.uniq, det_keys).clip(max=len(self.uniq) - 1)
        found = self.uniq[pos] == det_keys
        return self.start[pos], np.where(found, self.count[pos], 0)


def _expand(start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ranges ``start[i] .. start[i]+count[i]`` → (pair index, offsets of each range)."""
    offsets = np.cumsum(count) - count
    total = int(count.sum())
    return np.repeat(start - offsets, count) + np.arange(total), offsets


def _first_of_runs(values: np.ndarray) -> np.ndarray:
    """True where a run of equal values starts (values grouped already)."""
    return np.r_[True, values[1:] != values[:-1]] if len(values) else np.zeros(0, bool)


def _segment_argmax(values: np.ndarray, offsets: np.ndarray, count: np.ndarray, last: bool):
    """Per non-empty segment: max value and the position of its first (or last) occurrence."""
    best = np.maximum.reduceat(values, offsets)
    seg = np.repeat(np.arange(len(count)), count)
    hit = np.flatnonzero(values == best[seg])
    hseg = seg[hit]
    if last:
        keep = np.r_[hseg[1:] != hseg[:-1], True]
    else:
        keep = _first_of_runs(hseg)
    return best, hit[keep]


def _greedy(gt_box, gt_key, det_box, det_key, det_score, thr: float, rule: str):
    """Greedy matching inside each key; returns det_gt (positional, -1), det_iou, det_tp."""
    n = len(det_key)
    det_gt, det_iou, det_tp = np.full(n, -1, np.int64), np.zeros(n), np.zeros(n, bool)
    if n == 0 or len(gt_key) == 0:
        return det_gt, det_iou, det_tp
    index = _Index(gt_key)
    gbox = gt_box[index.order]
    order = np.lexsort((-det_score, det_key))  # by key, then confidence; stable for ties
    dkey = det_key[order]
    start, count = index.lookup(dkey)
    first = np.flatnonzero(_first_of_runs(dkey))
    rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    taken = np.zeros(len(gt_key), bool)
    for lo, hi in _chunks(count, first, n):
        sel = lo + np.flatnonzero(count[lo:hi])
        if len(sel) == 0:
            continue
        sel = sel[np.argsort(rank[sel], kind="stable")]  # one step per rank: pairs contiguous
        pair_gt, offsets = _expand(start[sel], count[sel])
        ious = _pair_overlap(np.repeat(det_box[order[sel]], count[sel], axis=0), gbox[pair_gt])
        steps = np.flatnonzero(np.r_[True, np.diff(rank[sel]) != 0, True])
        for s0, s1 in zip(steps[:-1], steps[1:]):
            _greedy_step(sel[s0:s1], offsets[s0:s1], count[sel[s0:s1]], ious, pair_gt, taken, thr, rule,
                         (order, det_gt, det_iou, det_tp))
    det_gt[det_gt >= 0] = index.order[det_gt[det_gt >= 0]]
    return det_gt, det_iou, det_tp


def _greedy_step(dets, offsets, count, ious, pair_gt, taken, thr, rule, out) -> None:
    """Match one detection per key (the same confidence rank in every key) at once."""
    order, det_gt, det_iou, det_tp = out
    p0 = offsets[0]
    p1 = offsets[-1] + count[-1]
    values, gts = ious[p0:p1], pair_gt[p0:p1]
    if rule == "free":
        values = np.where(taken[gts] | (values < thr), -1.0, values)
    best, at = _segment_argmax(values, offsets - p0, count, last=(rule == "free"))
    chosen = gts[at]
    ok = best >= thr
    if rule == "best":
        ok &= ~taken[chosen]
    taken[chosen[ok]] = True
    rows = order[dets]
    det_iou[rows] = np.clip(best, 0.0, None)
    det_gt[rows] = np.where(best >= thr, chosen, -1)
    det_tp[rows] = ok


def _chunks(count: np.ndarray, first: np.ndarray, n: int):
    """Split sorted detections at key boundaries so each chunk holds about _CHUNK_PAIRS pairs."""
    per_key = np.add.reduceat(count, first) if len(first) else np.zeros(0, np.int64)
    chunk_of_key = (np.cumsum(per_key) - per_key) // _CHUNK_PAIRS
    edges = first[np.flatnonzero(np.r_[True, np.diff(chunk_of_key) != 0])]
    bounds = np.r_[edges, n]
    return zip(bounds[:-1], bounds[1:])


def _absorb_group_of(grp_box, grp_key, det_box, det_key, det_score, candidates, thr):
    """Open Images: candidates inside a same-class group-of box (IoA >= thr).

    Returns:
        (absorbed detection positions, their group box position, their IoA, True for the
        highest-scoring detection of each group box).
    """
    empty = np.zeros(0, np.int64)
    cand = np.flatnonzero(candidates)
    index = _Index(grp_key)
    start, count = index.lookup(det_key[cand])
    cand, start, count = cand[count > 0], start[count > 0], count[count > 0]
    if len(cand) == 0:
        return empty, empty, np.zeros(0), np.zeros(0, bool)
    pair_grp, offsets = _expand(start, count)
    ioa = _pair_overlap(np.repeat(det_box[cand], count, axis=0), grp_box[index.order][pair_grp], True)
    best, at = _segment_argmax(ioa, offsets, count, last=False)
    inside = best >= thr
    absorbed, grp, ioa = cand[inside], index.order[pair_grp[at[inside]]], best[inside]
    by_score = np.lexsort((-det_score[absorbed], grp))
    top = np.zeros(len(absorbed), bool)
    top[by_score[_first_of_runs(grp[by_score])]] = True
    return absorbed, grp, ioa, top


def match(gt: pd.DataFrame, det: pd.DataFrame, *, iou: float = 0.5, method: str = "voc") -> Matches:
    """Match detections to ground truth (both ``xyxy_rel``) with the rule of ``method``.

    Args:
        gt: ground truth rows (see the module docstring).
        det: detection rows.
        iou: the IoU threshold (also the IoA threshold of Open Images group-of boxes).
        method: one of :data:`METHODS`.

    Returns:
        The per-row outcome (:class:`Matches`).
    """
    _check_args(method, iou)
    _check_frame(gt, GT_COLUMNS, "ground truth")
    _check_frame(det, DET_COLUMNS, "detection")
    gt_key, det_key = _keys(gt, det)
    gt_box, det_box = _boxes(gt), _boxes(det)
    score = det["Confidence"].to_numpy(np.float64)
    group = _group_flags(gt) if method == "openimages" else np.zeros(len(gt), bool)
    normal = np.flatnonzero(~group)
    det_gt, det_iou, det_tp = _greedy(gt_box[normal], gt_key[normal], det_box, det_key, score, iou, _RULE[method])
    det_gt[det_gt >= 0] = normal[det_gt[det_gt >= 0]]
    status = np.where(det_tp, TP, FP).astype(np.int8)
    if group.any():
        grp = np.flatnonzero(group)
        absorbed, box, ioa, top = _absorb_group_of(gt_box[grp], gt_key[grp], det_box, det_key, score,
                                                   ~det_tp, iou)
        status[absorbed] = np.where(top, TP, IGNORED)
        det_gt[absorbed] = grp[box]
        det_iou[absorbed] = ioa
    gt_hit = np.zeros(len(gt), bool)
    gt_hit[det_gt[status == TP]] = True
    return Matches(status, det_iou, det_gt, gt_hit)


def _group_flags(gt: pd.DataFrame) -> np.ndarray:
    if "IsGroupOf" not in gt.columns:
        return np.zeros(len(gt), bool)
    return gt["IsGroupOf"].fillna(-1).to_numpy(np.int64) == 1  # -1 (unknown) is not group-of


def average_precision(tp: np.ndarray, n_gt: int, method: str = "voc") -> float | None:
    """AP of one class from its detections' TP flags sorted by descending confidence.

    Args:
        tp: bool per counted detection (TP or FP; ignored ones left out), best first.
        n_gt: number of ground truth boxes of the class.
        method: one of :data:`METHODS`.

    Returns:
        The AP in [0, 1], or None when the class has no ground truth.
    """
    if n_gt <= 0:
        return None
    tp = np.asarray(tp, bool)
    ctp = np.cumsum(tp).astype(float)
    cfp = np.cumsum(~tp).astype(float)
    recall = ctp / n_gt
    if method == "coco101":
        return _ap_coco101(ctp / (ctp + cfp + np.spacing(1)), recall)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
    if method == "voc07":
        return _ap_voc07(precision, recall)
    return _ap_all_points(precision, recall)


def _ap_all_points(precision: np.ndarray, recall: np.ndarray) -> float:
    mrec = np.r_[0.0, recall, 1.0]
    mpre = np.r_[0.0, precision, 0.0]
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def _ap_voc07(precision: np.ndarray, recall: np.ndarray) -> float:
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in _VOC07_RECALLS]
    return float(np.mean(points))


def _ap_coco101(precision: np.ndarray, recall: np.ndarray) -> float:
    """pycocotools' rule: the envelope's value at the first recall >= each of 101 thresholds."""
    q = np.zeros(len(_COCO_RECALLS))
    if len(precision):
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        inds = np.searchsorted(recall, _COCO_RECALLS, side="left")
        valid = inds < len(envelope)
        q[valid] = envelope[inds[valid]]
    return float(np.mean(q))


def evaluate_detections(gt: pd.DataFrame, det: pd.DataFrame, *, iou: float = 0.5, method: str = "voc",
                        conf: float = 0.25, class_names: dict[int, str] | None = None,
                        curve_points: int = DEFAULT_CURVE_POINTS) -> dict:
    """Score detections against ground truth (both ``xyxy_rel``).

    Args:
        gt: ground truth rows. det: detection rows (any confidence; the AP uses all of them).
        iou: IoU threshold. method: one of :data:`METHODS`.
        conf: confidence threshold of the summary (TP/FP/FN/precision/recall/F1/avg IoU).
        class_names: index → name; classes listed here appear even without boxes.
        curve_points: at most this many points per PR curve (evenly spaced, last kept).

    Returns:
        ``{"method", "iou", "map50", "classes": [...], "pr_curve": {...}, "best_f1_threshold"}``.
        ``ap`` is None for a class without ground truth (left out of ``map50``, which is None
        when no class has any). ``avg_iou`` is darknet's: the IoU summed over TPs divided by
        TP + FP. Undefined ratios (precision with no detection) are None. PR curves are given for
        classes with ground truth only.
    """
    m = match(gt, det, iou=iou, method=method)
    names = dict(class_names or {})
    n_gt = gt["ClassIndex"].astype(np.int64).value_counts().to_dict()
    counted = m.det_status != IGNORED
    cls = det["ClassIndex"].to_numpy(np.int64)[counted]
    score = det["Confidence"].to_numpy(np.float64)[counted]
    is_tp = m.det_status[counted] == TP
    overlap = m.det_iou[counted]
    order = np.lexsort((-score, cls))
    cls, score, is_tp, overlap = cls[order], score[order], is_tp[order], overlap[order]
    all_classes = sorted(set(names) | set(n_gt) | set(np.unique(cls).tolist()))
    rows, curves = [], {}
    for c in all_classes:
        lo, hi = np.searchsorted(cls, [c, c + 1])
        name = names.get(c, str(c))
        total = int(n_gt.get(c, 0))
        rows.append(_class_row(name, is_tp[lo:hi], score[lo:hi], overlap[lo:hi], total, method, conf))
        if total:
            curves[name] = _pr_curve(is_tp[lo:hi], score[lo:hi], total, curve_points)
    aps = [r["ap"] for r in rows if r["ap"] is not None]
    return {
        "method": method,
        "iou": float(iou),
        "map50": float(np.mean(aps)) if aps else None,
        "classes": rows,
        "pr_curve": curves,
        "best_f1_threshold": best_f1_threshold(is_tp, score, int(len(gt))),
    }


def _class_row(name, tp, score, overlap, n_gt, method, conf) -> dict:
    """One class's AP and its summary at the confidence threshold (darknet's ``map`` lines)."""
    above = score >= conf
    tp_n = int(np.count_nonzero(tp & above))
    fp_n = int(np.count_nonzero(~tp & above))
    precision = tp_n / (tp_n + fp_n) if tp_n + fp_n else None
    recall = tp_n / n_gt if n_gt else None
    f1 = _f1(precision, recall)
    avg_iou = float(overlap[tp & above].sum() / (tp_n + fp_n)) if tp_n + fp_n else None
    return {"name": name, "ap": average_precision(tp, n_gt, method), "tp": tp_n, "fp": fp_n,
            "fn": n_gt - tp_n, "precision": precision, "recall": recall, "f1": f1, "avg_iou": avg_iou}


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _pr_curve(tp: np.ndarray, score: np.ndarray, n_gt: int, points: int) -> dict:
    ctp = np.cumsum(tp)
    precision = ctp / np.arange(1, len(tp) + 1) if len(tp) else np.zeros(0)
    recall = ctp / n_gt
    keep = np.arange(len(tp))
    if len(keep) > points > 1:
        keep = np.unique(np.linspace(0, len(tp) - 1, points).round().astype(np.int64))
    return {"precision": precision[keep].tolist(), "recall": recall[keep].tolist(),
            "confidence": score[keep].tolist()}


def best_f1_threshold(tp: np.ndarray, score: np.ndarray, n_gt: int) -> float | None:
    """The confidence threshold with the best F1 over all classes pooled (micro); None if no TP.

    Args:
        tp: bool per counted detection. score: its confidence. n_gt: all ground truth boxes.
    """
    tp = np.asarray(tp, bool)
    if n_gt <= 0 or not tp.any():
        return None
    order = np.argsort(-np.asarray(score, float), kind="stable")
    s, t = np.asarray(score, float)[order], tp[order]
    ctp = np.cumsum(t)
    cfp = np.cumsum(~t)
    last_of_run = np.r_[s[1:] != s[:-1], True]  # a threshold keeps every detection with that score
    f1 = np.where(last_of_run, 2 * ctp / (ctp + cfp + n_gt), -1.0)
    return float(s[int(np.argmax(f1))])


def per_image(gt: pd.DataFrame, det: pd.DataFrame, *, iou: float = 0.5, conf: float = 0.25,
              method: str = "voc", images=None) -> pd.DataFrame:
    """TP/FP/FN per image at a confidence threshold, worst (most FP + FN) first.

    Args:
        gt, det: as for :func:`evaluate_detections`. images: ImageIDs to list even when they have
            no boxes and no detections (e.g. every test image).

    Returns:
        DataFrame ``ImageID, tp, fp, fn, ignored`` (int64).
    """
    det = det[det["Confidence"].to_numpy(np.float64) >= conf]
    m = match(gt, det, iou=iou, method=method)
    ids = pd.Index(pd.unique(pd.concat([pd.Series(list(images or []), dtype=object),
                                        gt["ImageID"].astype(str), det["ImageID"].astype(str)])))
    out = pd.DataFrame(index=ids)
    det_ids = det["ImageID"].astype(str).to_numpy()
    for name, code in (("tp", TP), ("fp", FP), ("ignored", IGNORED)):
        out[name] = pd.Series(det_ids[m.det_status == code]).value_counts()
    out["fn"] = pd.Series(gt["ImageID"].astype(str).to_numpy()[~m.gt_hit]).value_counts()
    out = out.fillna(0).astype(np.int64)[["tp", "fp", "fn", "ignored"]]
    out = out.rename_axis("ImageID").reset_index()
    bad = out["fp"] + out["fn"]
    return out.iloc[np.lexsort((out["ImageID"].to_numpy(), -bad.to_numpy()))].reset_index(drop=True)


def image_box_status(gt: pd.DataFrame, det: pd.DataFrame, image_id: str, *, iou: float = 0.5,
                     conf: float = 0.25, method: str = "voc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label every box of one image for drawing: ground truth "tp"/"fn", detections "tp"/"fp"/"ignored".

    Args:
        gt, det: tables (may hold other images too). image_id: the image.
        iou, conf, method: as for :func:`evaluate_detections`; detections below ``conf`` are dropped.

    Returns:
        (ground truth rows + ``status``, ``iou``; detection rows + ``status``, ``iou``,
        ``gt_row`` = position of the matched row in the returned ground truth, -1 if none).
    """
    g = gt[gt["ImageID"].astype(str) == str(image_id)].reset_index(drop=True)
    d = det[(det["ImageID"].astype(str) == str(image_id)) & (det["Confidence"] >= conf)]
    d = d.reset_index(drop=True)
    m = match(g, d, iou=iou, method=method)
    g_iou = np.zeros(len(g))
    hit = m.det_status == TP
    g_iou[m.det_gt[hit]] = m.det_iou[hit]
    g = g.assign(status=np.where(m.gt_hit, "tp", "fn"), iou=g_iou)
    d = d.assign(status=[STATUS_NAMES[s] for s in m.det_status], iou=m.det_iou, gt_row=m.det_gt)
    return g, d
