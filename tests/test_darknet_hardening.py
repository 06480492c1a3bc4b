"""The darknet side of the hardening issue, through the real parts: Debian's darknet (pjreddie, CPU)
training into a 20 MB tmpfs until the disk is full, images deleted while it trains, a misspelt cfg
layer, stops at any moment; the weights size the cfg implies against files darknet itself wrote.

Each test checks the one-sentence message and that nothing was lost or corrupted (dataset files,
lists, cfg, run.json agreeing with the files). yolov3-tiny at 128×128, batch 4: about 1.5 s per
iteration on two shared cores.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from darknet_runner import jobs, logs, process, rundir, runstate
from darknet_runner.rundir import RunDir
from darknet_runner.weights import WeightsError
from dashboard import evalview
from pipeline.cli import UserError
from pipeline.workspace import Workspace
from tests.support.runs import make_split_dataset, wait_state
from tests.support.tools import needs

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
TINY_1_CLASS_BYTES = 34_704_996  # yolov3-tiny.weights (35,434,956) with 18-filter detection convs


def _run(ws: Path, run_id: str, max_batches: int, darknet_bin: str, slug: str = "boat") -> Path:
    return rundir.create_run(Workspace(ws), slug, model="yolov3-tiny", size=128, batch=4, subdivisions=1,
                             max_batches=max_batches, pretrained=None, darknet=darknet_bin, random=0, run_id=run_id)


def _cli(ws: Path, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "darknet_runner", "--workspace", str(ws), *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (not following links) → its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _wait_iteration(run_dir: Path, at_least: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = jobs.status(run_dir)
        if (current.iteration or 0) >= at_least:
            return current.iteration
        assert current.state in ("running", "not-started"), current
        time.sleep(0.1)
    raise AssertionError(f"no iteration {at_least} within {timeout} s: {jobs.status(run_dir)}")


def _agrees_with_the_files(run_dir: Path) -> dict:
    """run.json is whole JSON and says what the exit_code file says."""
    run = json.loads((run_dir / "run.json").read_text())
    code = (run_dir / "exit_code").read_text().strip() if (run_dir / "exit_code").exists() else None
    assert run["exit_code"] == (int(code) if code is not None else None), (run, code)
    return run


# --- the weights size the cfg implies ----------------------------------------------------------------

@pytest.mark.parametrize("classes", [("Boat",), ("Boat", "Canoe", "Barge")])
def test_weights_size_from_the_cfg_is_what_darknet_writes(tmp_path, darknet_bin, classes):
    make_split_dataset(tmp_path, "boat", train=4, valid=1, test=1, classes=classes)
    run_dir = _run(tmp_path, "size", 1, darknet_bin)
    done = subprocess.run(RunDir(run_dir).load()["command"], cwd=run_dir, stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=300)
    final = run_dir / "backup" / "model_final.weights"
    assert final.is_file(), done.stdout[-2000:]
    floats = RunDir(run_dir).weight_floats()
    assert final.stat().st_size == 20 + 4 * floats  # header of 0.2.x (seen as uint64) + float32 weights
    if len(classes) == 1:
        assert final.stat().st_size == TINY_1_CLASS_BYTES
    run = RunDir(run_dir)
    assert run.weights_problem(final) is None and run.resolve_weights("final") == final
    assert evalview.list_weights(run_dir) == [final] and evalview.broken_weights(run_dir) == []
    # what a full disk leaves: darknet opened the file and could not write it
    cut = run_dir / "backup" / "model_cut.weights"
    cut.write_bytes(final.read_bytes()[:5_000_000])
    assert run.weights_problem(cut) == (
        f"backup/model_cut.weights is 5,000,000 bytes, not the {final.stat().st_size:,} bytes the cfg implies: "
        f"darknet could not finish writing it (disk full?)")
    longer = run_dir / "backup" / "model_other.weights"
    longer.write_bytes(final.read_bytes() + bytes(4))
    assert run.weights_problem(longer).endswith("the cfg implies: it was saved for another network")
    assert evalview.list_weights(run_dir) == [final]  # neither is offered
    assert len(evalview.broken_weights(run_dir)) == 2


def test_a_0_byte_final_is_refused_by_predict_resume_and_evaluate_in_one_sentence(tmp_path, darknet_bin):
    make_split_dataset(tmp_path, "boat", train=4, valid=1, test=2)
    run_dir = _run(tmp_path, "zero", 1, darknet_bin)
    jobs.start(run_dir)
    assert wait_state(run_dir, "finished", "failed", timeout=120, poll=0.2).state == "finished"
    final = run_dir / "backup" / "model_final.weights"
    assert final.stat().st_size == TINY_1_CLASS_BYTES
    final.write_bytes(b"")  # what darknet left on the full disk of the issue
    before = _digest(run_dir)
    sentence = ("backup/model_final.weights is 0 bytes, not the 34,704,996 bytes the cfg implies: darknet could "
                "not finish writing it (disk full?)")
    for argv in (("predict", "zero", "--weights", "final"), ("predict", "zero"), ("evaluate", "--run", "zero"),
                 ("resume", "zero", "--max-batches", "5", "--detach")):
        done = _cli(tmp_path, *argv)
        assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (2, f"error: {sentence}"
                                                                            + ("; there are no complete weights to "
                                                                               "resume from: free some space, delete "
                                                                               "the broken file and resume again to "
                                                                               "start over" if argv[0] == "resume"
                                                                               else "")), (argv, done.stderr)
        assert "Traceback" not in done.stderr
    after = _digest(run_dir)
    assert {k: v for k, v in after.items() if k not in ("model.cfg", "run.json")} == \
        {k: v for k, v in before.items() if k not in ("model.cfg", "run.json")}  # no predictions, no half files
    assert not (run_dir / "predictions").exists() or not any((run_dir / "predictions").iterdir())
    assert RunDir(run_dir).latest_weights() is None and evalview.list_weights(run_dir) == []
    with pytest.raises(WeightsError, match="^backup/model_final.weights is 0 bytes"):
        RunDir(run_dir).resolve_weights("last")


# --- disk full during training (a real 20 MB tmpfs) ----------------------------------------------------

@pytest.fixture
def small_runs_disk(tmp_path):
    """``<tmp>/ws/runs`` on a 20 MB tmpfs (needs root: under CI=true a skip here fails)."""
    mount = needs("tmpfs")
    runs = tmp_path / "ws" / "runs"
    runs.mkdir(parents=True)
    subprocess.run([mount, "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(runs)], check=True)
    try:
        yield runs
    finally:
        for entry in runs.iterdir():  # no darknet may outlive the test on the mount
            pid = entry / "pid"
            if pid.is_file() and pid.read_text().strip().isdigit() and process.is_running(int(pid.read_text())):
                jobs.stop(entry, timeout=3)
        if subprocess.run(["umount", str(runs)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(runs)], check=True)


def _fill(folder: Path) -> Path:
    """Write a filler file until the disk says ENOSPC."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(1 << 16))
        except OSError as err:
            assert err.errno == 28, err
        try:
            while True:
                handle.write(bytes(512))
        except OSError:
            pass
    assert os.statvfs(folder).f_bavail == 0
    return filler


def test_disk_full_during_training_is_named_and_nothing_is_corrupted(tmp_path, darknet_bin, small_runs_disk):
    ws = tmp_path / "ws"
    make_split_dataset(ws, "boat", train=8, valid=2, test=2)
    dataset_before = _digest(ws / "datasets")
    run_dir = _run(ws, "full", 6, darknet_bin)
    lists_before = {name: (run_dir / name).read_bytes() for name in ("train.txt", "valid.txt", "test.txt",
                                                                     "model.cfg", "obj.data", "obj.names")}
    jobs.start(run_dir)
    _wait_iteration(run_dir, 1)
    _fill(small_runs_disk)  # the disk fills while darknet trains (its log lines are lost from here)
    final = wait_state(run_dir, "finished", "failed", timeout=120, poll=0.2)
    weights = run_dir / "backup" / "model_final.weights"
    assert weights.stat().st_size == 0  # darknet opened it and could not write a byte
    sentence = (f"backup/model_final.weights is 0 bytes, not the {TINY_1_CLASS_BYTES:,} bytes the cfg implies: "
                f"darknet could not finish writing it (disk full)")
    assert (final.state, final.reason, final.exit_code) == ("failed", sentence, 0)
    run = _agrees_with_the_files(run_dir)  # the runner recorded the end in the space it had reserved
    assert (run["status"], run["reason"]) == ("failed", sentence)
    assert "No space left on device" in (run_dir / "runner.err").read_text()
    assert not (run_dir / ".runner-reserve").exists()
    # on the disk that is still full: the CLI reads the state, no traceback, nothing written; a run.json that
    # lacks the end (as when a runner had no room at all) cannot be set right, and stays whole
    recorded = (run_dir / "run.json").read_text()
    (run_dir / "run.json").write_text(json.dumps(dict(run, status="running", reason=None, ended=None)))
    _fill(small_runs_disk)
    for argv in (("status", "full"), ("follow", "full"), ("runs",)):
        done = _cli(ws, *argv)
        assert "Traceback" not in done.stderr and done.returncode in (0, 1), (argv, done.stderr)
        if argv[0] == "follow":  # it tried to record the end: one warning line, and the reason
            assert "could not record the end of run full in run.json" in done.stderr
            assert done.stdout.rstrip().endswith(f"failed: {sentence}")
    assert _cli(ws, "status", "full").stdout.strip() == f"full: failed (iteration {final.iteration}/6): {sentence}"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"  # the failed write left it whole
    (small_runs_disk / "filler").unlink()
    assert runstate.finalize(run_dir).reason == sentence  # room again: recorded (runner.err says why)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert json.loads(recorded)["reason"] == sentence
    _fill(small_runs_disk)
    # the broken file is never used
    done = _cli(ws, "predict", "full", "--weights", "final")
    assert (done.returncode, done.stderr.strip()) == (2, f"error: {sentence[:-len('(disk full)')]}(disk full?)")
    assert RunDir(run_dir).latest_weights() is None and evalview.list_weights(run_dir) == []
    with pytest.raises(UserError, match="there are no complete weights to resume from"):
        jobs.resume(run_dir)
    # nothing lost or corrupted
    assert _digest(ws / "datasets") == dataset_before
    assert {name: (run_dir / name).read_bytes() for name in lists_before} == lists_before
    assert json.loads((run_dir / "run.json").read_text())["id"] == "full"
    parsed = logs.parse_file(run_dir / "train_log.txt")
    assert parsed.iteration_count >= 1 and parsed.iterations[0]["iteration"] == 1


# --- images removed during training -------------------------------------------------------------------

def test_images_deleted_while_training_raise_an_alert_and_the_rest_is_intact(tmp_path, darknet_bin):
    make_split_dataset(tmp_path, "boat", train=16, valid=2)
    run_dir = _run(tmp_path, "gone", 8, darknet_bin)
    jobs.start(run_dir)
    _wait_iteration(run_dir, 2)
    listed = (run_dir / "train.txt").read_text().split()
    deleted = listed[::2]
    for line in deleted:
        (run_dir / line).unlink()
    kept = _digest(tmp_path / "datasets")
    follower = logs.LogFollower(run_dir / "train_log.txt")
    found, deadline = [], time.monotonic() + 120
    while not found and time.monotonic() < deadline:
        follower.refresh()
        current = jobs.status(run_dir, follower.log)
        found = [a for a in logs.alerts(follower.log, now=time.time(), last_growth=None,
                                        process_alive=current.state == "running", max_batches=8)
                 if a["kind"] == "missing_images"]
        time.sleep(0.2)
    assert found, follower.log.errors
    alert = found[0]
    assert alert["count"] >= 1 and set(alert["paths"]) <= set(deleted)
    assert alert["message"].startswith(f"darknet could not load {alert['count']} image")
    assert alert["paths"][0] in alert["message"]
    final = wait_state(run_dir, "finished", "failed", timeout=120, poll=0.2)
    assert (final.state, final.iteration) == ("finished", 8)  # Debian's OpenCV loader trains on a blank image
    parsed = logs.parse_file(run_dir / "train_log.txt")
    (alert,) = [a for a in logs.log_alerts(parsed) if a["kind"] == "missing_images"]
    assert alert["count"] == len(parsed.error_paths("missing_image")) and set(parsed.error_paths("missing_image")) \
        <= set(deleted)
    # nothing else was touched: the other images, every label, the lists; the weights are whole
    assert _digest(tmp_path / "datasets") == kept
    assert all((run_dir / line).with_suffix(".txt").is_file() for line in listed)
    assert (run_dir / "train.txt").read_text().split() == listed
    assert RunDir(run_dir).weights_problem(run_dir / "backup" / "model_final.weights") is None
    _agrees_with_the_files(run_dir)


# --- a misspelt cfg layer; stop at any moment -------------------------------------------------------------

def test_a_misspelt_layer_is_the_reason_not_the_crash_after_it(tmp_path, darknet_bin):
    make_split_dataset(tmp_path, "boat", train=4, valid=1)
    run_dir = _run(tmp_path, "typo", 5, darknet_bin)
    cfg = run_dir / "model.cfg"
    cfg.write_text(cfg.read_text().replace("[maxpool]", "[maxpoool]", 1))
    jobs.start(run_dir, skip_preflight=True)
    final = wait_state(run_dir, "finished", "failed", timeout=60, poll=0.2)
    reason = ("model.cfg has a layer type darknet does not know: [maxpoool] (a typo? e.g. [maxpool], "
              "[convolutional], [route]).")
    assert (final.state, final.exit_code, final.reason) == ("failed", -6, reason)  # not "darknet crashed (0)."
    run = _agrees_with_the_files(run_dir)
    assert (run["status"], run["reason"]) == ("failed", reason)
    assert _cli(tmp_path, "status", "typo").stdout.strip() == f"typo: failed (iteration -/5): {reason}"


@pytest.mark.parametrize("after_iterations", [0, 2])
def test_run_json_agrees_with_the_files_after_stop(tmp_path, darknet_bin, after_iterations):
    make_split_dataset(tmp_path, "boat", train=8, valid=2)
    run_dir = _run(tmp_path, "halt", 500, darknet_bin)
    pid = jobs.start(run_dir).pid
    if after_iterations:
        _wait_iteration(run_dir, after_iterations)
    final = jobs.stop(run_dir, timeout=10)
    assert final.state == "stopped" and process.group_members(pid) == []
    run = _agrees_with_the_files(run_dir)
    assert (run["status"], run["exit_code"]) == ("stopped", final.exit_code)
    if after_iterations:
        assert final.exit_code == -2  # SIGINT, recorded by the runner in both places
    # a run.json that lost the end (an older studio, a write that raced) is set right by stop on the ended run
    broken = dict(run, exit_code=None, status="running", ended=None)
    (run_dir / "run.json").write_text(json.dumps(broken))
    again = jobs.stop(run_dir)
    assert again.state == "stopped"
    run = _agrees_with_the_files(run_dir)
    assert (run["status"], run["ended"] is not None) == ("stopped", True)
