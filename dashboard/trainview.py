"""Numbers the Train page shows next to its charts (pure: frames and files in, values out)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from darknet_runner.logs import strip_ansi

RECENT = 20  # iterations used for speed and ETA (recent ones: the speed changes after burn-in)
TAIL_BYTES = 16_384


def progress_stats(iterations: pd.DataFrame, max_batches: int | None) -> dict:
    """Iteration, fraction done, seconds per iteration, images per second and ETA in seconds.

    ETA uses darknet's own ``hours left`` when the fork prints one, else recent speed × iterations left.
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
    eta = _eta(recent, last, max_batches, seconds)
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
