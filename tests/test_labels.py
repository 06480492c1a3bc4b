"""pipeline.yolo.labels: the one reader, writer and validator of YOLO label files, with exact numbers."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.yolo.labels import format_labels, label_problems, parse_labels, read_labels, write_labels


def test_empty_text_is_no_boxes():
    labels = parse_labels("")
    assert len(labels) == 0 and labels.cxcywh.shape == (0, 4) and labels.xyxy.shape == (0, 4)


def test_reads_like_darknet_blank_lines_skipped_stops_at_the_first_bad_line():
    labels = parse_labels("1 0.5 0.5 0.2 0.4\n\n  0 0.25 0.75 0.5 0.5\nnot a box\n0 0.1 0.1 0.1 0.1\n")
    assert labels.classes.tolist() == [1, 0]
    assert labels.lines.tolist() == [1, 3]
    np.testing.assert_allclose(labels.xyxy, [[0.4, 0.3, 0.6, 0.7], [0.0, 0.5, 0.5, 1.0]])
    assert parse_labels("0 0.5 0.5 0.1\n0 0.5 0.5 0.1 0.1\n").classes.tolist() == []  # 4 fields: stop
    assert parse_labels("0 0.5 0.5 x 0.1\n").classes.tolist() == []


def test_write_then_read_round_trips_to_six_decimals(tmp_path):
    path = tmp_path / "a.txt"
    write_labels(path, np.array([0, 2]), np.array([[0.5, 0.25, 0.1234564, 1.0], [0.1, 0.2, 0.3, 0.4]]))
    assert path.read_text() == "0 0.500000 0.250000 0.123456 1.000000\n2 0.100000 0.200000 0.300000 0.400000\n"
    assert read_labels(path).classes.tolist() == [0, 2]
    assert format_labels(np.zeros(0), np.zeros((0, 4))) == ""


@pytest.mark.parametrize("text, classes, bad_class, bad_box", [
    ("", 1, None, None),
    ("0 0.5 0.5 0.1 0.1\n", 1, None, None),
    ("3 0.5 0.5 0.1 0.1\n", 2, 3, None),
    ("-1 0.5 0.5 0.1 0.1\n", 2, -1, None),
    ("0 0.5 0.5 0 0.1\n", 1, None, "line 1: 0.5 0.5 0 0.1"),
    ("0 0.5 0.5 0.1 0.1\n\n0 1.2 0.5 0.1 0.1\n", 1, None, "line 3: 1.2 0.5 0.1 0.1"),
    ("0 0.5 0.5 0.1 nan\n", 1, None, "line 1: 0.5 0.5 0.1 nan"),
])
def test_label_problems(text, classes, bad_class, bad_box):
    assert label_problems(parse_labels(text), classes) == (bad_class, bad_box)
