"""darknet_runner.evaluate and pipeline.evaluation.groundtruth: ground truth from a run's written labels
(+ IsGroupOf from boxes.parquet), predictions parquet → metrics.json, and the CLI. The run is written by
hand (no darknet)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from darknet_runner import evaluate
from darknet_runner.rundir import RunDir
from pipeline import cli
from pipeline.evaluation.groundtruth import labels_frame, load_ground_truth
from pipeline.yolo.labels import read_labels
from pipeline.cli import UserError
from pipeline.atomic import write_json
from pipeline.workspace import Workspace

A, B, C, D = "00000000000000aa", "00000000000000bb", "00000000000000cc", "00000000000000dd"
LABELS = {
    A: "0 0.250000 0.250000 0.500000 0.500000\n",                                    # boat
    B: "0 0.750000 0.750000 0.500000 0.500000\n1 0.250000 0.250000 0.200000 0.200000\n",  # boat group, canoe
    C: "",                                                                           # no objects
}  # D has no label file at all
BOXES = pd.DataFrame({  # boxes.parquet rows (xyxy_rel of the original; stretch keeps them)
    "ImageID": [A, B, B], "ClassIndex": np.array([0, 0, 1], np.int16),
    "XMin": np.array([0.0, 0.5, 0.15], np.float32), "XMax": np.array([0.5, 1.0, 0.35], np.float32),
    "YMin": np.array([0.0, 0.5, 0.15], np.float32), "YMax": np.array([0.5, 1.0, 0.35], np.float32),
    "IsGroupOf": np.array([0, 1, -1], np.int8),
})
DETS = pd.DataFrame({
    "ImageID": [A, B, B, B, C, D],
    "ClassIndex": np.array([0, 0, 0, 1, 0, 0], np.int16),
    "Confidence": np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.95], np.float32),
    "XMin": np.array([0.0, 0.6, 0.8, 0.15, 0.1, 0.0], np.float32),
    "YMin": np.array([0.0, 0.6, 0.8, 0.15, 0.1, 0.0], np.float32),
    "XMax": np.array([0.5, 0.7, 0.9, 0.35, 0.2, 1.0], np.float32),
    "YMax": np.array([0.5, 0.7, 0.9, 0.35, 0.2, 1.0], np.float32),
})


@pytest.fixture
def ws(tmp_path) -> Workspace:
    workspace = Workspace.open(tmp_path / "ws")
    dataset = workspace.dataset_dir("boats")
    (dataset / "yolo").mkdir(parents=True)
    for image_id, text in LABELS.items():
        (dataset / "yolo" / f"{image_id}.txt").write_text(text)
    for image_id in (A, B, C, D):
        Image.new("RGB", (100, 50)).save(dataset / "yolo" / f"{image_id}.jpg")
    BOXES.to_parquet(dataset / "boxes.parquet")
    write_json(dataset / "dataset.json", {"slug": "boats", "classes": []})
    run = workspace.run_dir("r1")
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "model_final.weights").write_bytes(struct.pack("<3iQ", 0, 2, 0, 0))  # no cfg: header only
    os.symlink("../../datasets/boats/yolo", run / "data")
    (run / "test.txt").write_text("".join(f"data/{i}.jpg\n" for i in (A, B, C, D)))
    (run / "obj.names").write_text("boat\ncanoe\n")
    write_json(run / "run.json", {"id": "r1", "dataset": {"slug": "boats", "path": str(dataset)},
                                  "classes": ["boat", "canoe"], "fork": "pjreddie"})
    (run / "predictions").mkdir()
    DETS.to_parquet(run / "predictions" / "model_final.parquet")
    return workspace


def test_labels_frame_empty_and_stops_at_a_bad_line(tmp_path):
    (tmp_path / "e.txt").write_text("")
    assert labels_frame(read_labels(tmp_path / "e.txt"), "e").empty
    (tmp_path / "x.txt").write_text("1 0.5 0.5 0.2 0.4\nnot a box\n0 0.1 0.1 0.1 0.1\n")
    table = labels_frame(read_labels(tmp_path / "x.txt"), "x")
    assert table.to_dict("records") == [{"ImageID": "x", "ClassIndex": 1, "XMin": pytest.approx(0.4),
                                         "YMin": pytest.approx(0.3), "XMax": pytest.approx(0.6),
                                         "YMax": pytest.approx(0.7), "IsGroupOf": -1}]


def test_ground_truth_from_labels_with_group_of_aligned(ws):
    images = RunDir(ws.run_dir("r1")).split_images("test")
    gt, kept, missing = load_ground_truth(images, ws.dataset("boats"))
    assert (kept, missing) == ([A, B, C], [D])
    assert gt[["ImageID", "ClassIndex", "IsGroupOf"]].values.tolist() == [[A, 0, 0], [B, 0, 1], [B, 1, -1]]
    assert gt.loc[1, ["XMin", "YMin", "XMax", "YMax"]].tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])
    # without boxes.parquet every flag is unknown
    gt, _, _ = load_ground_truth(images, None)
    assert gt["IsGroupOf"].tolist() == [-1, -1, -1]


def test_evaluate_run_voc_treats_group_of_as_a_box(ws):
    result = evaluate.evaluate_run(ws, "r1", weights="final", method="voc", conf=0.55)
    boat, canoe = result["classes"]
    # boat: A exact (TP .9), B's two small boxes inside the group box are FPs (.8, .7), C's is FP (.5);
    # D has no label file, so its detection is not scored. 2 boat boxes: precision 1 at recall 1/2.
    assert boat == {"name": "boat", "ap": 0.5, "tp": 1, "fp": 2, "fn": 1, "precision": pytest.approx(1 / 3),
                    "recall": 0.5, "f1": pytest.approx(0.4), "avg_iou": pytest.approx(1 / 3)}
    assert canoe["ap"] == 1.0 and (canoe["tp"], canoe["fp"], canoe["fn"]) == (1, 0, 0)
    assert result["map50"] == 0.75
    assert (result["images"], result["missing_labels"], result["split"]) == (3, 1, "test")
    assert result["predictions"] == "predictions/model_final.parquet"
    written = json.loads((ws.run_dir("r1") / "metrics.json").read_text())
    assert written["map50"] == 0.75 and written["classes"][0]["name"] == "boat"


def test_evaluate_run_open_images_counts_the_group_once(ws):
    result = evaluate.evaluate_run(ws, "r1", weights="final", method="openimages", conf=0.55)
    boat = result["classes"][0]
    # boat: TP .9 (A), TP .8 (B's group), .7 ignored, FP .5 (C) → AP 1 over 2 boxes
    assert (boat["ap"], boat["tp"], boat["fp"], boat["fn"]) == (1.0, 2, 0, 0)
    assert result["map50"] == 1.0


def test_missing_predictions_and_unknown_runs_are_user_errors(ws):
    (ws.run_dir("r1") / "predictions" / "model_final.parquet").unlink()
    with pytest.raises(UserError, match="no predictions at .*model_final.parquet; run `python -m darknet_runner pre"):
        evaluate.evaluate_run(ws, "r1", weights="final", predict_missing=False)
    with pytest.raises(UserError, match="no run 'nope'"):
        evaluate.evaluate_run(ws, "nope")
    with pytest.raises(UserError, match="no predictions file other.parquet"):
        evaluate.evaluate_run(ws, "r1", weights="other.parquet")


def test_cli_json_and_table(ws, capsys):
    argv = ["--workspace", str(ws.root), "evaluate", "--run", "r1", "--weights", "final", "--conf", "0.55"]
    assert cli.main("python -m darknet_runner", "", ["darknet_runner.evaluate"], argv + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result)[:6] == ["method", "iou", "map50", "classes", "pr_curve", "best_f1_threshold"]
    assert result["map50"] == 0.75
    out = ws.root / "export"
    assert cli.main("python -m darknet_runner", "", ["darknet_runner.evaluate"],
                    argv + ["--method", "openimages", "--export", str(out)]) == 0
    assert "mAP@0.50 = 100.00 %" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["detections_coco.json", "detections_yolo",
                                                      "ground_truth_coco.json"]
    assert cli.main("python -m darknet_runner", "", ["darknet_runner.evaluate"],
                    ["--workspace", str(ws.root), "evaluate", "--run", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("letterbox", [False, True])
def test_group_of_flags_align_through_a_real_prepare(tmp_path, letterbox):
    from pipeline.yolo.prepare import prepare_dataset
    from tests.support.datasets import jpeg_bytes, make_dataset, noise

    images = [{"id": "0a", "data": jpeg_bytes(noise(100, 200)), "boxes": [(0, .1, .1, .4, .5), (0, .5, .2, .9, .9)]},
              {"id": "0b", "data": jpeg_bytes(noise(160, 120, 1)), "boxes": [(0, .2, .2, .6, .6)]}]
    ws = make_dataset(tmp_path / "ws", images)
    folder = ws.dataset_dir("boat")
    boxes = pd.read_parquet(folder / "boxes.parquet")
    boxes.assign(IsGroupOf=np.array([0, 1, -1], np.int8)).to_parquet(folder / "boxes.parquet", index=False)
    prepare_dataset(ws, "boat", size=64, letterbox=letterbox, workers=1)
    run = ws.run_dir("r")
    run.mkdir(parents=True)
    os.symlink("../../datasets/boat/yolo", run / "data")
    (run / "test.txt").write_text("data/0a.jpg\ndata/0b.jpg\n")
    gt, kept, missing = load_ground_truth(RunDir(run).split_images("test"), ws.dataset("boat"))
    assert (kept, missing) == (["0a", "0b"], [])
    assert gt["IsGroupOf"].tolist() == [0, 1, -1]
    if letterbox:  # the labels moved: a 200×100 picture fills rows 16..48 of the 64×64 canvas
        assert gt.loc[0, ["YMin", "YMax"]].tolist() == pytest.approx([0.25 + 0.1 / 2, 0.25 + 0.5 / 2], abs=1e-3)


def test_export_run_for_pycocotools_and_yolo(ws, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    written = evaluate.export_run(ws, "r1", tmp_path / "out", weights="final", conf=0.55)
    gt_json = json.loads(written["ground_truth_coco"].read_text())
    assert [a["bbox"] for a in gt_json["annotations"]] == [[0.0, 0.0, 50.0, 25.0], [50.0, 25.0, 50.0, 25.0],
                                                          [15.0, 7.5, 20.0, 10.0]]
    assert [a["iscrowd"] for a in gt_json["annotations"]] == [0, 1, 0]  # B's group-of boat box
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(written["ground_truth_coco"]))
        ev = COCOeval(coco, coco.loadRes(str(written["detections_coco"])), "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    # boat: A's TP; B's detections fall in a crowd box and are ignored by pycocotools → AP 1; canoe: AP 1
    assert ev.eval["precision"][0, :, :, 0, -1].mean(axis=0).tolist() == pytest.approx([1.0, 1.0])
    yolo = written["detections_yolo"]
    assert sorted(p.name for p in yolo.iterdir()) == [f"{A}.txt", f"{B}.txt", f"{C}.txt"]  # D: no label
    assert (yolo / f"{A}.txt").read_text() == "0 0.250000 0.250000 0.500000 0.500000 0.900000\n"
    assert (yolo / f"{C}.txt").read_text() == ""  # its one detection is below conf 0.55
