"""What a parse yields: :class:`ParsedLog`, records kept as compact typed columns, dicts built lazily.

Numbers arrive as text; the helpers here turn columns of them into ``array``s (NaN = not printed,
-1 = an integer not printed) and back into record values.
"""
from __future__ import annotations

import warnings
from array import array
from dataclasses import dataclass, field
from typing import Any

NAN = float("nan")

ITER_KEYS = ("iteration", "loss", "avg_loss", "rate", "seconds", "images", "hours_left")
LAYER_FLOAT_KEYS = ("iou", "class", "obj", "no_obj", "r50", "r75")
LAYER_LOSS_KEYS = ("class_loss", "iou_loss", "total_loss")
MAP_KEYS = ("iteration", "map50", "classes", "precision", "recall", "f1", "tp", "fp", "fn", "avg_iou", "new_best")


def _num(text: Any) -> float:
    """A darknet number as float: ``-nan``, ``1.#IND00`` (Windows) and missing become NaN."""
    if text is None:
        return NAN
    try:
        return float(text)
    except (TypeError, ValueError):
        return NAN


def _floats(column: tuple) -> array:
    """Convert one column of strings (``""``/None: not printed) to doubles, fast when all are clean."""
    if column.count("") + column.count(None) == len(column):
        return array("d", [NAN]) * len(column)
    try:
        return array("d", map(float, column))
    except (TypeError, ValueError):
        return array("d", map(_num, column))


def _ints(column: tuple) -> array:
    try:
        return array("q", map(int, column))
    except (TypeError, ValueError):
        return array("q", (int(v) if v is not None else -1 for v in column))


def _extend_modern_layers(c: dict[str, array], text: str) -> None:
    """Append rows of ``layer iou count class_loss iou_loss total_loss`` numbers (one text) to the columns."""
    import numpy as np

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (then stops) at a value it cannot read
            values = np.fromstring(text, sep=" ")
    except (ValueError, DeprecationWarning):
        values = np.array([_num(v) for v in text.split()])
    table = values.reshape(-1, 6)
    n = len(table)
    c["layer"].frombytes(table[:, 0].astype(np.int64).tobytes())
    c["iou"].frombytes(table[:, 1].tobytes())
    c["count"].frombytes(table[:, 2].astype(np.int64).tobytes())
    missing = array("d", [NAN]) * n
    for key in LAYER_FLOAT_KEYS[1:]:
        c[key].extend(missing)
    for key, col in zip(LAYER_LOSS_KEYS, (3, 4, 5)):
        c[key].frombytes(np.ascontiguousarray(table[:, col]).tobytes())


def _value(x: float) -> float | None:
    """A stored float as a record value: NaN means "not printed" → None."""
    return None if x != x else x


@dataclass
class ParsedLog:
    """Everything read from one log so far. Record lists are built lazily from compact columns.

    ``iterations``/``layers``/``map``/``weights``/``resizes``/``errors`` are lists of dicts (see
    :func:`darknet_runner.logs.as_json`); NaN-free except ``loss``/``avg_loss``, which keep a printed ``nan``.
    """

    fork: str | None = None
    max_batches: int | None = None
    map: list[dict] = field(default_factory=list)
    weights: list[dict] = field(default_factory=list)
    resizes: list[dict] = field(default_factory=list)
    _it: dict[str, array] = field(default_factory=lambda: {
        "iteration": array("q"), "loss": array("d"), "avg_loss": array("d"), "rate": array("d"),
        "seconds": array("d"), "images": array("q"), "hours_left": array("d")}, repr=False)
    _lay: dict[str, array] = field(default_factory=lambda: {
        "layer": array("q"), "count": array("q"), **{k: array("d") for k in LAYER_FLOAT_KEYS + LAYER_LOSS_KEYS}},
        repr=False)
    _lay_iteration: array = field(default_factory=lambda: array("q"), repr=False)
    # Rows of the modern AlexeyAB [yolo] line (layer iou count class_loss iou_loss total_loss) kept as
    # one text per feed and converted on first use: most full parses never look at them.
    _lay_pending: list[str] = field(default_factory=list, repr=False)
    _lay_pending_rows: int = field(default=0, repr=False)
    _errors: list[dict] = field(default_factory=list, repr=False)
    _iter_cache: list[dict] = field(default_factory=list, repr=False)
    _layer_cache: list[dict] = field(default_factory=list, repr=False)
    _layer_cache_resolved: int = field(default=0, repr=False)

    @property
    def iteration_count(self) -> int:
        """Number of iteration lines read."""
        return len(self._it["iteration"])

    @property
    def layer_count(self) -> int:
        """Number of per-layer lines read."""
        return len(self._lay["layer"]) + self._lay_pending_rows

    def _layers_ready(self) -> dict[str, array]:
        """The layer columns, converting the pending text first."""
        if self._lay_pending:
            texts, self._lay_pending, self._lay_pending_rows = self._lay_pending, [], 0
            for text in texts:
                _extend_modern_layers(self._lay, text)
        return self._lay

    @property
    def last_iteration(self) -> int | None:
        """The last iteration number printed, or None before the first one."""
        return self._it["iteration"][-1] if self._it["iteration"] else None

    def columns(self) -> dict[str, array]:
        """The iteration columns (``array``s, NaN = not printed, images -1 = not printed); read-only."""
        return self._it

    def iteration(self, i: int) -> dict:
        """The ``i``-th iteration record (negative counts from the end)."""
        c = self._it
        images = c["images"][i]
        return {"iteration": c["iteration"][i], "loss": c["loss"][i], "avg_loss": c["avg_loss"][i],
                "rate": _value(c["rate"][i]), "seconds": _value(c["seconds"][i]),
                "images": images if images >= 0 else None, "hours_left": _value(c["hours_left"][i])}

    @property
    def iterations(self) -> list[dict]:
        """Every iteration record (built once, then extended as the log grows)."""
        cache = self._iter_cache
        cache.extend(self.iteration(i) for i in range(len(cache), self.iteration_count))
        return cache

    def layer(self, i: int) -> dict:
        """The ``i``-th per-[yolo]/Region record; ``iteration`` is None until its iteration line arrives."""
        c = self._layers_ready()
        i = i + self.layer_count if i < 0 else i
        record = {"iteration": self._lay_iteration[i] if i < len(self._lay_iteration) else None,
                  "layer": c["layer"][i] if c["layer"][i] >= 0 else None}
        record.update((k, _value(c[k][i])) for k in LAYER_FLOAT_KEYS)
        record["count"] = c["count"][i]
        record.update((k, _value(c[k][i])) for k in LAYER_LOSS_KEYS)
        return record

    @property
    def layers(self) -> list[dict]:
        """Every per-layer record (see :meth:`layer`)."""
        cache = self._layer_cache
        del cache[self._layer_cache_resolved:]  # records built before their iteration was known
        cache.extend(self.layer(i) for i in range(len(cache), self.layer_count))
        self._layer_cache_resolved = len(self._lay_iteration)
        return cache

    def error_paths(self, kind: str) -> list[str]:
        """The files named by errors of ``kind`` in log order, each once (e.g. every image darknet could not load)."""
        return [e["path"] for e in self._errors if e["kind"] == kind and e.get("path")]

    def error_count(self, kind: str) -> int:
        """How many log lines were errors of ``kind``."""
        return sum(e["count"] for e in self._errors if e["kind"] == kind)

    @property
    def errors(self) -> list[dict]:
        """Errors in log order, each once: ``{line, kind, message, count, fatal}``."""
        return [{"line": e["line"], "kind": e["kind"], "message": e["message"], "count": e["count"],
                 "fatal": _is_fatal(e["fatal"], self.fork)} for e in self._errors]


def _is_fatal(rule: bool | frozenset, fork: str | None) -> bool:
    return rule if isinstance(rule, bool) else fork in rule
