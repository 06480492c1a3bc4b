"""A parsed log as pandas DataFrames, for charts (pandas and numpy are imported only when asked).

A run's log can hold several segments: ``resume`` appends a new darknet process to the same file
(run.json ``segments``, each with its ``log_offset``), and darknet restarts from the saved weights,
so iterations 101–104 of a run stopped at 104 with weights saved at 100 appear twice. The frames
take one :class:`ParsedLog` per segment (or one for the whole log) and merge them by iteration:
the later segment wins, so the rows of an earlier segment from the first iteration of a later one
on are dropped. A segment is also cut where the iteration does not grow (darknet restarted in a log
read as one piece), so a log without its offsets merges the same way.
"""
from __future__ import annotations

from array import array
from collections.abc import Sequence

from darknet_runner.logs.records import ITER_KEYS, ParsedLog


def _np(column: array):
    """A copy of an ``array`` column as a numpy array (through the buffer, no per-item work)."""
    import numpy as np

    return np.frombuffer(column, dtype=np.int64 if column.typecode == "q" else np.float64).copy()


def _segments(log: ParsedLog | Sequence[ParsedLog]) -> list[ParsedLog]:
    """One ParsedLog per segment; no segment at all reads as one empty log."""
    segments = [log] if isinstance(log, ParsedLog) else list(log)
    return segments or [ParsedLog()]


def _pieces(iteration, *, strict: bool):
    """Piece number of each row: a new piece starts where the iteration goes back (``strict``: also
    where it repeats). Rows with iteration -1 (still to come) stay in the piece before them."""
    import numpy as np

    known = iteration >= 0
    breaks = np.zeros(len(iteration), dtype=np.int64)
    values = iteration[known]
    if len(values) > 1:
        step = np.diff(values)
        breaks[np.flatnonzero(known)[1:]] = (step <= 0) if strict else (step < 0)
    return np.cumsum(breaks)


def _split(frame, ids) -> list:
    """``frame`` cut into its pieces (``ids`` from :func:`_pieces`); one piece is the frame itself."""
    if not len(frame) or ids[-1] == 0:
        return [frame]
    return [frame[ids == i] for i in range(int(ids[-1]) + 1)]


def _merge(pieces: list, last_open: bool):
    """Concatenate frames (log order), the later winning: rows of a piece at or after the first
    iteration of any later piece are dropped. Rows still waiting for their iteration (-1) are kept
    only in the last piece when ``last_open``."""
    import numpy as np
    import pandas as pd

    if len(pieces) == 1 and (last_open or (pieces[0]["iteration"] >= 0).all()):
        return pieces[0].reset_index(drop=True)  # one go: nothing to merge
    kept, cut = [], np.inf
    for index in range(len(pieces) - 1, -1, -1):
        piece = pieces[index]
        known = piece["iteration"] >= 0
        pending = ~known if (last_open and index == len(pieces) - 1) else np.zeros(len(piece), dtype=bool)
        kept.append(piece[(known & (piece["iteration"] < cut)) | pending])
        if known.any():
            cut = min(cut, piece.loc[known, "iteration"].min())
    return pd.concat(kept[::-1], ignore_index=True) if kept else None


def _iteration_pieces(log: ParsedLog | Sequence[ParsedLog]) -> list:
    import pandas as pd

    pieces = []
    for segment in _segments(log):
        c = segment.columns()
        frame = pd.DataFrame({k: _np(c[k]) for k in ITER_KEYS})
        ids = _pieces(frame["iteration"].to_numpy(), strict=True)
        pieces += _split(frame, ids)
    return pieces


def iterations_frame(log: ParsedLog | Sequence[ParsedLog]):
    """The iterations as a pandas DataFrame (one row per iteration; NaN/<NA> where not printed).

    Args:
        log: the whole log, or one ParsedLog per segment in log order (merged by iteration, the
            later segment winning; see the module docstring).
    """
    frame = _merge(_iteration_pieces(log), last_open=False)
    frame["images"] = frame["images"].astype("Int64").mask(frame["images"] < 0)
    return frame


def resume_points(log: ParsedLog | Sequence[ParsedLog]) -> list[int]:
    """The first iteration of every segment after the first that logged one (where training resumed),
    sorted and each once; [] for a run trained in one go."""
    starts = [int(piece["iteration"].iloc[0]) for piece in _iteration_pieces(log) if len(piece)]
    return sorted(set(starts[1:]))


def layers_frame(log: ParsedLog | Sequence[ParsedLog]):
    """The per-layer records as a pandas DataFrame (iteration <NA> while its line is still to come),
    merged by iteration like :func:`iterations_frame`."""
    import numpy as np
    import pandas as pd

    segments = _segments(log)
    pieces = []
    for number, segment in enumerate(segments):
        c = segment._layers_ready()
        iteration = np.full(segment.layer_count, -1, dtype=np.int64)
        iteration[:len(segment._lay_iteration)] = _np(segment._lay_iteration)
        frame = pd.DataFrame({"iteration": iteration, **{k: _np(c[k]) for k in c}})
        ids = _pieces(iteration, strict=False)
        parts = _split(frame, ids)
        if number < len(segments) - 1:  # an ended segment: a last iteration that never came is dropped
            parts = [part[part["iteration"] >= 0] for part in parts]
        pieces += parts
    frame = _merge(pieces, last_open=True)
    for key in ("iteration", "layer"):
        frame[key] = frame[key].astype("Int64").mask(frame[key] < 0)
    return frame
