"""Detached darknet trainings: start, status, stop, resume, list — all state in the run directory.

A training runs as ``python -m darknet_runner._runner RUN -- stdbuf -oL -eL darknet detector
train …`` in a new session, so it survives the dashboard, the CLI and browser reloads. Status is
derived from files only (``pid``, ``exit_code``, ``stopped``, ``train_log.txt``) plus /proc, so
any process re-attaches by reading the run directory. Exit codes lie (pjreddie exits 0 after
``Couldn't open file``), so the final state also reads the log.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from darknet_runner import cfg as cfgmod
from darknet_runner import preflight, rundir
from darknet_runner._runner import EXIT_NAME, LOG_NAME, PID_NAME
from darknet_runner.binary import DarknetInfo
from darknet_runner.weights import WeightsError, iteration_for, read_header
from pipeline.cli import UserError
from pipeline.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)

STATES = ("running", "finished", "failed", "stopped", "not-started")
STOPPED_NAME = "stopped"
RUNNER_ERR = "runner.err"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_BYTES = 256 * 1024  # the last iteration and the fatal message are always near the end
STOP_SHARES = ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.3), (signal.SIGKILL, 0.2))  # of the timeout

# Fallback log reading (facts §7): for what darknet_runner.logparse does not call fatal, or without it.
_NUM = r"[-+]?(?:nan|inf|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)"
_ITERATION = re.compile(rf"^\s*(\d+):\s+(?:loss=)?({_NUM}),\s+(?:avg loss=)?({_NUM})", re.M | re.I)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b\][^\x07]*\x07|\x07")
_FATAL = [
    (re.compile(r"l\.outputs == params\.inputs|filters in convolutional layer prior to \[yolo\]"),
     "filters mismatch: filters= before a [yolo] layer does not match classes= and mask=; regenerate the cfg"),
    (re.compile(r"CUDA Error: out of memory|CUDA memory allocation failed|out of memory"),
     "the GPU ran out of memory; raise subdivisions (e.g. 32 or 64) or lower the network size"),
    (re.compile(r"Couldn't open file: (?P<x>.+)"), "darknet could not open the file {x}"),
    (re.compile(r"Cannot load image \"(?P<x>[^\"]+)\"|failed to load image file \"(?P<y>[^\"]+)\""),
     "darknet could not load the image {x}"),
    (re.compile(r"failed to open annotation file \"(?P<x>[^\"]+)\""), "a label file is missing: {x}"),
    (re.compile(r"invalid class ID|Wrong annotation: class_id"), "a label has a class id outside 0..classes-1"),
    (re.compile(r"Error message: +(?P<x>.+)"), "darknet: {x}"),
    (re.compile(r"double free or corruption|Segmentation fault|Assertion .* failed"), "darknet crashed"),
]


@dataclass(frozen=True)
class RunStatus:
    """What a run is doing, derived from its directory."""

    state: str
    pid: int | None
    exit_code: int | None
    reason: str | None
    iteration: int | None
    max_batches: int | None
    started: str | None
    ended: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


# --- processes ------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a live pid from /proc, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[2])


def _reap(pid: int) -> None:
    """Collect our own finished child so it does not linger as a zombie (a no-op for others)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def is_alive(pid: int | None) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    _reap(pid)
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def is_running(pid: int | None) -> bool:
    """True while the run's process group (the runner is its leader, pgid == pid) has a live member.

    Checking the group, not just the pid, tells a reused pid after a reboot (not a group leader)
    from our runner, and still sees darknet when the runner alone was killed.
    """
    if not pid:
        return False
    _reap(pid)
    stat = _proc_stat(pid)
    if stat is not None and stat[0] not in ("Z", "X") and stat[1] == pid:
        return True
    return bool(group_members(pid))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _wait_group_gone(pgid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        _reap(pgid)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --- the log --------------------------------------------------------------------------------

def _log_bytes(run_dir: Path, offset: int = 0) -> bytes:
    """The current segment's tail of train_log.txt (from ``offset``, at most LOG_TAIL_BYTES)."""
    path = run_dir / LOG_NAME
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return b""
    with path.open("rb") as handle:
        handle.seek(max(offset, size - LOG_TAIL_BYTES))
        return handle.read()


def _plain(data: bytes) -> str:
    return _ANSI.sub("", data.decode("utf-8", "replace")).replace("\r", "\n")


def _last_iteration(text: str) -> int | None:
    matches = _ITERATION.findall(text)
    return int(matches[-1][0]) if matches else None


def _fallback_reason(text: str) -> str | None:
    lines = text.split("\n")
    for pattern, message in _FATAL:
        for line in reversed(lines):
            match = pattern.search(line)
            if match:
                found = [v.strip() for v in match.groupdict().values() if v]
                return message.format(x=found[0] if found else "")
    for match in reversed(_ITERATION.findall(text)):
        if "nan" in match[2].lower() or "inf" in match[2].lower():
            return f"the average loss became {match[2]} at iteration {match[0]}; lower the learning rate"
    return None


def read_log(data: bytes) -> tuple[int | None, str | None]:
    """(last iteration, failure reason) from log bytes.

    Uses ``darknet_runner.logparse`` (the dashboard's parser) and falls back to the fatal
    patterns of facts §7 for what it does not call fatal or when it is not importable.
    """
    text = _plain(data)
    try:
        from darknet_runner import logparse
    except ImportError:
        return _last_iteration(text), _fallback_reason(text)
    parser = logparse.LogParser()
    parser.feed(data)
    parser.finish()
    iteration = parser.log.last_iteration
    return (iteration if iteration is not None else _last_iteration(text),
            logparse.failure_reason(parser.log) or _fallback_reason(text))


# --- status ---------------------------------------------------------------------------------

def _segment_offset(run: dict) -> int:
    segments = run.get("segments") or []
    return int(segments[-1]["log_offset"]) if segments else 0


def _ended_at(run_dir: Path) -> str | None:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((run_dir / EXIT_NAME).stat().st_mtime))
    except FileNotFoundError:
        return None


def _final_state(code: int | None, iteration: int | None, max_batches: int | None,
                 reason: str | None) -> tuple[str, str | None]:
    """finished or failed, with the reason: the log first, then the exit code, then the iteration."""
    if code is None:
        return "failed", "the training process ended without recording an exit code (it was killed)"
    reached = iteration is not None and max_batches is not None and iteration >= max_batches
    if code == 0 and (reached or iteration is None and not reason):
        return "finished", None
    if reason:
        return "failed", reason
    if code != 0:
        name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None
        return "failed", f"darknet was killed by {name}" if name else f"darknet exited with code {code}"
    return "failed", f"darknet stopped at iteration {iteration} of {max_batches} without an error message"


def status(run_dir: str | os.PathLike) -> RunStatus:
    """The run's state from its files and /proc; a terminal state is also written to run.json."""
    run_dir = Path(run_dir)
    run = rundir.load_run(run_dir)
    pid, code = _read_int(run_dir / PID_NAME), _read_int(run_dir / EXIT_NAME)
    iteration, log_reason = read_log(_log_bytes(run_dir, _segment_offset(run)))
    max_batches = run.get("max_batches")
    reason, ended = None, _ended_at(run_dir)
    if pid is None and code is None:
        state = "not-started"
    elif code is None and is_running(pid):
        state, ended = "running", None
    elif (run_dir / STOPPED_NAME).exists():
        state, ended = "stopped", ended or run.get("ended")
    else:
        state, reason = _final_state(code, iteration, max_batches, log_reason)
    if state in ("finished", "failed", "stopped") and (run.get("status") != state or run.get("reason") != reason):
        run = rundir.update_run(run_dir, status=state, reason=reason, ended=ended, exit_code=code)
    return RunStatus(state, pid, code, reason, iteration, max_batches, run.get("started"), ended)


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
        UserError: the run is already running; PreflightFailed: preflight found problems.
    """
    run_dir = Path(run_dir).resolve()
    run = rundir.load_run(run_dir)
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
    argv = [sys.executable, "-m", "darknet_runner._runner", str(run_dir)]
    argv += (["--yes"] if info.needs_yes_prompt else []) + ["--", *command]
    with open(run_dir / RUNNER_ERR, "ab") as err:
        child = subprocess.Popen(argv, cwd=run_dir, env=_runner_env(), start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    atomic_write_text(run_dir / PID_NAME, f"{child.pid}\n")  # the runner writes it too; no window without one
    segments = (run.get("segments") or []) + [{"started": _now(), "log_offset": offset, "weights": weights,
                                               "command": command}]
    rundir.update_run(run_dir, status="running", reason=None, exit_code=None, ended=None, command=command,
                      started=run.get("started") or segments[-1]["started"], segments=segments)
    log.info("started %s (pid %d): %s", run_dir.name, child.pid, " ".join(command))
    return status(run_dir)


def stop(run_dir: str | os.PathLike, timeout: float = 10) -> RunStatus:
    """Stop a running training: SIGINT, then SIGTERM, then SIGKILL to its process group.

    The ``stopped`` marker makes the final state "stopped" rather than "failed".
    """
    run_dir = Path(run_dir)
    pid = _read_int(run_dir / PID_NAME)
    if not is_running(pid):
        return status(run_dir)
    atomic_write_text(run_dir / STOPPED_NAME, f"{_now()}\n")
    for signum, share in STOP_SHARES:
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            break
        if _wait_group_gone(pid, timeout * share):
            break
    rundir.update_run(run_dir, status="stopped", ended=_now())
    return status(run_dir)


def latest_weights(run_dir: str | os.PathLike) -> tuple[Path, int] | None:
    """The saved weights with the most images seen in ``backup/`` and their iteration, or None.

    Looks at AlexeyAB/hank's ``*_last.weights`` and ``*_final.weights``, pjreddie's ``<cfg>.backup``
    and ``_<iteration>.weights``; a file with a broken header is skipped.
    """
    run_dir = Path(run_dir)
    run = rundir.load_run(run_dir)
    best: tuple[int, float, Path] | None = None
    backup = run_dir / rundir.BACKUP_DIR
    for path in [*backup.glob("*.weights"), *backup.glob("*.backup")]:
        try:
            seen = read_header(path).seen
        except WeightsError as err:
            log.warning("skipping %s: %s", path.name, err)
            continue
        key = (seen, path.stat().st_mtime, path)
        best = key if best is None or key[:2] > best[:2] else best
    if best is None:
        return None
    header = read_header(best[2])
    return best[2], iteration_for(header, int(run["batch"]), int(run["subdivisions"]))


def set_max_batches(run_dir: str | os.PathLike, max_batches: int) -> None:
    """Change a run's iteration target (cfg ``max_batches`` and ``steps`` at 80%/90%, and run.json)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / rundir.CFG_NAME
    sections = cfgmod.read_cfg(cfg_path.read_text(encoding="utf-8"))
    net = cfgmod.net_options(sections)
    net["max_batches"] = str(max_batches)
    net["steps"] = f"{int(max_batches * 0.8)},{int(max_batches * 0.9)}"
    atomic_write_text(cfg_path, cfgmod.write_cfg(sections))
    rundir.update_run(run_dir, max_batches=max_batches)


def resume(run_dir: str | os.PathLike, *, max_batches: int | None = None) -> RunStatus:
    """Continue a stopped, failed or finished run from its last saved weights.

    Args:
        max_batches: a new iteration target (to train a finished run longer).

    Without saved weights (pjreddie saves only every 100 iterations), training restarts from the
    run's pretrained weights. Raises UserError when the saved iteration already reached the target.
    """
    run_dir = Path(run_dir)
    if max_batches is not None:
        set_max_batches(run_dir, max_batches)
    run = rundir.load_run(run_dir)
    found = latest_weights(run_dir)
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
            run, current = rundir.load_run(run_dir), status(run_dir)
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


def follow_until_done(run_dir: Path, poll_s: float = 2.0) -> RunStatus:
    """Print progress until the run ends (``follow`` when available, else a simple poll)."""
    try:
        from darknet_runner.follow import follow
    except ImportError:
        follow = None
    if follow is not None:
        return follow(run_dir)
    last = None
    while True:
        current = status(run_dir)
        if (current.state, current.iteration) != last:
            _print_status(run_dir, current)
            last = (current.state, current.iteration)
        if current.state != "running":
            return current
        time.sleep(poll_s)


def _launched(run_dir: Path, current: RunStatus, detach: bool) -> int:
    print(run_dir)
    if detach:
        _print_status(run_dir, current)
        return 0
    try:
        final = follow_until_done(run_dir)
    except KeyboardInterrupt:
        print(f"stopped following; the training goes on (stop it with: stop {run_dir.name})", file=sys.stderr)
        return 130
    return 0 if final.state == "finished" else 1


def _cmd_train(args) -> int:
    from darknet_runner.binary import DarknetNotFound

    ws = Workspace.open(getattr(args, "workspace", None))
    try:
        run_dir = rundir.create_run(
            ws, args.dataset, model=args.model, size=args.size, batch=args.batch, subdivisions=args.subdivisions,
            max_batches=args.max_batches, pretrained=args.pretrained, darknet=args.darknet, gpus=args.gpus,
            use_map=args.map, random=args.random, learning_rate=args.learning_rate, run_id=args.run_id)
    except (ValueError, DarknetNotFound) as err:
        raise UserError(str(err)) from err
    problems = preflight.check(run_dir)
    if problems:  # nothing ran yet: remove the run so a corrected command starts clean
        shutil.rmtree(run_dir)
        raise preflight.PreflightFailed(problems)
    return _launched(run_dir, start(run_dir), args.detach)


def _run_arg(args) -> Path:
    return rundir.resolve_run(Workspace.open(getattr(args, "workspace", None)), args.run)


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
    train.add_argument("--model", default="yolov3-tiny", choices=cfgmod.MODELS)
    train.add_argument("--size", type=int, default=416, help="network width and height (multiple of 32)")
    train.add_argument("--max-batches", type=int, help="iterations (default max(2000×classes, images, 6000))")
    train.add_argument("--batch", type=int, default=64)
    train.add_argument("--subdivisions", type=int, default=16)
    train.add_argument("--pretrained", help="a pretrained name (see weights download) or a weights file")
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
