"""Detached darknet trainings: start, stop, resume, list, and their CLI commands — all state in the run directory.

A training runs as ``python -m darknet_runner._runner RUN -- stdbuf -oL -eL darknet detector
train …`` in a new session, so it survives the dashboard, the CLI and browser reloads. Its state
(:func:`status`, :class:`RunStatus`) is read from the run directory by :mod:`darknet_runner.runstate`,
so any process re-attaches by reading it; /proc is read through :mod:`darknet_runner.process`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from darknet_runner import cfg as cfgmod
from darknet_runner import preflight, presets, process, rundir
from darknet_runner.binary import DarknetInfo, find_darknet
from darknet_runner.pretrained import ensure_pretrained
from darknet_runner.follow import follow
from darknet_runner.rundir import EXIT_NAME, LOG_NAME, PID_NAME, STOPPED_NAME
from darknet_runner.runstate import RunStatus, finalize, read_int, status
from pipeline.cli import UserError
from darknet_runner.weights import PRETRAINED
from pipeline.atomic import atomic_write_text
from pipeline.progress import tqdm_progress
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

RUNNER_ERR = rundir.RUNNER_ERR
REPO_ROOT = Path(__file__).resolve().parent.parent
STOP_SHARES = ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.3), (signal.SIGKILL, 0.2))  # of the timeout


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- start / stop / resume ------------------------------------------------------------------

def _darknet_info(run: dict) -> DarknetInfo:
    fields = dict(run["darknet"])
    fields.setdefault("version_text", "")
    return DarknetInfo(**fields)


def _runner_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start(run_dir: str | os.PathLike, *, weights: str | None = None, skip_preflight: bool = False) -> RunStatus:
    """Launch darknet detached for this run (after a clean preflight); returns the new status.

    Args:
        weights: starting weights relative to the run dir (default: the run's pretrained file).
        skip_preflight: launch even if preflight finds problems (tests of darknet's own failures).

    Raises:
        UserError: the run is already running, or another process is starting, resuming or stopping
            it (:class:`pipeline.locks.Busy`); PreflightFailed: preflight found problems.
    """
    run_dir = Path(run_dir).resolve()
    with rundir.RunDir(run_dir).lock("start"):
        return _start(run_dir, weights=weights, skip_preflight=skip_preflight)


def _start(run_dir: Path, *, weights: str | None, skip_preflight: bool) -> RunStatus:
    run = rundir.RunDir(run_dir).load()
    if status(run_dir).state == "running":
        raise UserError(f"run {run_dir.name} is already running; stop it first")
    if not skip_preflight:
        problems = preflight.check(run_dir)
        if problems:
            raise preflight.PreflightFailed(problems)
    info = _darknet_info(run)
    command = rundir.train_command(info, weights or run.get("weights_arg"), gpus=run.get("gpus"),
                                   use_map=bool(run.get("use_map")))
    for name in (PID_NAME, EXIT_NAME, STOPPED_NAME):
        (run_dir / name).unlink(missing_ok=True)
    log_path = run_dir / LOG_NAME
    offset = log_path.stat().st_size if log_path.exists() else 0
    segments = (run.get("segments") or []) + [{"started": _now(), "log_offset": offset, "weights": weights,
                                               "command": command}]
    # run.json before the runner: it records the end there, maybe before Popen has returned here
    launch = {"status": "running", "reason": None, "exit_code": None, "ended": None, "command": command,
              "started": run.get("started") or segments[-1]["started"], "segments": segments}
    rundir.RunDir(run_dir).update(**launch)
    argv = [sys.executable, "-m", "darknet_runner._runner", str(run_dir)]
    argv += (["--yes"] if info.needs_yes_prompt else []) + ["--", *command]
    try:
        with open(run_dir / RUNNER_ERR, "ab") as err:
            child = subprocess.Popen(argv, cwd=run_dir, env=_runner_env(), start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    except OSError:
        rundir.RunDir(run_dir).update(**{key: run.get(key) for key in launch})  # nothing was launched
        raise
    atomic_write_text(run_dir / PID_NAME, f"{child.pid}\n")  # the runner writes it too; no window without one
    # The runner is our child: wait for it in the background, or a long-lived launcher (the dashboard's
    # server) keeps it as a <defunct> zombie after it ends. Its state is read from files, not from here.
    threading.Thread(target=child.wait, name=f"reap-runner-{child.pid}", daemon=True).start()
    log.info("started %s (pid %d): %s", run_dir.name, child.pid, " ".join(command))
    return status(run_dir)


def stop(run_dir: str | os.PathLike, timeout: float = 10) -> RunStatus:
    """Stop a running training: SIGINT, then SIGTERM, then SIGKILL to its process group.

    The ``stopped`` marker makes the final state "stopped" rather than "failed"; the end is recorded
    in run.json (by the runner, or here when SIGKILL left it no time). Holds the run's lock: a
    start or resume of the same run meanwhile is refused with this process's pid.
    """
    run_dir = Path(run_dir)
    with rundir.RunDir(run_dir).lock("stop"):
        return _stop(run_dir, timeout)


def _stop(run_dir: Path, timeout: float) -> RunStatus:
    pid = read_int(run_dir / PID_NAME)
    if not process.is_running(pid):
        return finalize(run_dir)  # ended already: run.json still gets the end the files show
    atomic_write_text(run_dir / STOPPED_NAME, f"{_now()}\n")
    for signum, share in STOP_SHARES:
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            break
        if process.wait_group_gone(pid, timeout * share):
            break
    return finalize(run_dir)


def set_max_batches(run_dir: str | os.PathLike, max_batches: int) -> None:
    """Change a run's iteration target (cfg ``max_batches`` and ``steps`` at 80%/90%, and run.json)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / rundir.CFG_NAME
    sections = cfgmod.read_cfg(cfg_path.read_text(encoding="utf-8"))
    net = cfgmod.net_options(sections)
    net["max_batches"] = str(max_batches)
    net["steps"] = f"{int(max_batches * 0.8)},{int(max_batches * 0.9)}"
    atomic_write_text(cfg_path, cfgmod.write_cfg(sections))
    rundir.RunDir(run_dir).update(max_batches=max_batches)


def resume(run_dir: str | os.PathLike, *, max_batches: int | None = None) -> RunStatus:
    """Continue a stopped, failed or finished run from its last saved weights.

    Args:
        max_batches: a new iteration target (to train a finished run longer).

    Without saved weights (pjreddie saves only every 100 iterations), training restarts from the
    run's pretrained weights. Raises UserError when the saved iteration already reached the target,
    or when another process is starting, resuming or stopping the run.
    """
    run_dir = Path(run_dir)
    with rundir.RunDir(run_dir).lock("resume"):
        return _resume(run_dir, max_batches)


def _resume(run_dir: Path, max_batches: int | None) -> RunStatus:
    if max_batches is not None:
        set_max_batches(run_dir, max_batches)
    run = rundir.RunDir(run_dir).load()
    found = rundir.RunDir(run_dir).latest_weights()
    broken = rundir.RunDir(run_dir).usable_weights()[1] if found is None else []
    if broken:  # restarting would silently throw the training away: say why, let the user decide
        raise UserError(f"{broken[0]}; there are no complete weights to resume from: free some space, delete "
                        f"the broken file and resume again to start over")
    if found is None:
        log.warning("%s has no saved weights yet; training restarts from the beginning", run_dir.name)
        return start(run_dir)
    path, iteration = found
    if iteration >= int(run["max_batches"]):
        raise UserError(f"run {run_dir.name} already reached iteration {iteration} of {run['max_batches']}; "
                        f"resume with a higher --max-batches to train longer")
    log.info("resuming %s from %s (iteration %d)", run_dir.name, path.name, iteration)
    return start(run_dir, weights=str(path.relative_to(run_dir)))


def list_runs(ws: Workspace) -> list[dict]:
    """One summary per run, newest first: id, path, model, dataset, created and the status fields."""
    summaries = []
    for run_id in ws.runs():
        run_dir = ws.run_dir(run_id)
        try:
            run, current = rundir.RunDir(run_dir).load(), status(run_dir)
        except (UserError, ValueError, OSError) as err:
            log.warning("skipping run %s: %s", run_id, err)
            continue
        summaries.append({"id": run_id, "path": str(run_dir), "model": run.get("model"),
                          "dataset": (run.get("dataset") or {}).get("slug"), "created": run.get("created"),
                          **current.to_dict()})
    return summaries


# --- CLI ------------------------------------------------------------------------------------

def _print_status(run_dir: Path, current: RunStatus) -> None:
    progress = f"{current.iteration if current.iteration is not None else '-'}/{current.max_batches}"
    line = f"{run_dir.name}: {current.state} (iteration {progress})"
    print(line + (f": {current.reason}" if current.reason else ""))


def _launched(run_dir: Path, current: RunStatus, detach: bool) -> int:
    print(run_dir)
    if detach:
        _print_status(run_dir, current)
        return 0
    try:
        final = follow(run_dir)
    except KeyboardInterrupt:
        print(f"stopped following; the training goes on (stop it with: stop {run_dir.name})", file=sys.stderr)
        return 130
    return 0 if final.state == "finished" else 1


def _cmd_train(args) -> int:
    from darknet_runner.binary import DarknetNotFound

    ws = Workspace.open(getattr(args, "workspace", None))
    try:
        info = find_darknet(args.darknet)
        settings = presets.resolve_settings(
            ws, args.dataset, info, args.preset, minutes=args.minutes, model=args.model, size=args.size,
            batch=args.batch, subdivisions=args.subdivisions, max_batches=args.max_batches,
            learning_rate=args.learning_rate, burn_in=args.burn_in, width=args.width,
            steps=tuple(args.steps) if args.steps else None, anchors=args.anchors, pretrained=args.pretrained,
            random=None if args.random is None else bool(args.random), use_map=args.map or None)
        for note in settings.notes:
            print(f"{settings.preset} preset: {note}", file=sys.stderr)
        if settings.pretrained in PRETRAINED:
            ensure_pretrained(ws, settings.pretrained, progress=tqdm_progress(settings.pretrained), darknet=info)
        run_dir = rundir.create_run(ws, args.dataset, model=settings.model, pretrained=settings.pretrained,
                                    darknet=info, gpus=args.gpus, use_map=settings.use_map, preset=settings.preset,
                                    run_id=args.run_id, **settings.cfg_options())
    except (ValueError, DarknetNotFound) as err:
        raise UserError(str(err)) from err
    problems = preflight.check(run_dir)
    if problems:  # nothing ran yet: remove the run so a corrected command starts clean
        shutil.rmtree(run_dir)
        raise preflight.PreflightFailed(problems)
    return _launched(run_dir, start(run_dir), args.detach)


def _anchors_arg(text: str) -> list[tuple[float, float]] | str:
    """``"10,14 23,27 …"`` (or with ", " between pairs) → pairs; ``"stock"`` → the model's stock anchors."""
    if text.strip() == "stock":
        return "stock"
    numbers = [float(v) for v in text.replace(",", " ").split()]
    if not numbers or len(numbers) % 2:
        raise argparse.ArgumentTypeError(f"anchors must be width,height pairs, not {text!r}")
    return list(zip(numbers[::2], numbers[1::2]))


def _run_arg(args) -> Path:
    return rundir.open_run(Workspace.open(getattr(args, "workspace", None)), args.run).path


def _cmd_status(args) -> int:
    run_dir = _run_arg(args)
    current = status(run_dir)
    if args.json:
        print(json.dumps(current.to_dict()))
    else:
        _print_status(run_dir, current)
    return 0


def _cmd_stop(args) -> int:
    run_dir = _run_arg(args)
    _print_status(run_dir, stop(run_dir, timeout=args.timeout))
    return 0


def _cmd_resume(args) -> int:
    run_dir = _run_arg(args)
    return _launched(run_dir, resume(run_dir, max_batches=args.max_batches), args.detach)


def _cmd_runs(args) -> int:
    runs = list_runs(Workspace.open(getattr(args, "workspace", None)))
    if args.json:
        print(json.dumps(runs))
        return 0
    for run in runs:
        progress = f"{run['iteration'] if run['iteration'] is not None else '-'}/{run['max_batches']}"
        print(f"{run['id']}\t{run['dataset']}\t{run['model']}\t{run['state']}\t{progress}")
    if not runs:
        print("no runs yet; start one with: train --dataset SLUG --model yolov3-tiny")
    return 0


def register(subparsers) -> None:
    """Add ``train``, ``status``, ``stop``, ``resume`` and ``runs``."""
    train = subparsers.add_parser("train", help="create a run for a dataset and start darknet")
    train.add_argument("--dataset", required=True, help="dataset slug")
    train.add_argument("--preset", choices=("auto", *presets.PRESETS), default="auto",
                       help="quick (CPU: minutes), gpu (AlexeyAB's rules) or custom; auto picks quick for a CPU "
                            "build of darknet and gpu for a CUDA one. The options below override the preset")
    train.add_argument("--minutes", type=float, help=f"time budget of the quick preset (default {presets.QUICK_MINUTES:g})")
    train.add_argument("--model", choices=cfgmod.MODELS, help="default yolov3-tiny")
    train.add_argument("--size", type=int, help="network width and height (multiple of 32)")
    train.add_argument("--max-batches", type=int, help="iterations (custom: max(2000×classes, images, 6000))")
    train.add_argument("--batch", type=int)
    train.add_argument("--subdivisions", type=int)
    train.add_argument("--burn-in", type=int, help="warm-up iterations")
    train.add_argument("--width", type=float, help="filters multiplier (0.5 = half as wide; no pretrained then)")
    train.add_argument("--steps", type=float, nargs=2, metavar=("A", "B"),
                       help="learning-rate drops (×0.1) at these fractions of the iterations (default 0.8 0.9)")
    train.add_argument("--anchors", type=_anchors_arg, help='"w,h w,h …" in network pixels, or "stock"')
    train.add_argument("--pretrained", help="a pretrained name (see weights download), a weights file, or none")
    train.add_argument("--darknet", help="darknet binary (default: $DARKNET, PATH, /usr/bin/darknet)")
    train.add_argument("--gpus", help="GPU ids, e.g. 0,1")
    train.add_argument("--map", action="store_true", help="compute mAP during training (AlexeyAB, hank)")
    train.add_argument("--random", type=int, choices=(0, 1), help="multi-resolution training (default: on)")
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--run-id", help="folder name for the run (default: a new id)")
    train.add_argument("--detach", action="store_true", help="return at once instead of following the log")
    train.set_defaults(func=_cmd_train)
    for name, func, text in (("status", _cmd_status, "state of a run"), ("stop", _cmd_stop, "stop a training"),
                             ("resume", _cmd_resume, "continue a run from its last saved weights")):
        sub = subparsers.add_parser(name, help=text)
        sub.add_argument("run", help="run folder or run id")
        sub.set_defaults(func=func)
        if name == "status":
            sub.add_argument("--json", action="store_true")
        if name == "stop":
            sub.add_argument("--timeout", type=float, default=10)
        if name == "resume":
            sub.add_argument("--max-batches", type=int, help="a new iteration target")
            sub.add_argument("--detach", action="store_true")
    runs = subparsers.add_parser("runs", help="list the runs of the workspace")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=_cmd_runs)
