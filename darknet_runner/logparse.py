"""darknet's training log, parsed incrementally for every fork (pjreddie, AlexeyAB, hank-ai).

The log is ``stdbuf -oL -eL darknet … 2>&1`` written to ``train_log.txt`` (facts/darknet.md §1–7,
§10). :class:`LogParser` is pure: ``feed(bytes)`` takes any slice of the file, keeps a partial last
line until its end arrives, strips ANSI CSI/OSC sequences and BEL, splits on ``\\r`` as well as
``\\n`` and appends records. :class:`LogFollower` adds a byte offset so one refresh reads only the
new bytes, whatever the file's size.

Speed matters (a 200k-iteration log is >100 MB). The dominant lines (AlexeyAB iteration and [yolo]
lines) are recognised by a substring test and collected; at the end of a feed one ``findall`` per
kind reads all of them (a count check falls back to line-by-line) and the numbers go column-wise
into ``array`` columns. Today's [yolo] rows stay text until first used, and dicts are built only
when asked. Every other line goes through :meth:`LogParser._dispatch`, a table of substring tests.

Line numbers in errors count ``\\n`` only (what ``grep -n`` and editors show).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import warnings
from array import array
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NAN = float("nan")
READ_CHUNK = 16 << 20  # bytes read at once by parse_file / a first refresh on a big log

# -- preprocessing (facts §7) -------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]?|\x07")
HANK_OSC_TITLE = re.compile(r"\x1b\]2;\d+/(\d+):")

# -- hot-path patterns: numbers as "anything up to a comma", validated by float() later ----------
ITER_CLASSIC = re.compile(  # pjreddie + AlexeyAB, all years
    r"\s*(\d+): +([^,\s]+), +([^,\s]+) avg(?: loss)?, +([^,\s]+) rate, +([^,\s]+) seconds,"
    r" +(\d+) images(?:, +([^,\s]+) (?:hours|time) left)?\s*$")
ITER_CLASSIC_ALL = re.compile(  # the same over a feed's iteration lines joined by \n
    r"^[ \t]*(\d+): +([^,\s]+), +([^,\s]+) avg(?: loss)?, +([^,\s]+) rate, +([^,\s]+) seconds,"
    r" +(\d+) images(?:, +([^,\s]+) (?:hours|time) left)?[ \t\r]*$", re.M)
LAYER_V3_PATTERN = (  # AlexeyAB 2019-06 → now, hank -verbose; never crosses a newline
    r"v3 \(?\w+ loss, Normalizer: \(iou: [^,\n]*, (?:obj: [^,\n]*, )?cls: [^)\n]*\) Region (\d+)"
    r" Avg \(IOU: ([^,)\n]*)(?:, GIOU: [^)\n]*)?\),(?: Class: ([^,\n]*), Obj: ([^,\n]*), No Obj: ([^,\n]*),"
    r" \.5R: ([^,\n]*), \.75R: ([^,\n]*),)? count: (\d+)(?:, loss = ([^,\s]*))?"
    r"(?:, class_loss ?[:=] ?([^,\s]*), iou_loss ?[:=] ?([^,\s]*))?(?:, total_loss ?[:=] ?([^,\s]*))?[ \t\r]*$")
LAYER_V3 = re.compile(LAYER_V3_PATTERN)
LAYER_V3_ALL = re.compile("^" + LAYER_V3_PATTERN, re.M)  # findall over a feed's layer lines joined by \n
LAYER_V3_NOW = re.compile(  # AlexeyAB 2020-12 → now, on lines known to start with "v3 ": few groups and a
    # literal start (") Region "), so the regex engine skips most of each line; much faster in bulk
    r"\) Region (\d+) Avg \(IOU: ([^,)\n]*)\), count: (\d+), class_loss = ([^,\s]*), iou_loss = ([^,\s]*), "
    r"total_loss = ([^,\s]*)[ \t\r]*$", re.M)
REGION_V3_OLD = re.compile(  # pjreddie, AlexeyAB ≤ 2019-05
    r"Region (\d+) Avg IOU: ([^,]+), Class: ([^,]+), Obj: ([^,]+), No Obj: ([^,]+), \.5R: ([^,]+),"
    r" \.75R: ([^,]+),\s+count: (\d+)\s*$")
REGION_V2 = re.compile(
    r"Region Avg IOU: ([^,]+), Class: ([^,]+), Obj: ([^,]+), No Obj: ([^,]+), Avg Recall: ([^,]+),"
    r"\s+count: (\d+)\s*$")

# -- rarer lines: the facts' regexes ---------------------------------------------------------------
NUM = r"[-+]?(?:nan|inf|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+|1\.#(?:IND|QNAN|INF)0*)"
ITER_HANK = re.compile(
    r"\s*(?P<it>\d+): loss=(?P<loss>NUM), avg loss=(?P<avg>NUM),(?: last=(?:none|NUM%), "
    r"best=(?:none|NUM%), (?:next|mAP)=(?:\d+|DISABLED),)? rate=(?P<rate>NUM), (?:load \d+=[^,]+, "
    r"train=(?P<train>[^,]+)|(?P<t>[^,]+)), (?P<imgs>\d+) images, time remaining=(?P<left>.+?)\s*$"
    .replace("NUM", NUM))
TITLE = re.compile(r"(?:^|\s)(\d+)/(\d+): loss=" + NUM + r"(?: map=" + NUM + " best=" + NUM + r")? (?:hours left|time)=")
DURATION = re.compile(r"(" + NUM + r") ?(microsecond|millisecond|second|minute|hour|day)s?\b")
DURATION_HOURS = {"microsecond": 1 / 3.6e9, "millisecond": 1 / 3.6e6, "second": 1 / 3600,
                  "minute": 1 / 60, "hour": 1.0, "day": 24.0}
MAP_CLASS = re.compile(r"class(?:_id)? = (\d+), name = (.*?),.*?\bap = (" + NUM + r") ?%"
                       r"(?:.*?\(TP = (\d+), FP = (\d+)\))?")
MAP_HANK_ROW = re.compile(r"\s*(\d+) (.+?)\s+(" + NUM + r")\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(" + NUM
                          + r")\s+(" + NUM + r")\s*$")
MAP_PRF = re.compile(r"for (?:conf_)?thresh ?= ?" + NUM + r", precision ?= ?(" + NUM + r"), recall ?= ?("
                     + NUM + r"), F1[- ]score ?= ?(" + NUM + ")")
MAP_TPFP = re.compile(r"for (?:conf_)?thresh ?= ?" + NUM + r", TP ?= ?(\d+), FP ?= ?(\d+), FN ?= ?(\d+),"
                      r" average IoU ?= ?(" + NUM + ") ?%")
MAP_MEAN = re.compile(r"mean average precision \(mAP(?:@(" + NUM + r"))?\) ?= ?(" + NUM + r")(?:, or ("
                      + NUM + r") %| ?%)")
MAP_TRAIN = re.compile(r"mean_average_precision(?: \(mAP(?:@(" + NUM + r"))?\))? = (" + NUM + ")")
SAVING = re.compile(r"Saving weights to (.+?)\s*$")
WEIGHTS_ITER = re.compile(r"_(\d+)\.weights$")
RESIZE = re.compile(r"Resizing(?:, random_coef ?= ?" + NUM + r")?(?:, batch=\d+, (\d+)x(\d+))?\s*$")
RESIZE_TO = re.compile(r"Resizing to initial size: (\d+) x (\d+)")
RESIZE_DIMS = re.compile(r"\s*(\d+) x (\d+)\s*(?:\(batch = \d+\))?\s*$|(\d{2,4})$")
MAX_LIMIT = re.compile(r"max batch limit of (\d+)")

# Lines that are frequent and never a record: skipped before the dispatch table.
SKIP_PREFIXES = (" total_bbox", "total_bbox", "Loaded: ", " Detection layer", "   layer",
                 "Loading weights from", " seen ", "Done!")
STDERR_LINE_PREFIXES = ("Saving weights to", "Loading weights from")

# -- fork detection: strong markers decide, weak ones only guess -----------------------------------
STRONG_MARKERS = (("Darknet V", "hank"), ("Darknet is compiled to use", "hank"), ("* Error message:", "hank"),
                  ("Calculating mAP (mean average precision) with", "hank"), ("GPU isn't used", "alexeyab"),
                  ("OpenCV isn't used", "alexeyab"), ("Darknet error location", "alexeyab"),
                  ("calculation mAP (mean average precision)", "alexeyab"), ("avg_outputs = ", "alexeyab"),
                  ("permanent cpu-threads", "alexeyab"), ("mini_batch = ", "alexeyab"))
WEAK_MARKERS = (("BFLOPs", "pjreddie"), ("darknet: ./src/", "pjreddie"))

# -- errors: (needle, kind, fatal, how to read the detail) — first match wins ---------------------
# fatal is True/False, or the set of forks where the run stops there (AlexeyAB carries on with a
# blank image, pjreddie exits 0 — exit codes lie, facts §6).
MESSAGES = {
    "cuda_oom": "The GPU ran out of memory: raise subdivisions in the cfg (16 → 32 or 64), or lower "
                "width/height or batch.",
    "filters_mismatch": "filters= in the [convolutional] layer before a [yolo] layer does not match classes: "
                        "set it to (classes + 5) × 3 (18 for one class).",
    "missing_label": "Label file {path} is missing: write it next to its image (run prepare again) or drop the "
                     "image from the list.",
    "missing_image": "Image {path} could not be loaded: check that it exists and is a readable JPEG, or drop it "
                     "from the list.",
    "missing_file": "darknet could not open {path}: check the paths in obj.data and the list files (relative to "
                    "the run folder, no spaces).",
    "wrong_annotation": "Wrong annotation in {path}: {detail}; class ids must be below classes and coordinates "
                        "within 0..1.",
    "nan": "The loss became NaN at iteration {path}: training diverged; lower learning_rate, lengthen burn_in or "
           "check the labels.",
    "crash": "darknet crashed ({detail}).",
    "config": "The cfg cannot train: {detail}.",
    "cuda": "CUDA error ({detail}): check the GPU driver and the -gpus list.",
    "fatal": "darknet stopped with an error: {detail}.",
}
ERROR_RULES = (
    ("l.outputs == params.inputs", "filters_mismatch", True, None),
    ("does not match either the classes or the mask", "filters_mismatch", True, None),
    ("out of memory", "cuda_oom", True, None),
    ("CUDA memory allocation failed", "cuda_oom", True, None),
    ("Try to set subdivisions", "cuda_oom", True, None),
    ("try to set subdivisions", "cuda_oom", True, None),
    ("used slow CUDNN algo without Workspace", "cuda_oom", False, None),  # a warning: it goes on, slower
    ("CUDA Error", "cuda", True, re.compile(r"CUDA Error:?\s*(.+)")),
    ("CUDA status Error", "cuda", True, re.compile(r"(CUDA status Error.*)")),
    ("Couldn't open file: ", "open", True, re.compile(r"Couldn't open file: (.+?)\s*$")),
    ("Can't open label file", "missing_label", False, re.compile(r"Can't open label file\..*?: (\S.*?)\s*$")),
    ("failed to open annotation file", "missing_label", True, re.compile(r'annotation file "?([^"]+?)"?\s*$')),
    ("unexpected error while reading annotations from", "missing_label", False,
     re.compile(r"annotations from (.+?)\s*$")),
    ("Failed to infer label file name", "missing_label", False, re.compile(r"supported\)?: ?(.+?)\s*$")),
    ("Cannot load image", "missing_image", frozenset({"pjreddie", None}), re.compile(r'Cannot load image "([^"]+)"')),
    ("failed to load image file", "missing_image", True, re.compile(r'image file "?([^"]+?)"?\s*$')),
    ("Wrong annotation: ", "wrong_annotation", False, re.compile(r"Wrong annotation: (.*?),? file: (.+?)\s*$")),
    ("Warning: in txt-labels class_id", "wrong_annotation", False, re.compile(r"(class_id.*?)\s*$")),
    ("invalid class ID", "wrong_annotation", True, re.compile(r"(invalid class ID \S+) in (.+?)\s*$")),
    ("invalid coordinate in", "wrong_annotation", True, re.compile(r"(invalid coordinate) in (.+?)\s*$")),
    ("file for mAP calculation", "missing_file", True, re.compile(r"There is no (.+?) file for mAP")),
    ("incorrect value batch=", "config", True, re.compile(r"(You set incorrect value batch=\S+ for Training)")),
    ("batch size should not be set to 1", "config", True, re.compile(r"(batch size should not be set to 1)")),
    ("compile Darknet with OpenCV for using mosaic", "config", True, re.compile(r"(mosaic=1) - compile")),
    ("double free or corruption", "crash", True, re.compile(r"(double free or corruption.*?)\s*$")),
    ("Segmentation fault", "crash", True, re.compile(r"(Segmentation fault)")),
    ("core dumped", "crash", True, re.compile(r"(\w[^()]*core dumped)")),
    ("free(): invalid", "crash", True, re.compile(r"(free\(\): invalid.*?)\s*$")),
    ("Assertion `", "crash", True, re.compile(r"Assertion `(.*)' failed")),
)
ALPHABET_PNG = "data/labels/"  # AlexeyAB `detector test` looks for its font here; harmless (facts §9)
FATAL_KIND_ORDER = ("cuda_oom", "filters_mismatch", "missing_file", "missing_label", "missing_image",
                    "wrong_annotation", "config", "cuda", "nan", "crash", "fatal")

ITER_KEYS = ("iteration", "loss", "avg_loss", "rate", "seconds", "images", "hours_left")
LAYER_FLOAT_KEYS = ("iou", "class", "obj", "no_obj", "r50", "r75")
LAYER_LOSS_KEYS = ("class_loss", "iou_loss", "total_loss")
MAP_KEYS = ("iteration", "map50", "classes", "precision", "recall", "f1", "tp", "fp", "fn", "avg_iou", "new_best")


def _plain(line: str) -> str:
    """``line`` without ANSI CSI/OSC sequences and BEL (colour codes, clear-screen, window title)."""
    if "\x1b" in line:
        line = ANSI.sub("", line)
    return line.replace("\x07", "") if "\x07" in line else line


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


def _layer_row(line: str) -> tuple | None:
    """One per-layer line as ``(layer, iou, class, obj, no_obj, r50, r75, count, loss_old, class_loss,
    iou_loss, total_loss)`` text, whatever its format; None if it is not one."""
    m = LAYER_V3.match(line)
    if m:
        return m.groups("")
    m = REGION_V3_OLD.match(line)
    if m:
        return m.groups() + ("", "", "", "")
    m = REGION_V2.match(line)
    if m:
        iou, cls, obj, noobj, recall, count = m.groups()
        return ("-1", iou, cls, obj, noobj, recall, "", count, "", "", "", "")
    return None


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


def _hours(text: str | None) -> float:
    """hank's ``time remaining=…`` / ``train=…`` durations (``119 seconds``, ``287.6 milliseconds``) in hours."""
    m = DURATION.search(text or "")
    return float(m.group(1)) * DURATION_HOURS[m.group(2)] if m else NAN


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the result is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class ParsedLog:
    """Everything read from one log so far. Record lists are built lazily from compact columns.

    ``iterations``/``layers``/``map``/``weights``/``resizes``/``errors`` are lists of dicts (see
    :meth:`to_dict`); NaN-free except ``loss``/``avg_loss``, which keep a printed ``nan``.
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

    @property
    def errors(self) -> list[dict]:
        """Errors in log order, each once: ``{line, kind, message, count, fatal}``."""
        return [{"line": e["line"], "kind": e["kind"], "message": e["message"], "count": e["count"],
                 "fatal": _is_fatal(e["fatal"], self.fork)} for e in self._errors]

    def to_dict(self, alerts: list[dict] | None = None) -> dict:
        """The JSON object of ``parse-log --json``; NaN/inf become null. Alerts default to the log-only ones."""
        if alerts is None:
            alerts = log_alerts(self)
        return _finite({"fork": self.fork, "iterations": self.iterations, "layers": self.layers,
                        "map": self.map, "weights": self.weights, "errors": self.errors, "alerts": alerts})


def _is_fatal(rule: bool | frozenset, fork: str | None) -> bool:
    return rule if isinstance(rule, bool) else fork in rule


class LogParser:
    """Incremental, pure parser: ``feed(bytes)`` any slice of a log, read records from ``.log``."""

    def __init__(self) -> None:
        self.log = ParsedLog()
        self._tail = b""          # bytes after the last \n: a line still being written
        self._lines = 0           # \n-terminated lines consumed
        self._splice: str | None = None   # stdout text cut by a stderr line (facts §10)
        self._raw_iters: list = []  # this feed's iterations: AlexeyAB lines (str) or parsed tuples
        self._iters_mixed = False   # tuples among them (no bulk regex then)
        self._marks: list[int] = []        # per raw iteration: layer lines of this feed before it
        self._layer_lines: list[str] = []  # this feed's per-layer lines, parsed in bulk at its end
        self._layers_mixed = False         # Region lines among them (no bulk v3 regex then)
        self._map_open: dict | None = None
        self._hank_table = False
        self._resize_pending = False
        self._after_error_location = False
        self._strong_fork = False
        self._max_tag: str | None = None
        self._seen_errors: dict[tuple, dict] = {}
        self._nan_reported = False

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, data: bytes) -> int:
        """Parse ``data`` (the next bytes of the log); return the number of new iteration records."""
        before = self.log.iteration_count
        buf = self._tail + data if self._tail else data
        cut = buf.rfind(b"\n") + 1
        self._tail = buf[cut:]
        if cut:
            self._parse_text(buf[:cut].decode("utf-8", "replace"))
        return self.log.iteration_count - before

    def finish(self) -> int:
        """The log is complete (process ended): parse a last line that has no newline."""
        before = self.log.iteration_count
        if self._tail:
            tail, self._tail = self._tail, b""
            self._parse_text(tail.decode("utf-8", "replace") + "\n")
        if self._splice:
            splice, self._splice = self._splice, None
            self._parse_lines([splice], self._lines)
            self._convert()
        return self.log.iteration_count - before

    def _parse_text(self, text: str) -> None:
        if self.log.max_batches is None and "\x1b]2;" in text:  # hank's title, stripped below
            m = HANK_OSC_TITLE.search(text)
            if m:
                self.log.max_batches = int(m.group(1))
        lines = text.split("\n")
        lines.pop()  # text ends with \n: the last element is empty
        first = self._lines
        self._lines += len(lines)
        self._parse_lines(lines, first)
        self._convert()

    def _parse_lines(self, lines: list[str], lineno: int) -> None:
        """The hot loop: cheap tests for the dominant lines, the dispatch table for the rest."""
        layer_lines, raw_iters, marks = self._layer_lines, self._raw_iters, self._marks
        iter_match = ITER_CLASSIC.match
        splice, max_tag = self._splice, self._max_tag
        for line in lines:
            lineno += 1
            if not line:
                continue
            if splice is not None and not line.startswith(STDERR_LINE_PREFIXES):
                line, splice = splice + line, None
            if line.startswith("v3 "):
                layer_lines.append(line)  # stderr, written whole: validated in bulk by _layer_rows
                continue
            if " avg" in line:
                if " avg loss, " in line:  # AlexeyAB: validated in bulk by _iteration_rows
                    raw_iters.append(line)
                    marks.append(len(layer_lines))
                    if not self._strong_fork:
                        self._set_fork("alexeyab", strong=True)
                    continue
                if "avg loss=" not in line and (m := iter_match(line)):
                    self._iteration(m.groups())
                    if not self._strong_fork:
                        self._detect_classic(line)
                    continue
            elif (max_tag is not None and max_tag in line) or (
                    line.startswith(SKIP_PREFIXES) and "\r" not in line):
                continue
            pending = self._dispatch_pieces(line, lineno)
            if pending is not None:
                splice = pending
            max_tag = self._max_tag
        self._splice = splice

    def _iteration(self, groups: tuple) -> None:
        """Record one iteration found off the hot path (numbers as text or floats)."""
        self._raw_iters.append(groups)
        self._marks.append(len(self._layer_lines))
        self._iters_mixed = True

    def _current_iteration(self) -> int | None:
        """The last iteration seen so far (this feed's included): mAP, weights and resizes belong to it."""
        if not self._raw_iters:
            return self.log.last_iteration
        last = self._raw_iters[-1]
        return int(last.split(":", 1)[0]) if isinstance(last, str) else int(last[0])

    def _iteration_rows(self) -> list[tuple]:
        """This feed's iterations as text tuples: one regex over all AlexeyAB lines, else one by one."""
        items, self._raw_iters = self._raw_iters, []
        if not self._iters_mixed:
            rows = ITER_CLASSIC_ALL.findall("\n".join(items))
            if len(rows) == len(items):
                return rows
        if not self._iters_mixed:
            logger.debug("%d iteration lines with a stranger among them: parsed one by one", len(items))
        self._iters_mixed = False
        rows, marks = [], []
        for item, mark in zip(items, self._marks):
            m = ITER_CLASSIC.match(_plain(item)) if isinstance(item, str) else None
            if m is not None or not isinstance(item, str):
                rows.append(m.groups() if m else item)
                marks.append(mark)
        self._marks = marks  # an "avg loss, " line that is no iteration line (a splice) is dropped
        return rows

    def _detect_classic(self, line: str) -> None:
        """``avg loss,`` is AlexeyAB (2018-05 on); a bare ``avg,`` is pjreddie or AlexeyAB of early 2018."""
        if " avg loss," in line:
            self._set_fork("alexeyab", strong=True)
        else:
            self._set_fork("pjreddie", strong=False)

    def _convert(self) -> None:
        """Move this feed's text numbers into the typed columns, column by column."""
        rows, kept = self._layer_rows()
        if self._raw_iters:
            cols = list(zip(*self._iteration_rows()))
            c = self.log._it
            new_its = _ints(cols[0]) if cols else array("q")
            c["iteration"].extend(new_its)
            for key, col in zip(("loss", "avg_loss", "rate", "seconds"), cols[1:5]):
                c[key].extend(_floats(col))
            if cols:
                c["images"].extend(_ints(cols[5]))
                c["hours_left"].extend(_floats(cols[6]))
                self._check_nan(len(new_its))
            self._assign_layer_iterations(new_its, kept, self._marks)
        self._marks = []
        if rows:
            self._convert_layers(rows)

    def _layer_rows(self) -> tuple[list[tuple], list[int] | None]:
        """Parse this feed's layer lines: one regex over all of them, or line by line when mixed.

        Returns the rows and, if some lines were dropped, ``kept[i]`` = rows among the first i lines.
        """
        lines = self._layer_lines
        if not lines:
            return [], None
        self._layer_lines = []
        if not self._layers_mixed:
            text = "\n".join(lines)
            for pattern in (LAYER_V3_NOW, LAYER_V3_ALL):
                rows = pattern.findall(text)
                if len(rows) == len(lines):
                    return rows, None
        if not self._layers_mixed:
            logger.debug("%d [yolo] lines of an older format: parsed one by one", len(lines))
        self._layers_mixed = False
        rows, kept = [], [0]
        for line in lines:
            row = _layer_row(_plain(line))
            if row is not None:
                rows.append(row)
            kept.append(len(rows))
        return rows, kept

    def _assign_layer_iterations(self, new_its: array, kept: list[int] | None, marks: list[int]) -> None:
        """Layer lines belong to the next iteration line (darknet prints them while training it)."""
        import numpy as np

        lay_it = self.log._lay_iteration
        if not new_its:
            return
        seen = np.array(marks if kept is None else [kept[m] for m in marks], dtype=np.int64)
        targets = np.concatenate(([len(lay_it)], self.log.layer_count + seen))
        counts = np.maximum(np.diff(targets), 0)  # layers before each iteration line, not yet assigned
        lay_it.frombytes(np.repeat(np.frombuffer(new_its, dtype=np.int64), counts).tobytes())

    def _convert_layers(self, rows: list[tuple]) -> None:
        if len(rows[0]) == 6:  # LAYER_V3_NOW: converted on first use
            self.log._lay_pending.append(" ".join(chain.from_iterable(rows)))
            self.log._lay_pending_rows += len(rows)
            return
        cols = list(zip(*rows))
        c = self.log._layers_ready()
        c["layer"].extend(_ints(cols[0]))
        for key, col in zip(LAYER_FLOAT_KEYS, cols[1:7]):
            c[key].extend(_floats(col))
        c["count"].extend(_ints(cols[7]))
        total = cols[11]
        if total.count("") or total.count(None):  # AlexeyAB 2019-12 printed it as ", loss = %f"
            total = tuple(t or old for t, old in zip(total, cols[8]))
        for key, col in zip(LAYER_LOSS_KEYS, (cols[9], cols[10], total)):
            c[key].extend(_floats(col))

    def _check_nan(self, new: int) -> None:
        """Report the first non-finite loss once, as an error (the run has diverged)."""
        c = self.log._it
        if self._nan_reported or math.isfinite(sum(c["loss"][-new:]) + sum(c["avg_loss"][-new:])):
            return
        for i in range(len(c["loss"]) - new, len(c["loss"])):
            if not (math.isfinite(c["loss"][i]) and math.isfinite(c["avg_loss"][i])):
                self._nan_reported = True
                self._add_error(None, "nan", True, path=str(c["iteration"][i]))
                return

    # -- the rarer lines -------------------------------------------------------------------------
    def _dispatch_pieces(self, line: str, lineno: int) -> str | None:
        """Handle one physical line off the hot path: strip ANSI/BEL, split on \\r, parse each piece.

        Returns stdout text cut short by a stderr line (to be joined to the next line), or None.
        ANSI is stripped here, line by line, because the hot lines never carry any (AlexeyAB's
        clear-screen + title + BEL sit on their own line, skipped once max_batches is known).
        """
        if "\x1b" in line or "\x07" in line:
            line = _plain(line)
        pending = None
        for piece in line.split("\r") if "\r" in line else (line,):
            if pending is not None and piece and not piece.startswith(STDERR_LINE_PREFIXES):
                piece, pending = pending + piece, None
            if piece.strip():
                got = self._reparse(piece, lineno)
                pending = got if got is not None else pending
        return pending

    def _reparse(self, piece: str, lineno: int) -> str | None:
        """One \\r piece through the same tests as a whole line."""
        if piece.startswith("v3 ") and LAYER_V3.match(piece):
            self._layer_lines.append(piece)
        elif " avg" in piece and "avg loss=" not in piece and (m := ITER_CLASSIC.match(piece)):
            self._iteration(m.groups())
            if not self._strong_fork:
                self._detect_classic(piece)
        elif not piece.startswith(SKIP_PREFIXES):
            return self._dispatch(piece, lineno)
        return None

    def _dispatch(self, line: str, lineno: int) -> str | None:
        """Everything but the hot lines: title, hank iteration, Region, mAP, weights, resize, errors."""
        if self._resize_pending:
            self._resize_dims(line)
        if "loss=" in line:
            if "avg loss=" in line and (m := ITER_HANK.match(line)):
                self._hank_iteration(m)
                return None
            if self._title(line):
                return None
        pos = line.find("Saving weights to ")
        if pos >= 0:
            self._saving(line[pos:])
            return line[:pos] if pos > 0 else None
        if line.startswith("Region"):
            if self._region(line):
                return None
        if not self._strong_fork:
            self._detect_fork(line)
        if self._map_line(line) or self._resize_line(line):
            return None
        if "max batch limit of" in line:  # hank, at the end of training
            self.log.max_batches = int(MAX_LIMIT.search(line).group(1))
            return None
        self._error_line(line, lineno)
        return None

    def _title(self, line: str) -> bool:
        """AlexeyAB's/hank's title text ``N/M: loss=…``: gives max_batches."""
        if self._max_tag is not None and self._max_tag in line:
            return True
        m = TITLE.search(line)
        if not m:
            return False
        self.log.max_batches = int(m.group(2))
        self._max_tag = f"/{m.group(2)}: loss="
        return True

    def _hank_iteration(self, m: re.Match) -> None:
        train = m.group("train") or m.group("t")
        self._iteration((m.group("it"), m.group("loss"), m.group("avg"), m.group("rate"),
                         _hours(train) * 3600, m.group("imgs"), _hours(m.group("left"))))
        self._set_fork("hank", strong=True)

    def _region(self, line: str) -> bool:
        if REGION_V3_OLD.match(line) or REGION_V2.match(line):
            self._layer_lines.append(line)
            self._layers_mixed = True
            return True
        return False

    def _saving(self, text: str) -> None:
        path = SAVING.match(text).group(1)
        m = WEIGHTS_ITER.search(path)
        iteration = int(m.group(1)) if m else self._current_iteration()
        self.log.weights.append({"iteration": iteration, "path": path})

    def _set_fork(self, fork: str, strong: bool) -> None:
        if strong:
            self._strong_fork = True
            self.log.fork = fork
        elif self.log.fork is None:
            self.log.fork = fork

    def _detect_fork(self, line: str) -> None:
        for needle, fork in STRONG_MARKERS:
            if needle in line:
                self._set_fork(fork, strong=True)
                return
        if self.log.fork is None:
            for needle, fork in WEAK_MARKERS:
                if needle in line:
                    self._set_fork(fork, strong=False)
                    return

    # -- mAP blocks ------------------------------------------------------------------------------
    def _map_line(self, line: str) -> bool:
        """One line of a mAP block (AlexeyAB or hank); the block's iteration is the last one seen."""
        if "calculation mAP" in line or "Calculating mAP" in line:
            self._open_map()
            return True
        if "mean average precision (mAP" in line or "mean_average_precision" in line:
            return self._map_mean(line)
        if "New best mAP" in line:
            if self.log.map:
                self.log.map[-1]["new_best"] = True
            return True
        if self._map_open is None:
            return False
        return self._map_detail(line)

    def _open_map(self) -> dict:
        self._map_open = dict.fromkeys(MAP_KEYS)
        self._map_open.update(iteration=self._current_iteration(), classes=[], new_best=False)
        self._hank_table = False
        return self._map_open

    def _map_detail(self, line: str) -> bool:
        event = self._map_open
        if line.startswith("class") and (m := MAP_CLASS.search(line)):
            cid, name, ap, tp, fp = m.groups()
            event["classes"].append({"id": int(cid), "name": name, "ap": _num(ap) / 100,
                                     "tp": int(tp) if tp else None, "fp": int(fp) if fp else None})
        elif "Id Name" in line:
            self._hank_table = True
        elif self._hank_table and (m := MAP_HANK_ROW.match(line)):
            cid, name, ap, tp, fp = m.groups()[:5]
            event["classes"].append({"id": int(cid), "name": name, "ap": _num(ap) / 100, "tp": int(tp), "fp": int(fp)})
        elif "precision" in line and (m := MAP_PRF.search(line)):
            event.update(precision=_num(m.group(1)), recall=_num(m.group(2)), f1=_num(m.group(3)))
        elif "TP" in line and (m := MAP_TPFP.search(line)):
            event.update(tp=int(m.group(1)), fp=int(m.group(2)), fn=int(m.group(3)), avg_iou=_num(m.group(4)) / 100)
        else:
            return False
        return True

    def _map_mean(self, line: str) -> bool:
        m = MAP_MEAN.search(line)
        if m:
            iou, value, pct = m.groups()
            event = self._map_open or self._open_map()
            frac = _num(value) if pct is not None else _num(value) / 100  # hank prints only a percent
            event["map50"] = frac if iou is None or abs(_num(iou) - 0.5) < 1e-6 else None
            self.log.map.append(event)
            self._map_open = None
            return True
        m = MAP_TRAIN.search(line)
        if not m:
            return False
        last = self.log.map[-1] if self.log.map else None
        if last is None or last["iteration"] != self._current_iteration():  # the block was lost
            event = self._open_map()
            event["map50"] = _num(m.group(2))
            self.log.map.append(event)
            self._map_open = None
        return True

    # -- resizes ---------------------------------------------------------------------------------
    def _resize_line(self, line: str) -> bool:
        if "Resizing" not in line:
            return False
        m = RESIZE_TO.search(line)
        if m:
            self._add_resize(int(m.group(1)), int(m.group(2)))
            return True
        m = RESIZE.match(line.strip())
        if m and m.group(1):
            self._add_resize(int(m.group(1)), int(m.group(2)))
        elif m:
            self._resize_pending = True
        return bool(m)

    def _resize_dims(self, line: str) -> None:
        self._resize_pending = False
        m = RESIZE_DIMS.match(line.strip())
        if m:
            w, h, dim = m.groups()
            self._add_resize(int(w or dim), int(h or dim))

    def _add_resize(self, width: int, height: int) -> None:
        self.log.resizes.append({"iteration": self._current_iteration(), "width": width, "height": height})

    # -- errors ----------------------------------------------------------------------------------
    def _error_line(self, line: str, lineno: int) -> None:
        if "Error message:" in line:  # hank's fatal block
            text = line.split("Error message:", 1)[1].strip()
            if not self._classify(text, lineno, fatal=True):
                self._add_error(lineno, "fatal", True, detail=text)
            return
        if "Darknet error location" in line:  # AlexeyAB: the message is on the next line
            self._after_error_location = True
            return
        if self._classify(line, lineno):
            self._after_error_location = False
        elif self._after_error_location and line.strip():
            self._after_error_location = False
            self._add_error(lineno, "fatal", True, detail=line.strip().removesuffix(": Success"))

    def _classify(self, line: str, lineno: int, fatal: bool | None = None) -> bool:
        for needle, kind, rule_fatal, detail_re in ERROR_RULES:
            if needle not in line:
                continue
            m = detail_re.search(line) if detail_re else None
            groups = m.groups() if m else ()
            if kind == "missing_image" and groups and groups[0].startswith(ALPHABET_PNG):
                return True
            if kind == "open":
                kind = _open_kind(groups[0] if groups else "")
            path = groups[-1] if kind == "wrong_annotation" and len(groups) > 1 else (groups[0] if groups else "")
            detail = groups[0] if groups else line.strip()
            self._add_error(lineno, kind, rule_fatal if fatal is None else fatal, path=path, detail=detail)
            return True
        return False

    def _add_error(self, lineno: int | None, kind: str, fatal: bool | frozenset, path: str = "",
                   detail: str = "") -> None:
        message = MESSAGES[kind].format(path=path, detail=detail or path)
        key = (kind, message)
        seen = self._seen_errors.get(key)
        if seen is not None:
            seen["count"] += 1
            if fatal is True:
                seen["fatal"] = True
            return
        record = {"line": lineno, "kind": kind, "message": message, "count": 1, "fatal": fatal}
        self._seen_errors[key] = record
        self.log._errors.append(record)


def _open_kind(path: str) -> str:
    """``Couldn't open file: X`` means a label, an image or a config file, depending on X."""
    lower = path.lower()
    if lower.endswith((".jpg", ".jpeg", ".png", ".bmp")):
        return "missing_image"
    if lower.endswith(".txt") and Path(lower).name not in ("train.txt", "valid.txt", "test.txt"):
        return "missing_label"
    return "missing_file"


class LogFollower:
    """A :class:`LogParser` on a file with a byte offset: each ``refresh()`` reads only the new bytes.

    ``exists`` tells "no log yet" from "a log with zero iterations". A file that shrank (truncated
    or replaced) is read again from the start.
    """

    def __init__(self, path: str | os.PathLike, offset: int = 0) -> None:
        """Follow ``path`` from byte ``offset`` (a line start, e.g. where a resumed segment begins)."""
        self.path = Path(path)
        self.parser = LogParser()
        self.offset = offset
        self.exists = False
        self._inode: int | None = None

    @property
    def log(self) -> ParsedLog:
        """The records read so far."""
        return self.parser.log

    def refresh(self) -> int:
        """Read what was appended since the last call; return the number of new iterations."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0
        self.exists = True
        if st.st_size < self.offset or (self._inode is not None and st.st_ino != self._inode):
            self.parser, self.offset = LogParser(), 0
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return 0
        added = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while chunk := f.read(READ_CHUNK):
                self.offset += len(chunk)
                added += self.parser.feed(chunk)
        return added

    def finish(self) -> int:
        """The writer has ended: read the rest and parse a last unterminated line."""
        return self.refresh() + self.parser.finish()


def parse_file(path: str | os.PathLike) -> ParsedLog:
    """Parse a whole log file (in bounded chunks) and return its records."""
    follower = LogFollower(path)
    if not Path(path).is_file():
        from pipeline.cli import UserError

        raise UserError(f"No log file at {path}: give the path of a darknet train_log.txt.")
    follower.finish()
    return follower.log


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


# -- alerts and the failure reason -----------------------------------------------------------------
RISING_K = 100  # darknet's avg loss is a 0.9/0.1 moving average: rising this long is not noise


def log_alerts(log: ParsedLog, rising_k: int = RISING_K) -> list[dict]:
    """Alerts that need only the log: non-finite loss, avg loss rising for ``rising_k`` iterations."""
    alerts = []
    c = log.columns()
    for i in range(len(c["loss"])):
        if not (math.isfinite(c["loss"][i]) and math.isfinite(c["avg_loss"][i])):
            alerts.append({"kind": "nan", "iteration": c["iteration"][i],
                           "message": f"Loss is {c['loss'][i]} / avg {c['avg_loss'][i]} at iteration "
                                      f"{c['iteration'][i]}: training diverged."})
            break
    avg = c["avg_loss"]
    if rising_k > 0 and len(avg) > rising_k:
        tail = avg[-rising_k - 1:]
        if all(a < b for a, b in zip(tail, tail[1:])):
            alerts.append({"kind": "rising", "iteration": c["iteration"][-1],
                           "message": f"avg loss rose for {rising_k} iterations in a row "
                                      f"({tail[0]:.4g} → {tail[-1]:.4g})."})
    return alerts


def alerts(log: ParsedLog, *, now: float, last_growth: float | None, process_alive: bool,
           max_batches: int | None, stall_seconds: float = 120, rising_k: int = RISING_K) -> list[dict]:
    """All alerts for a run: the log's own, a stall while the process lives, an early exit.

    Args:
        now: the current time (``time.time()``).
        last_growth: when the last new iteration was seen (None: none yet).
        process_alive: whether darknet still runs; False means it has ended.
        max_batches: the run's target (None: take the log's, if it printed one).
    """
    found = log_alerts(log, rising_k)
    last = log.last_iteration
    if process_alive and last_growth is not None and now - last_growth > stall_seconds:
        found.append({"kind": "stalled", "iteration": last,
                      "message": f"No new iteration for {now - last_growth:.0f} s while darknet runs."})
    target = max_batches or log.max_batches
    if not process_alive and target and (last or 0) < target:
        found.append({"kind": "early_exit", "iteration": last,
                      "message": f"darknet ended at iteration {last or 0} of {target}."})
    return found


def failure_reason(log: ParsedLog) -> str | None:
    """Why a run failed, read from its log (exit codes lie); None when the log shows no fatal error."""
    fatal = [e for e in log.errors if e["fatal"]]
    if not fatal:
        return None
    order = {kind: i for i, kind in enumerate(FATAL_KIND_ORDER)}
    return min(fatal, key=lambda e: (order.get(e["kind"], len(order)), e["line"] or 0))["message"]


# -- CLI --------------------------------------------------------------------------------------------
def summary(log: ParsedLog) -> str:
    """A few human lines about a parsed log."""
    lines = [f"fork: {log.fork or 'unknown'}",
             f"iterations: {log.iteration_count}" + (f" (last {log.last_iteration}" + (
                 f" of {log.max_batches})" if log.max_batches else ")") if log.iteration_count else "")]
    if log.iteration_count:
        last = log.iteration(-1)
        lines.append(f"last loss: {last['loss']:.4f}, avg loss: {last['avg_loss']:.4f}")
    for event in log.map:
        value = "n/a" if event["map50"] is None else f"{event['map50'] * 100:.2f} %"
        lines.append(f"mAP@0.5 at iteration {event['iteration']}: {value}")
    lines += [f"saved: {w['path']} (iteration {w['iteration']})" for w in log.weights]
    lines += [f"{'error' if e['fatal'] else 'warning'} (line {e['line']}, x{e['count']}): {e['message']}"
              for e in log.errors]
    lines += [f"alert: {a['message']}" for a in log_alerts(log)]
    return "\n".join(lines)


def _cmd_parse_log(args: argparse.Namespace) -> int:
    parsed = parse_file(args.file)
    if args.json:
        print(json.dumps(parsed.to_dict(), allow_nan=False))
    else:
        print(summary(parsed))
    return 0


def register(subparsers) -> None:
    """Add ``parse-log FILE [--json]``."""
    p = subparsers.add_parser("parse-log", help="parse a darknet training log (any fork)")
    p.add_argument("file", help="the log file (e.g. runs/<id>/train_log.txt)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=_cmd_parse_log)
