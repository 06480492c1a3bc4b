"""YOLO label files: the one reader, writer and validator of ``class cx cy w h`` lines (``cxcywh_rel``).

Reading follows darknet's ``fscanf("%d %f %f %f %f")`` loop: blank lines are skipped (``fscanf``
skips white space) and reading stops quietly at the first line that is not a class and four numbers,
so what this reader sees is what every fork trains on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.boxes import cxcywh_rel_to_xyxy_rel
from pipeline.atomic import atomic_write_text

LINE = re.compile(r"^\s*(-?\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


@dataclass(frozen=True)
class Labels:
    """The boxes of one label file: ``classes`` (n,), ``cxcywh`` (n, 4) and their 1-based line numbers."""

    classes: np.ndarray
    cxcywh: np.ndarray
    lines: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def xyxy(self) -> np.ndarray:
        """The boxes as ``xyxy_rel``."""
        return cxcywh_rel_to_xyxy_rel(self.cxcywh)


def parse_labels(text: str) -> Labels:
    """The boxes of a label file's text, read as darknet reads them (see the module docstring)."""
    classes, boxes, numbers = [], [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = LINE.match(line)
        try:
            box = [float(v) for v in match.group(2, 3, 4, 5)] if match else None
        except ValueError:
            box = None
        if box is None:
            break
        classes.append(int(match.group(1)))
        boxes.append(box)
        numbers.append(number)
    return Labels(np.array(classes, np.int64), np.array(boxes, np.float64).reshape(-1, 4), np.array(numbers, np.int64))


def read_labels(path: str | Path) -> Labels:
    """The boxes of the label file at ``path`` (undecodable bytes end the file, as they end darknet's scan)."""
    return parse_labels(Path(path).read_text(encoding="utf-8", errors="replace"))


def format_labels(classes: np.ndarray, cxcywh: np.ndarray) -> str:
    """Label file text, six decimals per value; empty for no boxes (a negative image)."""
    return "".join(f"{int(c)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, (cx, cy, w, h) in zip(classes, cxcywh))


def write_labels(path: str | Path, classes: np.ndarray, cxcywh: np.ndarray) -> None:
    """Write a label file atomically."""
    atomic_write_text(Path(path), format_labels(classes, cxcywh))


def label_problems(labels: Labels, class_count: int) -> tuple[int | None, str | None]:
    """(first class id outside ``0..class_count-1``, first box that is not ``cxcywh_rel``).

    A box must have its centre in [0, 1] and a size in (0, 1]: hank aborts on a zero size,
    AlexeyAB drops it. The box is described as ``"line N: cx cy w h"``.
    """
    outside = np.flatnonzero((labels.classes < 0) | (labels.classes >= class_count))
    cx, cy, w, h = labels.cxcywh.T
    with np.errstate(invalid="ignore"):
        good = (cx >= 0) & (cx <= 1) & (cy >= 0) & (cy <= 1) & (w > 0) & (w <= 1) & (h > 0) & (h <= 1)
    bad = np.flatnonzero(~good)
    bad_box = None
    if len(bad):
        i = bad[0]
        bad_box = f"line {labels.lines[i]}: " + " ".join(f"{v:g}" for v in labels.cxcywh[i])
    return (int(labels.classes[outside[0]]) if len(outside) else None), bad_box
