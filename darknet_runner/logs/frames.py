"""A parsed log as pandas DataFrames, for charts (pandas and numpy are imported only when asked)."""
from __future__ import annotations

from array import array

from darknet_runner.logs.records import ITER_KEYS, ParsedLog


def _np(column: array):
    """A copy of an ``array`` column as a numpy array (through the buffer, no per-item work)."""
    import numpy as np

    return np.frombuffer(column, dtype=np.int64 if column.typecode == "q" else np.float64).copy()


def iterations_frame(log: ParsedLog):
    """The iterations as a pandas DataFrame (one row per iteration; NaN/<NA> where not printed)."""
    import pandas as pd

    c = log.columns()
    frame = pd.DataFrame({k: _np(c[k]) for k in ITER_KEYS})
    frame["images"] = frame["images"].astype("Int64").mask(frame["images"] < 0)
    return frame


def layers_frame(log: ParsedLog):
    """The per-layer records as a pandas DataFrame (iteration <NA> while its line is still to come)."""
    import numpy as np
    import pandas as pd

    c = log._layers_ready()
    iteration = np.full(log.layer_count, -1, dtype=np.int64)
    iteration[:len(log._lay_iteration)] = _np(log._lay_iteration)
    frame = pd.DataFrame({"iteration": iteration, **{k: _np(c[k]) for k in c}})
    for key in ("iteration", "layer"):
        frame[key] = frame[key].astype("Int64").mask(frame[key] < 0)
    return frame
