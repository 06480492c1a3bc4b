"""A run's state, derived from its directory: the runner's files, /proc and the log (exit codes lie).

:func:`status` only reads: ``pid``, ``exit_code``, ``stopped``, run.json, /proc and the current
segment of ``train_log.txt``. The end of a run is written to run.json by the code that sees it
happen: the runner when darknet has exited (:func:`record_end`, before it writes ``exit_code``),
and ``stop``/``follow`` through :func:`finalize` (which also covers a runner that was killed).
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from darknet_runner import process, rundir
from darknet_runner.rundir import EXIT_NAME, LOG_NAME, PID_NAME, STOPPED_NAME
from darknet_runner.logs import ParsedLog, failure_reason, parse_tail

STATES = ("running", "finished", "failed", "stopped", "not-started")
ENDED = ("finished", "failed", "stopped")


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


def read_int(path: Path) -> int | None:
    """The integer in a one-line file (``pid``, ``exit_code``); None when it is missing or not a number."""
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _stamp(seconds: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def segment_offset(run: dict) -> int:
    """Where the current segment of the log starts (resume appends to the same file); 0 for the whole log."""
    try:
        segments = run.get("segments") or []
        return int(segments[-1]["log_offset"]) if segments else 0
    except (KeyError, IndexError, TypeError, ValueError):  # a hand-edited run.json: the whole log
        return 0


def _ended_at(run_dir: Path) -> str | None:
    try:
        return _stamp((run_dir / EXIT_NAME).stat().st_mtime)
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


def _ended_state(run_dir: Path, run: dict, code: int | None, log: ParsedLog) -> tuple[str, str | None]:
    if (run_dir / STOPPED_NAME).exists():
        return "stopped", None
    return _final_state(code, log.last_iteration, run.get("max_batches"), failure_reason(log))


def status(run_dir: str | os.PathLike, log: ParsedLog | None = None) -> RunStatus:
    """The run's state from its files, /proc and its log; reads only (see :func:`finalize` to record an end).

    Args:
        log: the current segment's log as the caller already follows it (a ``LogFollower`` started
            at :func:`segment_offset`), so nothing is read twice; by default its last bytes are parsed.
    """
    run_dir = Path(run_dir)
    run = rundir.RunDir(run_dir).load()
    pid, code = read_int(run_dir / PID_NAME), read_int(run_dir / EXIT_NAME)
    if log is None:
        log = parse_tail(run_dir / LOG_NAME, segment_offset(run))
    reason, ended = None, None
    if pid is None and code is None:
        state = "not-started"
    elif code is None and process.is_running(pid):
        state = "running"
    else:
        state, reason = _ended_state(run_dir, run, code, log)
        ended = run.get("ended") or _ended_at(run_dir)
    return RunStatus(state, pid, code, reason, log.last_iteration, run.get("max_batches"), run.get("started"), ended)


def _record(run_dir: Path, run: dict, current: RunStatus) -> RunStatus:
    """Write an ended run's status, reason, ended and exit_code to run.json unless it holds them already."""
    current = replace(current, ended=current.ended or _stamp())
    fields = {"status": current.state, "reason": current.reason, "ended": current.ended,
              "exit_code": current.exit_code}
    if any(run.get(key) != value for key, value in fields.items()):
        rundir.RunDir(run_dir).update(**fields)
    return current


def record_end(run_dir: str | os.PathLike, code: int | None) -> RunStatus:
    """Record in run.json that darknet exited with ``code``; the runner's last act before it writes ``exit_code``.

    So whoever sees the end through :func:`status` (which needs ``exit_code``) finds run.json up to date.
    """
    run_dir = Path(run_dir)
    run = rundir.RunDir(run_dir).load()
    log = parse_tail(run_dir / LOG_NAME, segment_offset(run))
    state, reason = _ended_state(run_dir, run, code, log)
    ended = RunStatus(state, read_int(run_dir / PID_NAME), code, reason, log.last_iteration, run.get("max_batches"),
                      run.get("started"), None)
    return _record(run_dir, run, ended)


def finalize(run_dir: str | os.PathLike, log: ParsedLog | None = None) -> RunStatus:
    """:func:`status`, and when the run has ended, the end recorded in run.json if it is not there yet.

    For those who watch a run end (``stop``, ``follow``): the runner records the end itself unless
    it was killed (SIGKILL, OOM killer); then the first of them to see the end records it.
    """
    current = status(run_dir, log)
    if current.state not in ENDED:
        return current
    return _record(Path(run_dir), rundir.RunDir(run_dir).load(), current)
