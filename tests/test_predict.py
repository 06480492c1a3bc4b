"""darknet_runner.predict: a real Debian darknet trains a tiny yolov3-tiny once (module fixture);
both backends predict the test split, same schema, and their top detections agree."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from darknet_runner import cfg as cfgmod
from darknet_runner import predict, rundir
from pipeline.evaluation import metrics
from pipeline.boxes import iou_xyxy
from pipeline.cli import UserError
from pipeline.atomic import write_json
from pipeline.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent
SIZES = [(160, 120), (200, 150), (120, 160), (128, 96)]  # not square: letterbox vs stretch matters
TRAIN_IMAGES, TEST_IMAGES = 24, 8
ITERATIONS = 20


def synthetic_image(rng, width: int, height: int) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """White rectangles on blue; returns the BGR image and its boxes as cxcywh_rel."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (200, 60, 20)
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        w, h = int(rng.integers(width // 4, width // 2)), int(rng.integers(height // 4, height // 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        image[y:y + h, x:x + w] = 255
        boxes.append(((x + w / 2) / width, (y + h / 2) / height, w / width, h / height))
    return image, boxes


def make_dataset(ws: Workspace, slug: str = "boxes", seed: int = 0) -> Path:
    """A prepared, split one-class dataset written by hand (yolo/ + splits/ + dataset.json)."""
    rng = np.random.default_rng(seed)
    folder = ws.dataset_dir(slug)
    (folder / "yolo").mkdir(parents=True)
    (folder / "splits").mkdir()
    ids = [f"{i:016x}" for i in range(1, TRAIN_IMAGES + TEST_IMAGES + 1)]
    for n, image_id in enumerate(ids):
        image, boxes = synthetic_image(rng, *SIZES[n % len(SIZES)])
        cv2.imwrite(str(folder / "yolo" / f"{image_id}.jpg"), image)
        (folder / "yolo" / f"{image_id}.txt").write_text("".join(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n"
                                                                 for cx, cy, w, h in boxes))
    lists = {"train": ids[:TRAIN_IMAGES], "valid": ids[TRAIN_IMAGES:], "test": ids[TRAIN_IMAGES:]}
    for split, members in lists.items():
        (folder / "splits" / f"{split}.txt").write_text("".join(f"yolo/{i}.jpg\n" for i in members))
    write_json(folder / "dataset.json", {"name": "boxes", "slug": slug,
                                         "classes": [{"index": 0, "mid": "/m/box", "name": "box", "members": []}]})
    return folder


def without_batch_norm(run_dir: Path) -> None:
    """Drop ``batch_normalize`` from the run's cfg. darknet's rolling BN statistics start at 0 and
    move 1% per iteration, so after a few dozen iterations inference saturates (every objectness
    0, nothing detected); without BN, a 20-iteration network detects plenty at a low threshold."""
    sections = cfgmod.read_cfg((run_dir / "model.cfg").read_text())
    for section in sections:
        section.options.pop("batch_normalize", None)
    (run_dir / "model.cfg").write_text(cfgmod.write_cfg(sections))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, darknet_bin) -> Path:
    """One real training (Debian darknet, yolov3-tiny 128×128, batch 4, 20 iterations) per module."""
    ws = Workspace.open(tmp_path_factory.mktemp("predict") / "ws")
    make_dataset(ws)
    run_dir = rundir.create_run(ws, "boxes", model="yolov3-tiny", size=128, batch=4, subdivisions=1,
                                max_batches=ITERATIONS, pretrained=None, darknet=darknet_bin, random=0,
                                learning_rate=0.0001, run_id="tiny")  # 0.001 without BN goes to NaN
    without_batch_norm(run_dir)
    command = rundir.RunDir(run_dir).load()["command"]
    done = subprocess.run(command, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    (run_dir / "train_log.txt").write_text(done.stdout)
    assert (run_dir / "backup" / "model_final.weights").is_file(), done.stdout[-2000:]
    return run_dir


# --- pure parts (no darknet) ------------------------------------------------------------------

def test_letterbox_geometry_is_darknets_integer_maths():
    assert predict.letterbox_geometry(200, 150, 128, 128) == (128, 96, 0, 16)
    assert predict.letterbox_geometry(120, 160, 128, 128) == (96, 128, 16, 0)
    assert predict.letterbox_geometry(128, 128, 128, 128) == (128, 128, 0, 0)


def test_undo_letterbox_maps_the_content_back_to_the_image():
    # content of a 200×150 image fills rows 16..112 of 128: its top edge is at y = 16/128
    network = np.array([[0.5, 16 / 128 + 0.25 * 96 / 128, 0.5, 96 / 128 * 0.5]])
    back = predict.undo_letterbox(network, 200, 150, 128, 128)
    assert back[0].tolist() == pytest.approx([0.5, 0.25, 0.5, 0.5])


def test_darknet_resize_keeps_corners_and_interpolates_linearly():
    image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)  # rows 0..2, columns 0..3
    out = predict.darknet_resize(image, 7, 5)
    assert out.shape == (5, 7, 1)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 3 and out[-1, 0, 0] == 8 and out[-1, -1, 0] == 11
    assert out[2, 3, 0] == pytest.approx(5.5)  # the centre: row 1, column 1.5
    assert predict.darknet_resize(image, 4, 3)[:, :, 0].tolist() == image[:, :, 0].tolist()


def test_read_valid_results_converts_1_based_pixels(tmp_path):
    (tmp_path / "comp4_det_test_box.txt").write_text("val_00 0.518902 111.862885 9.185503 174.592316 55.904694\n")
    (tmp_path / "comp4_det_test_cat.txt").write_text("")
    table = predict.read_valid_results(tmp_path, ["box", "cat"], {"val_00": (200, 150)})
    assert table.columns.tolist() == predict.COLUMNS
    row = table.iloc[0]
    assert (row.ImageID, row.ClassIndex) == ("val_00", 0)
    assert [row.XMin, row.YMin, row.XMax, row.YMax] == pytest.approx(
        [110.862885 / 200, 8.185503 / 150, 173.592316 / 200, 54.904694 / 150], abs=1e-6)
    assert predict.read_valid_results(tmp_path, ["cat"], {}).empty


def test_bad_choices_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        predict.predict(tmp_path)
    with pytest.raises(UserError, match="unknown backend"):
        predict.predict(tmp_path, backend="onnx")


# --- with a real training ---------------------------------------------------------------------

def top(table: pd.DataFrame, n: int) -> pd.DataFrame:
    return table.sort_values("Confidence", ascending=False).head(n)


def agreement(ours: pd.DataFrame, theirs: pd.DataFrame, n: int = 40) -> list[bool]:
    """For each of ``ours``' top-n detections: does ``theirs`` have it (same image and class,
    IoU > 0.9 — or the same corners within 1e-3 for a zero-area box on an edge — and confidence
    within 1e-3)?"""
    found = []
    for row in top(ours, n).itertuples():
        other = theirs[(theirs["ImageID"] == row.ImageID) & (theirs["ClassIndex"] == row.ClassIndex)]
        box = np.array([[row.XMin, row.YMin, row.XMax, row.YMax]])
        corners = other[["XMin", "YMin", "XMax", "YMax"]].to_numpy()
        same_box = (iou_xyxy(box, corners)[0] > 0.9) | (np.abs(corners - box).max(axis=1) < 1e-3)
        same_conf = np.abs(other["Confidence"].to_numpy() - row.Confidence) < 1e-3
        found.append(bool((same_box & same_conf).any()))
    return found


@pytest.mark.slow
def test_both_backends_same_schema_and_their_top_detections_agree(trained_run):
    dark = pd.read_parquet(predict.predict(trained_run, weights="final", backend="darknet", conf=0.005))
    path = predict.predict(trained_run, weights="final", backend="opencv", conf=0.005)
    assert path.name == "model_final-opencv.parquet"
    cv = pd.read_parquet(path)
    assert dark.dtypes.to_dict() == cv.dtypes.to_dict()
    assert dark.columns.tolist() == predict.COLUMNS
    assert str(dark["XMin"].dtype) == "float32" and str(dark["ClassIndex"].dtype) == "int16"
    assert len(dark) >= 40 and len(cv) >= 40
    assert set(dark["ImageID"]) == {f"{i:016x}" for i in range(TRAIN_IMAGES + 1, TRAIN_IMAGES + TEST_IMAGES + 1)}
    assert all(agreement(dark, cv)) and all(agreement(cv, dark))
    assert ((dark["XMin"] <= dark["XMax"]) & (dark["XMax"] <= 1) & (dark["XMin"] >= 0)).all()
    info = predict.read_predictions_info(path)
    assert (info["backend"], info["split"], info["images"]) == ("opencv", "test", TEST_IMAGES)


@pytest.mark.slow
def test_stretching_where_darknet_letterboxes_disagrees(trained_run, monkeypatch):
    """The agreement above is not automatic: pjreddie letterboxes, and stretching breaks it."""
    dark = pd.read_parquet(predict.predict(trained_run, weights="final", backend="darknet", conf=0.005))
    monkeypatch.setattr(predict, "_uses_letterbox", lambda run, net: False)
    cv = pd.read_parquet(predict.predict(trained_run, weights="final", backend="opencv", conf=0.005))
    matched = agreement(dark, cv)
    assert sum(matched) < len(matched) / 2


@pytest.mark.slow
def test_cli_predict_then_evaluate_json(trained_run):
    ws_root = trained_run.parent.parent
    env_cmd = [sys.executable, "-m", "darknet_runner", "--workspace", str(ws_root), "predict", "tiny",
               "--weights", "final", "--split", "valid"]
    done = subprocess.run(env_cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == trained_run / "predictions" / "model_final-valid.parquet"
    done = subprocess.run([sys.executable, "-m", "darknet_runner", "--workspace", str(ws_root), "evaluate", "--run", "tiny",
                           "--weights", "final", "--split", "valid", "--json", "--conf", "0.01"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert {"method", "iou", "map50", "classes", "pr_curve", "best_f1_threshold"} <= set(result)
    assert result["images"] == TEST_IMAGES and result["classes"][0]["name"] == "box"
    gt_boxes = sum(len((trained_run / "data" / f"{i:016x}.txt").read_text().splitlines())
                   for i in range(TRAIN_IMAGES + 1, TRAIN_IMAGES + TEST_IMAGES + 1))
    row = result["classes"][0]
    assert row["tp"] + row["fn"] == gt_boxes
    assert json.loads((trained_run / "metrics.json").read_text())["map50"] == result["map50"]
    det = pd.read_parquet(trained_run / "predictions" / "model_final-valid.parquet")
    assert result["map50"] == pytest.approx(metrics.evaluate_detections(
        _labels(trained_run), det, conf=0.01)["map50"])


def _labels(run_dir: Path) -> pd.DataFrame:
    from darknet_runner.rundir import RunDir
    from pipeline.evaluation.groundtruth import load_ground_truth

    return load_ground_truth(RunDir(run_dir).split_images("valid"))[0]


@pytest.mark.slow
def test_missing_weights_are_a_user_error(trained_run):
    with pytest.raises(UserError, match="no weights at"):
        predict.predict(trained_run, weights="backup/nothing.weights")


# --- more pure parts: preprocessing choice, padding, NMS, weights choice ----------------------

def test_preprocessing_follows_the_fork():
    assert predict._uses_letterbox({"fork": "pjreddie"}, {}) is True
    assert predict._uses_letterbox({"fork": "alexeyab"}, {}) is False
    assert predict._uses_letterbox({"fork": "hank-ai"}, {"letter_box": "1"}) is True


def test_network_input_letterbox_pads_with_darknet_grey():
    image = np.full((150, 200, 3), 255, np.uint8)  # white 200×150 → 128×96 content, 16 rows above
    blob = predict.network_input(image, 128, 128, letterbox=True)
    assert blob.shape == (1, 3, 128, 128) and blob.dtype == np.float32
    assert np.all(blob[0, :, :16] == 0.5) and np.all(blob[0, :, 112:] == 0.5)
    assert np.allclose(blob[0, :, 16:112], 1.0)
    assert np.allclose(predict.network_input(image, 128, 128, letterbox=False), 1.0)  # stretched


def test_decode_thresholds_strictly_and_suppresses_per_class():
    rows = np.array([
        # cx,  cy,  w,   h,   obj, class 0, class 1
        [0.5, 0.5, 0.2, 0.2, 0.9, 0.80, 0.00],
        [0.51, 0.5, 0.2, 0.2, 0.9, 0.70, 0.60],  # overlaps the first: suppressed for class 0 only
        [0.1, 0.1, 0.1, 0.1, 0.9, 0.30, 0.00],
        [0.9, 0.9, 0.1, 0.1, 0.2, 0.20, 0.00],   # score == conf: dropped (darknet keeps prob > thresh)
    ], np.float32)
    boxes, classes, scores = predict._decode([rows], conf=0.2, nms=0.45)
    found = sorted(zip(classes.tolist(), np.round(scores, 2).tolist()))
    assert found == [(0, 0.3), (0, 0.8), (1, 0.6)]


def test_resolve_weights_best_falls_back_to_final_then_last(tmp_path):
    import struct

    from darknet_runner.rundir import RunDir

    backup = tmp_path / "backup"
    backup.mkdir()
    write_json(tmp_path / "run.json", {"batch": 4, "subdivisions": 1})
    with pytest.raises(UserError, match="has no best weights"):
        RunDir(tmp_path).resolve_weights("best")
    header = struct.pack("<3iQ", 0, 2, 0, 400) + b"\0" * 8  # 100 iterations of 4 images
    (backup / "model.backup").write_bytes(header)
    assert RunDir(tmp_path).resolve_weights("best") == backup / "model.backup"
    assert RunDir(tmp_path).resolve_weights("last") == backup / "model.backup"
    with pytest.raises(UserError, match="has no final weights"):
        RunDir(tmp_path).resolve_weights("final")
    (backup / "model_final.weights").write_bytes(header)
    assert RunDir(tmp_path).resolve_weights("best") == backup / "model_final.weights"
    (backup / "model_best.weights").write_bytes(header)
    assert RunDir(tmp_path).resolve_weights("best") == backup / "model_best.weights"
    assert RunDir(tmp_path).resolve_weights("backup/model.backup") == backup / "model.backup"
    assert RunDir(tmp_path).predictions_path(backup / "model_best.weights", "opencv", "valid") == \
        tmp_path / "predictions" / "model_best-valid-opencv.parquet"


@pytest.mark.parametrize("name, rows, floor", [
    ("alexeyab_valid_comp4_det_test_box.txt", 105, 0.001),
    ("hankai_valid_comp4_det_test_box.txt", 84, 0.001),
    ("pjreddie_debian_valid_comp4_det_test_box_abweights.txt", 133, 0.005),
])
def test_read_valid_results_of_every_fork(tmp_path, name, rows, floor):
    """Real ``detector valid`` outputs (facts §13): the same format in all three forks."""
    source = REPO / "tests" / "fixtures" / "darknet" / name
    (tmp_path / "comp4_det_test_box.txt").write_bytes(source.read_bytes())
    sizes = {f"val_{i:02d}": (200, 200) for i in range(8)}  # corners are clipped to the image: ≤ 200 here
    table = predict.read_valid_results(tmp_path, ["box"], sizes)
    assert len(table) == rows and set(table["ImageID"]) == set(sizes)
    assert table["Confidence"].min() >= floor
    assert ((table[["XMin", "YMin", "XMax", "YMax"]] >= 0) & (table[["XMin", "YMin", "XMax", "YMax"]] <= 1)).all().all()


@pytest.mark.slow
def test_darknet_failure_is_reported_and_leaves_nothing_behind(trained_run, tmp_path):
    import shutil

    ws_copy = tmp_path / "ws"
    shutil.copytree(trained_run.parent.parent, ws_copy, symlinks=True)
    run = ws_copy / "runs" / "tiny"
    (run / "test.txt").write_text("data/0000000000000019.jpg\ndata/nothere.jpg\n")
    before = sorted(p.name for p in run.rglob("*") if p.is_file())
    # pjreddie prints `Cannot load image` and exits 0, or its loader thread crashes first (SIGSEGV)
    with pytest.raises(RuntimeError, match=r"darknet detector valid failed \((exit code 0\): Cannot load|killed by)"):
        predict.predict(run, weights="final", backend="darknet")
    # no temp .data, results, parquet; no core file of a crash; no bad.list (pjreddie's loader writes it from a
    # shell it starts, which may finish after darknet crashed in another thread)
    assert sorted(p.name for p in run.rglob("*") if p.is_file()) == before
    (run / "bad.list").write_text("data/older.jpg\n")  # one the user had: kept as it was
    with pytest.raises(RuntimeError, match=r"darknet detector valid failed"):
        predict.predict(run, weights="final", backend="darknet")
    assert (run / "bad.list").read_text() == "data/older.jpg\n"
