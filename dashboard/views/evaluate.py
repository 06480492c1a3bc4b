"""Evaluate: predict the test set with a run's weights, mAP and PR curves, and an image browser."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from darknet_runner import evaluate, predict
from darknet_runner.rundir import RunDir
from dashboard import charts, evalview, ui
from pipeline.dataset import DatasetDir
from pipeline.evaluation import metrics
from pipeline.evaluation.groundtruth import load_ground_truth
from pipeline.cli import UserError
from pipeline.workspace import Workspace

BACKEND_NAMES = {"darknet": "darknet detector valid (the run's binary)", "opencv": "OpenCV DNN (CPU)"}
BROWSER_N = 12
IOU = 0.5


def _predict(run_dir: Path, weights: Path, backend: str) -> None:
    with st.status(f"Predicting the test set with {weights.name}…", expanded=True) as status:
        try:
            path = predict.predict(run_dir, weights=str(weights), backend=backend, split="test",
                                   progress=ui.progress_callback("Predicting"))
        except (UserError, ValueError, OSError, RuntimeError) as err:
            status.update(label="Prediction failed", state="error")
            st.error(ui.md_escape(str(err)))
            return
        status.update(label=f"Predictions written to {path.name}", state="complete")


@st.cache_data(show_spinner=False, max_entries=32)
def _evaluation(root: str, run_id: str, weights: str, backend: str, conf: float, _stamp: int) -> dict:
    """metrics.json's content for these predictions (cached until the predictions file changes)."""
    return evaluate.evaluate_run(Workspace(Path(root)), run_id, weights=weights, iou=IOU, method="voc", conf=conf,
                                 backend=backend, predict_missing=False)


def _dataset_dir(run_dir: Path) -> Path | None:
    """The run's dataset folder (IsGroupOf comes from its boxes.parquet)."""
    dataset = RunDir(run_dir).dataset(ws)
    return dataset.path if dataset is not None else None


def _summary(result: dict) -> None:
    classes = pd.DataFrame(result["classes"])
    cols = st.columns(4)
    map50 = result.get("map50")
    cols[0].metric("mAP@0.5", "—" if map50 is None else f"{100 * map50:.1f} %")
    for col, key in zip(cols[1:], ("tp", "fp", "fn")):
        col.metric(key.upper(), int(classes[key].sum()) if key in classes else 0)
    st.dataframe(classes, hide_index=True, width="stretch",
                 column_config={"ap": st.column_config.NumberColumn("AP", format="%.3f")})


def _pr(result: dict, conf: float) -> None:
    curves = result.get("pr_curve") or {}
    if not curves:
        st.caption("No PR curve: the test set has no ground truth boxes.")
        return
    name = st.selectbox("PR curve of", list(curves), key="pr_class") if len(curves) > 1 else next(iter(curves))
    curve = curves[name]
    point = evalview.threshold_point(curve, conf)
    st.plotly_chart(charts.pr_figure(curve["recall"], curve["precision"], point, title=f"Precision–recall: {name}"),
                    key="pr_chart", width="stretch")
    best = result.get("best_f1_threshold")
    if best is not None:
        st.caption(f"Best F1 at confidence {best:.2f}.")


@st.cache_data(show_spinner=False, max_entries=8)
def _ground_truth(run_dir: str, dataset_dir: str | None, _stamp: int) -> tuple[pd.DataFrame, list[str]]:
    """The test labels (``xyxy_rel``) and the ImageIDs evaluated (cached until the predictions change)."""
    gt, ids, _missing = load_ground_truth(RunDir(Path(run_dir)).split_images("test"),
                                          DatasetDir(Path(dataset_dir)) if dataset_dir else None)
    return gt, ids


def _browser(run_dir: Path, predictions: Path, conf: float, names: dict[int, str], dataset_dir: Path | None) -> None:
    """Worst images first, each with ground truth and predictions coloured by TP / FP / FN."""
    st.subheader("Predictions against ground truth")
    st.caption("Colours: ground truth (matched) sky blue, missed ground truth (FN) yellow, "
               "true positives bluish green, false positives vermillion; each prediction shows its confidence.")
    gt, ids = _ground_truth(str(run_dir), str(dataset_dir) if dataset_dir else None, ui.mtime_ns(predictions))
    det = ui.read_parquet(predictions)
    det = det[det["ImageID"].astype(str).isin(set(ids))]
    which = st.radio("Show", list(evalview.FILTERS), format_func=evalview.FILTERS.get, horizontal=True,
                     key="browse_filter")
    table = evalview.filter_images(metrics.per_image(gt, det, iou=IOU, conf=conf, images=ids), which)
    st.caption(f"{min(len(table), BROWSER_N)} of {len(table)} images, worst (most FP + FN) first.")
    paths = dict(RunDir(run_dir).split_images("test"))
    tiles = []
    for row in table.head(BROWSER_N).itertuples(index=False):
        g, d = metrics.image_box_status(gt, det, row.ImageID, iou=IOU, conf=conf)
        boxes, labels, colors = evalview.tile_boxes(g, d, names)
        caption = f"{row.ImageID} · TP {row.tp} · FP {row.fp} · FN {row.fn}"
        tiles.append((ui.tile(paths.get(row.ImageID), boxes, labels, colors), caption))
    ui.show_grid(tiles)


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
    st.stop()
conf = st.slider("Confidence threshold", 0.0, 1.0, step=0.01, key="conf")
names = dict(enumerate(RunDir(run_dir).class_names()))
result = _evaluation(str(ws.root), run_id, str(weights), backend, float(conf), ui.mtime_ns(predictions))
_summary(result)
_pr(result, float(conf))
_browser(run_dir, predictions, float(conf), names, _dataset_dir(run_dir))
