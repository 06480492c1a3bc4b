"""Detached runs: status from files and /proc (darknet_runner.runstate, .process), stop escalation, resume, listing.

Process handling is exercised with real processes: a small shell program stands in for darknet
where the test is about the runner (exit codes, stubborn processes); real darknet training is in
test_training.py.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from darknet_runner import jobs, process, rundir, runstate
from darknet_runner.binary import DarknetInfo, PJREDDIE
from darknet_runner.preflight import PreflightFailed
from pipeline.cli import UserError
from pipeline.workspace import Workspace
from tests.support.runs import wait_state, make_run, make_split_dataset, write_weights


def _standin(tmp_path: Path, iterations: int, *, code: int = 0, stubborn: bool = False, delay: float = 0.01,
             tail: str = "") -> DarknetInfo:
    """An executable that prints pjreddie iteration lines, then ``tail``, and exits with ``code``."""
    script = tmp_path / "fake-darknet"
    trap = "trap '' INT TERM\n" if stubborn else ""
    script.write_text(f"#!/bin/sh\n{trap}i=1\nwhile [ $i -le {iterations} ]; do\n"
                      f"  echo \"$i: 1.5, 1.5 avg, 0.001 rate, 0.1 seconds, $((i*4)) images\"\n"
                      f"  i=$((i+1)); sleep {delay}\ndone\n{tail}exit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return DarknetInfo(str(script), PJREDDIE, "", False, False, False, False)




def _weights(path: Path, seen: int) -> None:
    write_weights(path, seen)  # the size the run's cfg implies: anything shorter is a broken file


@pytest.fixture
def dataset(tmp_path):
    return make_split_dataset(tmp_path / "ws", train=2, valid=1)


def _run(tmp_path: Path, info: DarknetInfo, **overrides) -> Path:
    return make_run(tmp_path / "ws", darknet=info, **overrides)


def test_fresh_run_is_not_started(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 1))
    assert jobs.status(run_dir) == jobs.RunStatus("not-started", None, None, None, None, 40, None, None)


@pytest.mark.parametrize("code, iteration, reason, expected", [
    (0, 40, None, ("finished", None)),
    (0, None, None, ("finished", None)),  # e.g. resumed at max_batches: saves and exits at once
    (0, 12, None, ("failed", "darknet stopped at iteration 12 of 40 without an error message")),
    (0, None, "Label file x.txt is missing.", ("failed", "Label file x.txt is missing.")),
    (134, 3, None, ("failed", "darknet exited with code 134")),
    (-9, 3, None, ("failed", "darknet was killed by SIGKILL")),
    (None, 3, None, ("failed", "the training process ended without recording an exit code (it was killed)")),
])
def test_final_state(code, iteration, reason, expected):
    assert runstate._final_state(code, iteration, 40, reason) == expected


def test_a_zombie_is_not_running():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while process._proc_stat(child.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process._proc_stat(child.pid)[0] == "Z"
    assert process.is_alive(child.pid) is False
    assert process._proc_stat(child.pid) is None  # reaped by is_alive
    assert process.is_alive(os.getpid()) is True and process.is_alive(None) is False


def test_start_runs_to_finished(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 40))
    started = jobs.start(run_dir)
    assert started.state in ("running", "finished") and started.pid == int((run_dir / "pid").read_text())
    final = wait_state(run_dir, "finished", "failed")
    assert (final.state, final.exit_code, final.iteration, final.reason) == ("finished", 0, 40, None)
    log_lines = (run_dir / "train_log.txt").read_text().splitlines()
    assert log_lines[0] == "1: 1.5, 1.5 avg, 0.001 rate, 0.1 seconds, 4 images" and len(log_lines) == 40
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["status"], run["exit_code"]) == ("finished", 0) and run["ended"] and run["started"]
    assert final.ended == run["ended"] and (run_dir / "runner.err").read_text() == ""  # recorded by the runner
    assert run["segments"][0]["log_offset"] == 0 and run["segments"][0]["command"][-4:] == [
        "detector", "train", "obj.data", "model.cfg"]


def test_exit_zero_before_max_batches_is_a_failure(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 5, tail="echo \"Couldn't open file: train.txt\"\n"))
    jobs.start(run_dir)
    final = wait_state(run_dir, "finished", "failed")
    assert (final.state, final.exit_code, final.iteration) == ("failed", 0, 5)
    assert "train.txt" in final.reason


def test_nonzero_exit_without_a_message(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 2, code=3))
    jobs.start(run_dir)
    final = wait_state(run_dir, "finished", "failed")
    assert (final.state, final.reason) == ("failed", "darknet exited with code 3")


def test_preflight_problems_refuse_the_launch(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 1))
    (run_dir / "obj.names").write_text("a\nb\n")
    with pytest.raises(PreflightFailed) as err:
        jobs.start(run_dir)
    assert [p.kind for p in err.value.problems] == ["classes", "classes"]
    assert not (run_dir / "pid").exists() and jobs.status(run_dir).state == "not-started"


def test_stop_escalates_to_sigkill_and_leaves_no_process(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 100000, stubborn=True, delay=0.05))
    pid = jobs.start(run_dir).pid
    wait_state(run_dir, "running")
    while (jobs.status(run_dir).iteration or 0) < 2:
        time.sleep(0.05)
    with pytest.raises(UserError, match="is already running"):
        jobs.start(run_dir)
    begun = time.monotonic()
    final = jobs.stop(run_dir, timeout=2)
    assert time.monotonic() - begun < 4
    assert final.state == "stopped" and final.iteration >= 2
    assert process.group_members(pid) == [] and not process.is_alive(pid)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "stopped"


def test_stop_of_a_run_that_is_not_running_changes_nothing(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 1))
    assert jobs.stop(run_dir).state == "not-started"
    assert not (run_dir / "stopped").exists()


def test_latest_weights_picks_the_most_trained_file(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 1))
    assert rundir.RunDir(run_dir).latest_weights() is None
    _weights(run_dir / "backup" / "model.backup", 400)
    _weights(run_dir / "backup" / "model_100.weights", 400)
    _weights(run_dir / "backup" / "model_last.weights", 96)
    (run_dir / "backup" / "model_broken.weights").write_bytes(b"oops")
    path, iteration = rundir.RunDir(run_dir).latest_weights()
    assert path.name in ("model.backup", "model_100.weights") and iteration == 100


def test_resume_refuses_a_run_at_its_target(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 1))
    _weights(run_dir / "backup" / "model_final.weights", 160)  # 40 iterations of batch 4
    with pytest.raises(UserError, match="already reached iteration 40 of 40; resume with a higher --max-batches"):
        jobs.resume(run_dir)


def test_resume_with_a_new_target_starts_from_the_weights(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 3))
    _weights(run_dir / "backup" / "model_final.weights", 160)
    jobs.resume(run_dir, max_batches=50)
    wait_state(run_dir, "finished", "failed")
    run = rundir.RunDir(run_dir).load()
    assert run["max_batches"] == 50
    assert run["segments"][-1]["weights"] == "backup/model_final.weights"
    assert run["command"][-1] == "backup/model_final.weights"
    assert "max_batches=50\n" in (run_dir / "model.cfg").read_text() and "steps=40,45\n" in (
        run_dir / "model.cfg").read_text()


def test_resume_without_weights_restarts_and_appends_the_log(tmp_path, dataset):
    run_dir = _run(tmp_path, _standin(tmp_path, 40))
    jobs.start(run_dir)
    wait_state(run_dir, "finished")
    size = (run_dir / "train_log.txt").stat().st_size
    jobs.resume(run_dir)
    final = wait_state(run_dir, "finished", "failed")
    run = rundir.RunDir(run_dir).load()
    assert [s["log_offset"] for s in run["segments"]] == [0, size]
    assert final.state == "finished" and final.iteration == 40


def test_list_runs(tmp_path, dataset):
    assert jobs.list_runs(Workspace(tmp_path / "ws")) == []
    _run(tmp_path, _standin(tmp_path, 1))
    runs = jobs.list_runs(Workspace(tmp_path / "ws"))
    assert [(r["id"], r["dataset"], r["model"], r["state"], r["max_batches"]) for r in runs] == [
        ("r1", "boat", "yolov3-tiny", "not-started", 40)]


def test_hank_prompt_is_answered_on_stdin(tmp_path, dataset):
    script = tmp_path / "hank-darknet"
    script.write_text("#!/bin/sh\necho 'Type \"yes\" to continue:'\nread answer\n"
                      "[ \"$answer\" = yes ] || exit 9\necho '1: loss=2.0, avg loss=2.0, rate=0.001, "
                      "1.0 seconds, 4 images, time remaining=1 seconds'\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    info = DarknetInfo(str(script), "hank-ai", "", True, True, True, True)
    run_dir = _run(tmp_path, info, max_batches=1)
    jobs.start(run_dir)
    final = wait_state(run_dir, "finished", "failed")
    assert (final.state, final.exit_code, final.iteration) == ("finished", 0, 1)
    assert rundir.RunDir(run_dir).load()["command"][-2:] == ["-dont_show", "-nocolour"]


def _cli(capsys, *argv):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    jobs.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    code = args.func(args)
    return code, capsys.readouterr().out


def test_cli_status_runs_and_stop(tmp_path, dataset, capsys):
    ws = str(tmp_path / "ws")
    assert _cli(capsys, "--workspace", ws, "runs") == (
        0, "no runs yet; start one with: train --dataset SLUG --model yolov3-tiny\n")
    _run(tmp_path, _standin(tmp_path, 1))
    assert _cli(capsys, "--workspace", ws, "status", "r1") == (0, "r1: not-started (iteration -/40)\n")
    code, out = _cli(capsys, "--workspace", ws, "status", "r1", "--json")
    assert json.loads(out) == {"state": "not-started", "pid": None, "exit_code": None, "reason": None,
                               "iteration": None, "max_batches": 40, "started": None, "ended": None}
    assert _cli(capsys, "--workspace", ws, "runs") == (0, "r1\tboat\tyolov3-tiny\tnot-started\t-/40\n")
    assert _cli(capsys, "--workspace", ws, "stop", "r1") == (0, "r1: not-started (iteration -/40)\n")


def test_cli_train_follows_until_the_end(tmp_path, dataset, capsys, monkeypatch):
    info = _standin(tmp_path, 6)
    monkeypatch.setenv("DARKNET", info.path)
    code, out = _cli(capsys, "--workspace", str(tmp_path / "ws"), "train", "--dataset", "boat", "--preset", "custom",
                     "--size", "128", "--batch", "4", "--subdivisions", "1", "--max-batches", "6", "--run-id", "cli", "--random", "0")
    assert code == 0  # returned when the run ended, finished
    run_dir = tmp_path / "ws" / "runs" / "cli"
    assert out.splitlines()[0] == str(run_dir)
    final = jobs.status(run_dir)
    assert (final.state, final.iteration) == ("finished", 6)


def test_cli_train_reports_a_bad_size_in_one_sentence(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setenv("DARKNET", _standin(tmp_path, 1).path)
    with pytest.raises(UserError, match="^the network size must be a multiple of 32 between 32 and 4096 \\(e.g. 416\\), "
                                         "not 100$"):
        _cli(capsys, "--workspace", str(tmp_path / "ws"), "train", "--dataset", "boat", "--preset", "custom",
             "--size", "100")
    assert not (tmp_path / "ws" / "runs").exists() or list((tmp_path / "ws" / "runs").iterdir()) == []


def test_is_running_needs_the_pid_to_lead_its_group():
    plain = subprocess.Popen(["sleep", "5"])
    leader = subprocess.Popen(["sleep", "5"], start_new_session=True)
    try:
        assert process.is_running(plain.pid) is False  # e.g. a pid reused after a reboot
        assert process.is_running(leader.pid) is True
        assert process.group_members(leader.pid) == [leader.pid]
    finally:
        for child in (plain, leader):
            child.kill()
            child.wait()
    assert process.is_running(leader.pid) is False and process.is_running(None) is False


def test_cli_train_refused_by_preflight_keeps_no_run(tmp_path, dataset, capsys, monkeypatch):
    monkeypatch.setenv("DARKNET", _standin(tmp_path, 1).path)
    with pytest.raises(PreflightFailed, match="^preflight found 2 problems:\n- model.cfg uses \\[route\\] groups"):
        _cli(capsys, "--workspace", str(tmp_path / "ws"), "train", "--dataset", "boat", "--preset", "custom",
             "--model", "yolov4-tiny",
             "--map", "--run-id", "v4")
    assert not (tmp_path / "ws" / "runs" / "v4").exists()


def test_darknet_outliving_its_runner_is_still_running_then_failed(tmp_path, dataset):
    import signal

    run_dir = _run(tmp_path, _standin(tmp_path, 100000, delay=0.05))
    pid = jobs.start(run_dir).pid
    while (jobs.status(run_dir).iteration or 0) < 1:
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # e.g. the OOM killer picked the runner
    time.sleep(0.2)
    assert not process._proc_stat(pid) or process._proc_stat(pid)[0] == "Z"
    assert jobs.status(run_dir).state == "running"  # darknet, in the runner's group, goes on
    for member in process.group_members(pid):
        os.kill(member, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process.group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    before = (run_dir / "run.json").read_bytes()
    final = jobs.status(run_dir)
    assert (final.state, final.exit_code) == ("failed", None)
    assert final.reason == "the training process ended without recording an exit code (it was killed)"
    assert (run_dir / "run.json").read_bytes() == before  # status() only reads; nobody recorded the end
    assert json.loads(before)["status"] == "running"
    recorded = runstate.finalize(run_dir)
    run = rundir.RunDir(run_dir).load()
    assert (run["status"], run["reason"], run["exit_code"]) == ("failed", final.reason, None)
    assert recorded.ended == run["ended"] and jobs.status(run_dir) == recorded
    written = (run_dir / "run.json").stat()
    runstate.finalize(run_dir)
    now = (run_dir / "run.json").stat()
    assert (now.st_ino, now.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # recorded already: no write
