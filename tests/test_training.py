"""Real training with Debian's darknet (pjreddie fork, CPU): detached launch, live log, stop, resume, failures.

yolov3-tiny at 128×128, random=0, batch 4, subdivisions 1: about 0.7–1.5 s per iteration on two
shared cores, so the whole file trains ~30 iterations.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from darknet_runner import jobs, process, rundir
from darknet_runner.logs import LogFollower
from darknet_runner.preflight import PreflightFailed
from darknet_runner.weights import iteration_for, read_header
from pipeline.workspace import Workspace
from tests.support.runs import wait_state, make_split_dataset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
TRAIN = ["--preset", "custom", "--model", "yolov3-tiny", "--size", "128", "--batch", "4", "--subdivisions", "1", "--random", "0"]


def _cli(ws: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "darknet_runner", "--workspace", str(ws), *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _iterations_in(text: str) -> list[int]:
    return [int(line.split(":")[0]) for line in text.splitlines() if line[:1].isdigit() and ": " in line
            and " avg, " in line]


def _run(ws: Path, run_id: str, max_batches: int, darknet_bin: str) -> Path:
    return rundir.create_run(Workspace(ws), "boat", model="yolov3-tiny", size=128, batch=4, subdivisions=1,
                             max_batches=max_batches, pretrained=None, darknet=darknet_bin, random=0, run_id=run_id)


def test_strawberry_in_an_openimages_path_with_a_space_trains_detached_and_resumes(tmp_path, darknet_bin):
    ws = tmp_path / "openimages data" / "my workspace"
    make_split_dataset(ws, "strawberry", train=16, valid=4)
    launched = _cli(ws, "train", "--dataset", "strawberry", *TRAIN, "--max-batches", "12", "--run-id", "straw",
                    "--detach")
    assert launched.returncode == 0, launched.stderr  # the launching process has exited
    run_dir = ws / "runs" / "straw"
    follower, seen = LogFollower(run_dir / "train_log.txt"), []
    deadline = time.monotonic() + 120
    while jobs.status(run_dir).state == "running" and time.monotonic() < deadline:
        follower.refresh()
        if follower.log.last_iteration is not None and follower.log.last_iteration not in seen:
            seen.append(follower.log.last_iteration)
        time.sleep(0.3)
    assert len(seen) >= 3 and seen == sorted(seen), seen  # the count grew across reads while it ran
    final = jobs.status(run_dir)
    assert (final.state, final.exit_code, final.iteration, final.reason) == ("finished", 0, 12, None)
    weights = run_dir / "backup" / "model_final.weights"
    assert iteration_for(read_header(weights), 4, 1) == 12
    # OpenCV reads the generated cfg with the weights darknet wrote
    net = cv2.dnn.readNetFromDarknet(str(run_dir / "model.cfg"), str(weights))
    image = cv2.imread(str(next((run_dir / "data").glob("*.jpg"))))
    net.setInput(cv2.dnn.blobFromImage(image, 1 / 255, (128, 128), swapRB=True, crop=False))
    outputs = net.forward(net.getUnconnectedOutLayersNames())
    assert sorted(o.shape for o in outputs) == [(48, 6), (192, 6)]  # 4x4 and 8x8 grids x 3 anchors, 4+1+1
    # resume continues from the saved iteration
    resumed = _cli(ws, "resume", "straw", "--max-batches", "16", "--detach")
    assert resumed.returncode == 0, resumed.stderr
    final = wait_state(run_dir, "finished", "failed", timeout=120, poll=0.2)
    assert (final.state, final.iteration) == ("finished", 16)
    offset = rundir.RunDir(run_dir).load()["segments"][-1]["log_offset"]
    assert _iterations_in((run_dir / "train_log.txt").read_bytes()[offset:].decode(errors="replace")) == [
        13, 14, 15, 16]
    assert iteration_for(read_header(weights), 4, 1) == 16


def test_stop_leaves_no_process(tmp_path, darknet_bin):
    make_split_dataset(tmp_path, "boat", train=8, valid=2)
    run_dir = _run(tmp_path, "long", 500, darknet_bin)
    pid = jobs.start(run_dir).pid
    follower = LogFollower(run_dir / "train_log.txt")
    deadline = time.monotonic() + 60
    while (follower.log.last_iteration or 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        follower.refresh()
    assert jobs.status(run_dir).state == "running"
    final = jobs.stop(run_dir, timeout=10)
    assert final.state == "stopped" and final.iteration >= 2
    assert process.group_members(pid) == []
    cwd_users = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd") == str(run_dir):
                cwd_users.append(proc.name)
        except OSError:
            continue
    assert cwd_users == []


def test_filters_mismatch_fails_with_the_reason_from_the_log(tmp_path, darknet_bin):
    make_split_dataset(tmp_path, "boat", train=4, valid=1)
    run_dir = _run(tmp_path, "broken", 10, darknet_bin)
    cfg = run_dir / "model.cfg"
    cfg.write_text(cfg.read_text().replace("filters=18", "filters=255", 1))
    with pytest.raises(PreflightFailed, match="filters=255 but classes=1 with 3 masks needs filters=18"):
        jobs.start(run_dir)
    jobs.start(run_dir, skip_preflight=True)
    final = wait_state(run_dir, "finished", "failed", timeout=60, poll=0.2)
    assert (final.state, final.exit_code) == ("failed", -6)  # SIGABRT from the assertion (rc 134 in a shell)
    assert "filters" in final.reason and "[yolo]" in final.reason


def test_exit_zero_after_a_missing_list_is_failed(tmp_path, darknet_bin):
    make_split_dataset(tmp_path, "boat", train=4, valid=1)
    run_dir = _run(tmp_path, "nolist", 10, darknet_bin)
    (run_dir / "train.txt").unlink()
    jobs.start(run_dir, skip_preflight=True)
    final = wait_state(run_dir, "finished", "failed", timeout=60, poll=0.2)
    assert (final.state, final.exit_code) == ("failed", 0)  # pjreddie exits 0 after Couldn't open file
    assert "train.txt" in final.reason


def test_the_demo_dataset_prepared_by_the_pipeline_trains(demo_copy, darknet_bin):
    from pipeline.openimages import build
    from pipeline.images import fetch
    from pipeline.yolo import prepare, split

    ws = Workspace(demo_copy)
    build.build_dataset(ws, ["Boat"])
    fetch.fetch_images(ws, "boat", str(demo_copy / "demo" / "originals"), workers=2)
    prepare.prepare_dataset(ws, "boat", size=128, workers=1)
    split.split_dataset(ws, "boat", seed=3)
    run_dir = _run(demo_copy, "demo", 6, darknet_bin)
    assert rundir.RunDir(run_dir).load()["dataset"]["split_seed"] == 3
    assert jobs.start(run_dir).state == "running"  # start() refuses unless preflight is clean
    final = wait_state(run_dir, "finished", "failed", timeout=120, poll=0.2)
    assert (final.state, final.iteration, final.reason) == ("finished", 6, None)
