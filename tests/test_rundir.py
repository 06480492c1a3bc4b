"""Run directories: every path relative to the run dir, the data symlink, run.json."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from darknet_runner import rundir
from darknet_runner.binary import ALEXEYAB, HANK, PJREDDIE, DarknetInfo
from pipeline.cli import UserError
from pipeline.workspace import Workspace
from tests.support.runs import PJ_INFO, make_run, make_split_dataset

AB_INFO = DarknetInfo("/opt/ab/darknet", ALEXEYAB, "", True, True, False, False)
HANK_INFO = DarknetInfo("/opt/hank/darknet", HANK, "", True, True, True, True)


def test_missing_dataset_is_one_sentence(tmp_path):
    Workspace(tmp_path).ensure()
    with pytest.raises(UserError, match="there is no dataset 'boat'"):
        make_run(tmp_path)


def test_unsplit_dataset_is_refused(tmp_path):
    dataset = make_split_dataset(tmp_path)
    (dataset / "splits" / "train.txt").unlink()
    with pytest.raises(UserError, match="no training images in splits/train.txt"):
        make_run(tmp_path)
    assert not (tmp_path / "runs" / "r1").exists()


def test_list_line_outside_yolo_is_refused(tmp_path):
    dataset = make_split_dataset(tmp_path)
    (dataset / "splits" / "valid.txt").write_text("originals/abc.jpg\n")
    with pytest.raises(UserError, match="line 1 of .*valid.txt is 'originals/abc.jpg'"):
        make_run(tmp_path)


def test_files_are_relative_to_the_run_dir(tmp_path):
    dataset = make_split_dataset(tmp_path, train=3, valid=2, test=1)
    run_dir = make_run(tmp_path)
    assert run_dir == tmp_path / "runs" / "r1"
    assert (run_dir / "obj.data").read_text() == (
        "classes=1\ntrain=train.txt\nvalid=valid.txt\nnames=obj.names\nbackup=backup\n")
    assert (run_dir / "obj.names").read_text() == "Boat\n"
    for split in ("train", "valid", "test"):
        source = (dataset / "splits" / f"{split}.txt").read_text().splitlines()
        written = (run_dir / f"{split}.txt").read_text().splitlines()
        assert written == [line.replace("yolo/", "data/", 1) for line in source]
        assert all((run_dir / line).is_file() for line in written)
    link = run_dir / "data"
    assert link.is_symlink() and os.readlink(link) == "../../datasets/boat/yolo"
    assert (run_dir / "backup").is_dir()
    cfg_text = (run_dir / "model.cfg").read_text()
    assert "max_batches=40\n" in cfg_text and "steps=32,36\n" in cfg_text and "width=128\n" in cfg_text


def test_run_json_records_what_reproduces_the_run(tmp_path):
    dataset = make_split_dataset(tmp_path, seed=7)
    run_dir = make_run(tmp_path)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["dataset"]["slug"] == "boat"
    assert run["dataset"]["manifest_sha256"] == hashlib.sha256((dataset / "dataset.json").read_bytes()).hexdigest()
    assert run["dataset"]["split_seed"] == 7
    assert run["dataset"]["counts"] == {"train": 8, "valid": 4}
    assert (run["model"], run["size"], run["batch"], run["subdivisions"]) == ("yolov3-tiny", 128, 4, 1)
    assert (run["max_batches"], run["burn_in"], run["classes"]) == (40, 4, ["Boat"])
    assert run["cfg_sha256"] == hashlib.sha256((run_dir / "model.cfg").read_bytes()).hexdigest()
    assert run["fork"] == PJREDDIE and run["darknet"]["path"] == "/usr/bin/darknet"
    assert run["command"][-5:] == ["/usr/bin/darknet", "detector", "train", "obj.data", "model.cfg"]
    assert run["status"] == "not-started" and run["started"] is None and run["pretrained"] is None


def test_missing_valid_split_reuses_train(tmp_path):
    make_split_dataset(tmp_path, valid=0)
    run_dir = make_run(tmp_path)
    assert (run_dir / "valid.txt").read_text() == (run_dir / "train.txt").read_text()
    assert not (run_dir / "test.txt").exists()


def test_existing_run_id_is_not_overwritten(tmp_path):
    make_split_dataset(tmp_path)
    make_run(tmp_path)
    with pytest.raises(UserError, match=r"^run r1 already exists: pick another --run-id$"):
        make_run(tmp_path)


def test_pretrained_name_links_the_workspace_weights(tmp_path):
    make_split_dataset(tmp_path)
    run_dir = make_run(tmp_path, pretrained="yolov3-tiny.conv.11")
    link = run_dir / "pretrained" / "yolov3-tiny.conv.11"
    assert os.readlink(link) == "../../../weights/yolov3-tiny.conv.11"
    run = rundir.RunDir(run_dir).load()
    assert run["weights_arg"] == "pretrained/yolov3-tiny.conv.11"
    assert run["command"][-1] == "pretrained/yolov3-tiny.conv.11"


def test_default_max_batches_follows_the_rule(tmp_path):
    make_split_dataset(tmp_path, classes=("Boat", "Canoe", "Barge", "Gondola"))
    run_dir = make_run(tmp_path, max_batches=None)
    assert rundir.RunDir(run_dir).load()["max_batches"] == 8000
    assert (run_dir / "obj.names").read_text() == "Boat\nCanoe\nBarge\nGondola\n"


def test_train_command_adapts_to_the_fork():
    assert rundir.train_command(PJ_INFO, None, use_map=True)[-5:] == [
        "/usr/bin/darknet", "detector", "train", "obj.data", "model.cfg"]
    ab = rundir.train_command(AB_INFO, "pretrained/x", gpus="0,1", use_map=True)
    assert ab[ab.index("/opt/ab/darknet"):] == ["/opt/ab/darknet", "detector", "train", "obj.data", "model.cfg",
                                                "pretrained/x", "-dont_show", "-map", "-gpus", "0,1"]
    hank = rundir.train_command(HANK_INFO)
    assert hank[hank.index("/opt/hank/darknet"):] == ["/opt/hank/darknet", "detector", "train", "obj.data",
                                                      "model.cfg", "-dont_show", "-nocolour"]
    assert hank[:3] == ["/usr/bin/stdbuf", "-oL", "-eL"]


def test_update_run_is_read_modify_write(tmp_path):
    make_split_dataset(tmp_path)
    run_dir = make_run(tmp_path)
    rundir.RunDir(run_dir).update(status="running", started="t0")
    run = rundir.RunDir(run_dir).load()
    assert (run["status"], run["started"], run["model"]) == ("running", "t0", "yolov3-tiny")


def test_resolve_run_by_id_or_folder(tmp_path):
    make_split_dataset(tmp_path)
    run_dir = make_run(tmp_path)
    ws = Workspace(tmp_path)
    assert rundir.open_run(ws, "r1").path == run_dir
    assert rundir.open_run(ws, str(run_dir)).path == run_dir.resolve()
    with pytest.raises(UserError, match="no run 'nope'"):
        rundir.open_run(ws, "nope").path


def test_anchors_from_the_health_step(tmp_path):
    from pipeline.yolo.anchors import cfg_anchors

    make_split_dataset(tmp_path)
    anchors = np.array([[6.4, 7.5], [12, 20], [30, 28], [50, 61], [70, 90], [110, 100]])
    run_dir = make_run(tmp_path, anchors=anchors)
    assert rundir.RunDir(run_dir).load()["anchors"] == anchors.tolist()
    assert (run_dir / "model.cfg").read_text().count(f"anchors={cfg_anchors(anchors)}\n") == 2


# --- RunDir: the one owner of a run folder's paths and run.json ------------------------------------

def test_a_folder_without_run_json_is_not_a_run(tmp_path):
    run = rundir.RunDir(tmp_path / "r")
    assert not run.exists()
    with pytest.raises(UserError, match="is not a run directory \\(no run.json\\)"):
        run.load()
    with pytest.raises(UserError, match="no run 'r'"):
        rundir.open_run(Workspace(tmp_path).ensure(), "r")
    with pytest.raises(UserError, match="no run '../r'"):
        rundir.open_run(Workspace(tmp_path), "../r")


def test_run_dir_paths_manifest_and_names(tmp_path):
    make_split_dataset(tmp_path)
    run = rundir.RunDir(make_run(tmp_path))
    assert (run.cfg.name, run.obj_data.name, run.backup.name, run.metrics.name) == \
        ("model.cfg", "obj.data", "backup", "metrics.json")
    assert run.class_names() == ["Boat"] == run.load()["classes"]
    run.update(status="running")
    assert json.loads(run.manifest_path.read_text())["status"] == "running"
    assert run.list_path("valid") == run.path / "valid.txt"
    with pytest.raises(UserError, match="unknown split 'validation'"):
        run.list_path("validation")
    images = run.split_images("train")
    assert images and all(path == run.path / "data" / f"{image_id}.jpg" for image_id, path in images)
    assert run.predictions_path(run.backup / "model_100.weights", "darknet", "test") == \
        run.path / "predictions" / "model_100.parquet"
    ws = Workspace(tmp_path)
    assert run.dataset(ws).path == ws.dataset("boat").path
    assert rundir.open_run(ws, run.id) == run and rundir.open_run(ws, str(run.path)).path == run.path.resolve()
