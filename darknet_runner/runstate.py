"""A run's state, derived from its directory: the runner's files, /proc and the log (exit codes lie).

:func:`status` only reads: ``pid``, ``exit_code``, ``stopped``, run.json, /proc and the current
segment of ``train_log.txt``. The end of a run is written to run.json by the code that sees it
happen: the runner when darknet has exited (:func:`record_end`, before it writes ``exit_code``),
and ``stop``/``follow`` through :func:`finalize` (which also covers a runner that was killed).
"""
from __future__ import annotations

import calendar
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from darknet_runner import process, rundir
from darknet_runner.rundir import EXIT_NAME, LOG_NAME, PID_NAME, RUNNER_ERR, STOPPED_NAME
from darknet_runner.logs import ParsedLog, failure_reason, parse_tail

logger = logging.getLogger(__name__)
DISK_FULL_SIGNS = ("No space left on device", "[Errno 28]", "ENOSPC")

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


def _segment_began(run: dict) -> float | None:
    """When the current segment was started (epoch seconds), from run.json."""
    try:
        return calendar.timegm(time.strptime((run.get("segments") or [])[-1]["started"], "%Y-%m-%dT%H:%M:%SZ"))
    except (KeyError, IndexError, TypeError, ValueError, OverflowError):
        return None


def _disk_full(run_dir: Path, run: dict) -> str | None:
    """What says the disk of the run folder is (or was) full: the OS now, or an ENOSPC the runner saw
    in this segment (``runner.err`` written since it began)."""
    try:
        fs = os.statvfs(run_dir)
        if fs.f_blocks and fs.f_bavail == 0:
            return "the disk holding the run folder has no space left"
    except OSError:
        pass
    began = _segment_began(run)
    try:
        if began is not None and (run_dir / RUNNER_ERR).stat().st_mtime < began - 1:
            return None  # an old segment's complaint
        with open(run_dir / RUNNER_ERR, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 16384))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    return "the runner could not write its files (No space left on device)" if any(
        sign in tail for sign in DISK_FULL_SIGNS) else None


def _segment_weights(run_dir: Path, run: dict, log: ParsedLog) -> list[Path]:
    """The weights files this segment saved, oldest first: those the log names and those written since it
    began (on a full disk darknet's own ``Saving weights to`` line may be lost)."""
    found = {(run_dir / w["path"]) for w in log.weights}
    began = _segment_began(run)
    stamps = {}
    for path in {*found, *(rundir.RunDir(run_dir).saved_weights() if began is not None else [])}:
        try:
            stamps[path] = path.stat().st_mtime_ns
        except OSError:  # not there (any more)
            continue
    return sorted((p for p, ns in stamps.items() if p in found or ns >= (began - 1) * 1e9),
                  key=lambda p: (stamps[p], p.name))


def storage_reason(run_dir: str | os.PathLike, run: dict, code: int | None, log: ParsedLog) -> str | None:
    """Why an ended run failed for lack of disk space, or None.

    A weights file this segment saved that is not complete (its size is not what model.cfg implies:
    darknet ignores failed writes) is named; the OS (no space left now) or ENOSPC in ``runner.err``
    confirm it is the disk. Without a broken file, a runner that could not record the exit code on a
    full disk is the reason.
    """
    run_dir = Path(run_dir)
    broken = [problem for path in _segment_weights(run_dir, run, log)
              if (problem := rundir.RunDir(run_dir).weights_problem(path))]
    if not broken and code is not None:
        return None
    full = _disk_full(run_dir, run)
    if broken:
        return broken[-1].replace("(disk full?)", "(disk full)") if full else broken[-1]
    if full and code is None:
        return f"disk full: {full}, so darknet's end was not recorded"
    return None


def _ended_state(run_dir: Path, run: dict, code: int | None, log: ParsedLog) -> tuple[str, str | None]:
    if (run_dir / STOPPED_NAME).exists():
        return "stopped", None
    disk = storage_reason(run_dir, run, code, log)
    if disk:
        return "failed", disk
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
        try:
            rundir.RunDir(run_dir).update(**fields)
        except OSError as err:  # a full disk: the status stands, derived from the files again next time
            logger.warning("could not record the end of run %s in run.json: %s", run_dir.name, err)
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
