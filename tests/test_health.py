"""health tables and k-means anchors: exact values on tiny hand-built inputs, empty cases first."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.yolo.anchors import cfg_anchors, kmeans_anchors, wh_iou
from pipeline.cli import UserError, main
from pipeline.yolo.health import (
    TINY_PX,
    box_table,
    boxes_per_image,
    class_counts,
    flag_counts,
    load_tables,
    size_summary,
    split_table,
    tiny_boxes,
    written_labels,
)
from pipeline.yolo.prepare import prepare_dataset
from pipeline.yolo.split import split_dataset
from pipeline.workspace import Workspace
from tests.support.datasets import jpeg_bytes, make_dataset, noise


def _boxes(rows) -> pd.DataFrame:
    """rows of (ImageID, ClassIndex, XMin, YMin, XMax, YMax, IsGroupOf)."""
    frame = pd.DataFrame(rows, columns=["ImageID", "ClassIndex", "XMin", "YMin", "XMax", "YMax", "IsGroupOf"])
    return frame.assign(IsOccluded=np.int8(0), IsTruncated=np.int8(-1), IsDepiction=np.int8(0), IsInside=np.int8(0))


EMPTY = _boxes([])


# ---------------------------------------------------------------- empty cases

def test_empty_tables():
    assert box_table(EMPTY).empty
    assert boxes_per_image(pd.DataFrame({"ImageID": []}), EMPTY).empty
    assert size_summary(box_table(EMPTY)).isna().all().all()
    assert tiny_boxes(box_table(EMPTY)).empty
    assert flag_counts(EMPTY).to_dict("index")["IsGroupOf"] == {"yes": 0, "no": 0, "unknown": 0}
    assert split_table(None, EMPTY).empty


def test_missing_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no built dataset 'x'"):
        load_tables(Workspace(tmp_path).ensure(), "x")


# ---------------------------------------------------------------- tables

def test_box_table_in_network_pixels():
    table = box_table(_boxes([("a", 0, 0.0, 0.0, 0.5, 0.25, 0), ("a", 1, -0.5, 0.9, 0.01, 1.2, 1)]), size=416)
    assert table["WidthPx"].tolist() == pytest.approx([208.0, 4.16])
    assert table["HeightPx"].tolist() == pytest.approx([104.0, 41.6])
    assert table["Aspect"].tolist() == pytest.approx([2.0, 0.1])
    assert table["Tiny"].tolist() == [False, True]
    assert tiny_boxes(table)["ClassIndex"].tolist() == [1]


def test_boxes_per_image_counts_images_without_boxes():
    images = pd.DataFrame({"ImageID": ["a", "b", "c", "d"]})
    boxes = _boxes([("a", 0, 0, 0, 1, 1, 0), ("a", 0, 0, 0, 1, 1, 0), ("b", 0, 0, 0, 1, 1, 0)])
    assert boxes_per_image(images, boxes).to_dict("list") == {"boxes": [0, 1, 2], "images": [2, 1, 1]}


def test_flag_counts_keep_unknown_apart():
    boxes = _boxes([("a", 0, 0, 0, 1, 1, 1), ("a", 0, 0, 0, 1, 1, 0), ("b", 0, 0, 0, 1, 1, -1)])
    table = flag_counts(boxes)
    assert table.loc["IsGroupOf"].to_dict() == {"yes": 1, "no": 1, "unknown": 1}
    assert table.loc["IsTruncated"].to_dict() == {"yes": 0, "no": 0, "unknown": 3}


def test_size_summary_percentiles():
    table = box_table(_boxes([("a", 0, 0, 0, w, 0.5, 0) for w in (0.25, 0.5, 0.75)]), size=100)
    summary = size_summary(table)
    assert summary.loc["WidthPx", "median"] == pytest.approx(50.0)
    assert summary.loc["WidthPx", "min"] == pytest.approx(25.0) and summary.loc["WidthPx", "max"] == pytest.approx(75.0)
    assert summary.loc["HeightPx"].tolist() == pytest.approx([50.0] * 7)


def test_class_counts_and_split_table():
    boxes = _boxes([("a", 0, 0, 0, 1, 1, 0), ("a", 1, 0, 0, 1, 1, 0), ("b", 0, 0, 0, 1, 1, 0)])
    classes = [{"index": 0, "name": "Boat"}, {"index": 1, "name": "Canoe"}, {"index": 2, "name": "X"}]
    counts = class_counts(boxes, classes)
    assert counts[["name", "boxes", "images"]].values.tolist() == [["Boat", 2, 2], ["Canoe", 1, 1], ["X", 0, 0]]
    table = split_table({"train": ["a", "c"], "valid": ["b"], "test": []}, boxes)
    assert table.to_dict("index") == {"train": {"images": 2, "boxes": 2, "empty_images": 1},
                                      "valid": {"images": 1, "boxes": 1, "empty_images": 0},
                                      "test": {"images": 0, "boxes": 0, "empty_images": 0}}


def test_written_labels_are_read_back_in_network_pixels(tmp_path):
    ws = make_dataset(tmp_path, [{"id": "a", "data": jpeg_bytes(noise(60, 80)), "boxes": [(0, 0.0, 0.0, 0.5, 0.25)]},
                                 {"id": "n", "data": jpeg_bytes(noise(60, 80))}])
    assert written_labels(ws, "boat").empty
    prepare_dataset(ws, "boat", size=64, workers=1)
    table = written_labels(ws, "boat", size=64)
    assert table[["ImageID", "ClassIndex", "WidthPx", "HeightPx"]].values.tolist() == [["a", 0, 32.0, 16.0]]


# ---------------------------------------------------------------- anchors

def test_anchor_errors():
    with pytest.raises(ValueError, match="0 boxes cannot make 3 anchors"):
        kmeans_anchors(np.zeros((0, 2)), 3)
    with pytest.raises(ValueError, match="1 boxes cannot make 2 anchors"):
        kmeans_anchors([[10, 10], [0, 5]], 2)          # a zero-width box is not usable


def test_wh_iou_exact():
    assert wh_iou([[10, 10]], [[10, 10], [20, 10], [5, 5]]).tolist() == [[1.0, 0.5, 0.25]]


def test_three_clear_shapes_give_exact_anchors():
    wh = np.array([[10, 10]] * 5 + [[100, 200]] * 5 + [[50, 20]] * 5, dtype=float)
    for seed in range(5):
        anchors, avg_iou = kmeans_anchors(wh, 3, seed=seed)
        assert anchors.tolist() == [[10, 10], [50, 20], [100, 200]]      # sorted by area
        assert avg_iou == pytest.approx(1.0)
    assert cfg_anchors(anchors) == "10,10, 50,20, 100,200"


def test_one_anchor_is_the_mean_shape_and_its_iou():
    anchors, avg_iou = kmeans_anchors([[10, 10], [20, 20]], 1)
    assert anchors.tolist() == [[15, 15]]
    assert avg_iou == pytest.approx((100 / 225 + 225 / 400) / 2)


def test_kmeans_beats_a_naive_grid_and_is_deterministic():
    rng = np.random.default_rng(0)
    centres = ([20, 12], [60, 90], [150, 60], [300, 300])
    wh = np.concatenate([rng.normal(c, np.array(c) * 0.1, (200, 2)) for c in centres])
    anchors, avg_iou = kmeans_anchors(wh, 4, seed=1)
    again, again_iou = kmeans_anchors(wh, 4, seed=1)
    assert np.array_equal(anchors, again) and avg_iou == again_iou
    grid = np.array([[50, 50], [100, 100], [200, 200], [400, 400]])
    assert avg_iou > wh_iou(wh, grid).max(axis=1).mean() + 0.1
    assert avg_iou > 0.8


# ---------------------------------------------------------------- CLI

def test_cli_prints_tables_and_an_anchors_line(tmp_path, capsys):
    specs = [{"id": f"i{n}", "data": jpeg_bytes(noise(60, 80, n)),
              "boxes": [(0, 0.1, 0.1, 0.1 + 0.08 * (n % 5 + 1), 0.5)]} for n in range(20)]
    ws = make_dataset(tmp_path, specs)
    prepare_dataset(ws, "boat", size=64, workers=1)
    split_dataset(ws, "boat")
    argv = ["--workspace", str(ws.root), "health", "--dataset", "boat", "--anchors", "3"]
    assert main("p", "d", ["pipeline.yolo.health"], argv) == 0
    out = capsys.readouterr().out
    assert "box size in network pixels at 64 (written labels)" in out
    assert f"tiny boxes (< {TINY_PX} px): 4 of 20" in out
    anchors_line = next(line for line in out.splitlines() if line.startswith("anchors = "))
    assert len(anchors_line.removeprefix("anchors = ").split(", ")) == 3
    assert "train" in out and "avg IoU = " in out
    argv[-1] = "30"
    assert main("p", "d", ["pipeline.yolo.health"], argv) == 2
    assert "20 boxes cannot make 30 anchors" in capsys.readouterr().err


def test_cli_before_prepare_uses_the_open_images_boxes(tmp_path, capsys):
    ws = make_dataset(tmp_path, [{"id": f"i{n}", "data": None, "boxes": [(0, 0.0, 0.0, 0.25, 0.5)]} for n in range(3)])
    assert main("p", "d", ["pipeline.yolo.health"], ["--workspace", str(ws.root), "health", "--dataset", "boat",
                                                "--anchors", "1"]) == 0
    out = capsys.readouterr().out
    assert "box size in network pixels at 416 (Open Images boxes, stretched)" in out
    assert "anchors = 104,208" in out and "avg IoU = 1.0000" in out
