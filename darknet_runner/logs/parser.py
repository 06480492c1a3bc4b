"""The incremental, pure parser: :class:`LogParser` turns any slices of a darknet log into a :class:`ParsedLog`.

``feed(bytes)`` takes any slice of the file, keeps a partial last line until its end arrives,
strips ANSI CSI/OSC sequences and BEL, splits on ``\\r`` as well as ``\\n`` and appends records.

Speed matters (a 200k-iteration log is >100 MB). The dominant lines (AlexeyAB iteration and [yolo]
lines) are recognised by a substring test and collected; at the end of a feed one ``findall`` per
kind reads all of them (a count check falls back to line-by-line) and the numbers go column-wise
into ``array`` columns. Today's [yolo] rows stay text until first used, and dicts are built only
when asked. Every other line goes through :meth:`LogParser._dispatch`, a table of substring tests.

Line numbers in errors count ``\\n`` only (what ``grep -n`` and editors show).
"""
from __future__ import annotations

import logging
import math
import re
from array import array
from itertools import chain
from pathlib import Path

from darknet_runner.logs.patterns import (ALPHABET_PNG, DURATION, DURATION_HOURS, ERROR_RULES, HANK_OSC_TITLE,
                                          ITER_CLASSIC, ITER_CLASSIC_ALL, ITER_HANK, LAYER_V3, LAYER_V3_ALL,
                                          LAYER_V3_NOW, MAP_CLASS, MAP_HANK_ROW, MAP_MEAN, MAP_PRF, MAP_TPFP,
                                          MAP_TRAIN, MAX_LIMIT, MESSAGES, REGION_V2, REGION_V3_OLD, RESIZE,
                                          RESIZE_DIMS, RESIZE_TO, SAVING, SKIP_PREFIXES, STDERR_LINE_PREFIXES,
                                          STRONG_MARKERS, TITLE, WEAK_MARKERS, WEIGHTS_ITER, strip_ansi)
from darknet_runner.logs.records import (LAYER_FLOAT_KEYS, LAYER_LOSS_KEYS, MAP_KEYS, NAN, ParsedLog, _floats,
                                         _ints, _num)

logger = logging.getLogger(__name__)


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


def _hours(text: str | None) -> float:
    """hank's ``time remaining=…`` / ``train=…`` durations (``119 seconds``, ``287.6 milliseconds``) in hours."""
    m = DURATION.search(text or "")
    return float(m.group(1)) * DURATION_HOURS[m.group(2)] if m else NAN


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
        self._saving_path: str | None = None  # the last "Saving weights to X": a Couldn't open X after it is a write
        self._opencv_loader = False  # OpenCV warned about an image: "Cannot load image" is not fatal (a blank one)

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
            m = ITER_CLASSIC.match(strip_ansi(item)) if isinstance(item, str) else None
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
            row = _layer_row(strip_ansi(line))
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
            line = strip_ansi(line)
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
        self._saving_path = path
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
        if "imread_(" in line:  # OpenCV's warning: this build loads images with OpenCV and goes on without one
            self._opencv_loader = True
            return
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
            if kind == "missing_image" and self._opencv_loader:  # pjreddie's load_image_cv: a 10×10 blank image
                rule_fatal = False
            if kind == "open":
                target = groups[0] if groups else ""
                kind = "write_failed" if target and target == self._saving_path else _open_kind(target)
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
        record = {"line": lineno, "kind": kind, "message": message, "count": 1, "fatal": fatal, "path": path}
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
