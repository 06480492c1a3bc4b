"""``python -m darknet_runner follow RUN``: a live one-line view of a training, for a terminal.

It wakes when the run directory changes (a ``watchdog`` Observer; a slow poll if that cannot
start), reads only the new bytes of ``train_log.txt`` (:class:`~darknet_runner.logs.LogFollower`),
takes the run's state from :func:`darknet_runner.runstate.status` with that same parsed log, and
ends when the run ends, with the final status and its reason (recorded in run.json if the runner
could not, :func:`~darknet_runner.runstate.finalize`). Stopping ``follow`` leaves the training alone.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from darknet_runner import rundir, runstate
from darknet_runner.logs import LogFollower, ParsedLog, alerts, log_alerts
from darknet_runner.rundir import EXIT_NAME, LOG_NAME, PID_NAME, STOPPED_NAME
from darknet_runner.runstate import RunStatus
from pipeline.workspace import Workspace

logger = logging.getLogger(__name__)

WATCHED = frozenset({LOG_NAME, EXIT_NAME, PID_NAME, STOPPED_NAME, rundir.RUN_JSON})
BAR_WIDTH = 24
ETA_WINDOW = 20        # iterations averaged for the ETA when the fork prints no "hours left"
COALESCE_S = 0.2       # stdbuf -oL writes line by line: draw once per burst of changes
WATCH_TIMEOUT_S = 5.0  # with watchdog: redraw at least this often (ETA, stall alert)
POLL_S = 2.0           # without watchdog


@dataclass
class Progress:
    """What the one-line view shows (plain values, so it is easy to test)."""

    iteration: int | None
    max_batches: int | None
    avg_loss: float | None
    last_map: tuple[int | None, float] | None
    eta_seconds: float | None
    alerts: list[dict]


def progress_of(parsed: ParsedLog, max_batches: int | None, found_alerts: list[dict]) -> Progress:
    """Summarise a parsed log for the view."""
    target = max_batches or parsed.max_batches
    last = parsed.iteration(-1) if parsed.iteration_count else None
    maps = [m for m in parsed.map if m["map50"] is not None]
    return Progress(last["iteration"] if last else None, target, last["avg_loss"] if last else None,
                    (maps[-1]["iteration"], maps[-1]["map50"]) if maps else None,
                    _eta_seconds(parsed, target), found_alerts)


def _eta_seconds(parsed: ParsedLog, target: int | None) -> float | None:
    """The fork's own "hours left" when it prints one, else recent seconds/iteration × what remains."""
    if not parsed.iteration_count or not target:
        return None
    last = parsed.iteration(-1)
    if last["hours_left"] is not None and last["hours_left"] >= 0:
        return last["hours_left"] * 3600
    seconds = [s for s in parsed.columns()["seconds"][-ETA_WINDOW:] if s == s]
    if not seconds:
        return None
    return max(target - last["iteration"], 0) * sum(seconds) / len(seconds)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def render(p: Progress, width: int = BAR_WIDTH) -> str:
    """The one line: ``[#####-----] 42/120  35%  avg 1.2345  mAP 66.42% @100  ETA 0:00:25  ! …``."""
    parts = []
    if p.iteration is not None and p.max_batches:
        done = min(p.iteration / p.max_batches, 1.0)
        filled = int(done * width)
        parts.append(f"[{'#' * filled}{'-' * (width - filled)}] {p.iteration}/{p.max_batches} {done * 100:3.0f}%")
    else:
        parts.append(f"iteration {p.iteration if p.iteration is not None else '-'}"
                     + (f"/{p.max_batches}" if p.max_batches else ""))
    if p.avg_loss is not None:
        parts.append(f"avg loss {p.avg_loss:.4f}")
    if p.last_map is not None:
        parts.append(f"mAP@0.5 {p.last_map[1] * 100:.2f}% @{p.last_map[0]}")
    if p.eta_seconds is not None:
        parts.append(f"ETA {_duration(p.eta_seconds)}")
    parts += [f"! {a['message']}" for a in p.alerts]
    return "  ".join(parts)


class _Screen:
    """One line rewritten in place on a terminal; a new line per change otherwise (logs, pipes)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.last = None

    def show(self, line: str) -> None:
        """Draw ``line`` unless it is what is already shown."""
        if line == self.last:
            return
        self.last = line
        if self.tty:  # a wrapped line could not be rewritten with \r: cut it to the terminal's width
            width = shutil.get_terminal_size().columns - 1
            self.out.write(f"\r{line[:width]}\x1b[K")
        else:
            self.out.write(f"{line}\n")
        self.out.flush()

    def end(self, line: str) -> None:
        """Leave the progress line and print the final status."""
        self.out.write(("\n" if self.tty and self.last is not None else "") + line + "\n")
        self.out.flush()


def _watch(run_dir: Path, wake: threading.Event):
    """A started watchdog Observer that sets ``wake`` when a run file changes; None if it cannot run."""
    try:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
    except ImportError:
        return None

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event):  # noqa: D401 - watchdog's callback
            names = {Path(getattr(event, "src_path", "")).name, Path(getattr(event, "dest_path", "") or "").name}
            if names & WATCHED:
                wake.set()

    observer = Observer()
    try:
        observer.schedule(Handler(), str(run_dir), recursive=False)
        observer.start()
    except OSError as err:  # inotify limits, unsupported file systems
        logger.debug("watchdog unavailable (%s); polling", err)
        return None
    return observer


def follow(run_dir: str | Path, out: TextIO | None = None, *, stall_seconds: float = 120,
           start_timeout: float = 30, poll_s: float | None = None) -> RunStatus:
    """Show the run's progress until it ends; return its final status.

    Args:
        run_dir: the run directory.
        out: where the view goes (default stdout).
        stall_seconds: alert when no new iteration came for this long while darknet runs.
        start_timeout: how long to wait for a run that has not started yet.
        poll_s: redraw at least this often (default 5 s with watchdog, 2 s without).
    """
    run_dir = Path(run_dir)
    screen = _Screen(out or sys.stdout)
    follower = LogFollower(run_dir / LOG_NAME, offset=runstate.segment_offset(rundir.RunDir(run_dir).load()))
    wake = threading.Event()
    observer = _watch(run_dir, wake)
    timeout = poll_s or (WATCH_TIMEOUT_S if observer else POLL_S)
    began, last_growth = time.time(), None
    try:
        while True:
            if follower.refresh():
                last_growth = time.time()
            current = runstate.status(run_dir, follower.log)
            running = current.state == "running"
            found = alerts(follower.log, now=time.time(), last_growth=last_growth or began, process_alive=running,
                           max_batches=current.max_batches, stall_seconds=stall_seconds) if running else []
            screen.show(render(progress_of(follower.log, current.max_batches, found)))
            if not running and (current.state != "not-started" or time.time() - began > start_timeout):
                break
            wake.wait(timeout)
            time.sleep(COALESCE_S)
            wake.clear()
    finally:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
    follower.finish()
    current = runstate.finalize(run_dir, follower.log)  # the whole log now: its last line may hold the reason
    _finale(screen, follower.log, current)
    return current


def _finale(screen: _Screen, parsed: ParsedLog, current: RunStatus) -> None:
    # The final status says why it ended; only what the log itself shows (NaN, rising loss) stays.
    screen.show(render(progress_of(parsed, current.max_batches, log_alerts(parsed))))
    if current.state == "not-started":
        screen.end("not-started: the run has not been launched (start it with `train` or `resume`)")
    else:
        screen.end(f"{current.state}" + (f": {current.reason}" if current.reason else ""))


def _cmd_follow(args: argparse.Namespace) -> int:
    ws = Workspace.open(getattr(args, "workspace", None), create=False)
    run_dir = rundir.open_run(ws, args.run).path
    try:
        final = follow(run_dir, stall_seconds=args.stall_seconds, start_timeout=args.start_timeout)
    except KeyboardInterrupt:
        print("\nstopped following; the training goes on", file=sys.stderr)
        return 130
    return 0 if final.state == "finished" else 1


def register(subparsers) -> None:
    """Add ``follow RUN``."""
    p = subparsers.add_parser("follow", help="watch a training live in the terminal until it ends")
    p.add_argument("run", help="run id (under <workspace>/runs) or run folder")
    p.add_argument("--stall-seconds", type=float, default=120, help="alert after this long without an iteration")
    p.add_argument("--start-timeout", type=float, default=30, help="wait this long for a run not started yet")
    p.set_defaults(func=_cmd_follow)
