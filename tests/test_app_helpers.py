"""The dashboard's pure helpers: gallery choice and tiles, charts, train stats, evaluation views."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dashboard import charts, evalview, gallery, trainview
from pipeline.images.draw import COLORS
from pipeline.workspace import Workspace


def _boxes(rows):
    cols = ["ImageID", "IsGroupOf", "IsOccluded", "IsTruncated", "IsDepiction", "XMin", "XMax", "YMin", "YMax"]
    return pd.DataFrame(rows, columns=cols)


# --- gallery ------------------------------------------------------------------------------------


def test_filter_images_empty_and_flags():
    images = pd.DataFrame({"ImageID": ["a", "b", "c"], "Rotation": np.array([0.0, np.nan, 90.0], dtype="float32")})
    boxes = _boxes([("a", 1, 0, 0, 0, 0, 1, 0, 1), ("b", 0, 1, -1, 0, 0, 1, 0, 1), ("c", 0, 0, 0, 0, 0, 1, 0, 1)])
    assert gallery.filter_images(images.iloc[:0], boxes, ["group-of"]).empty
    assert list(gallery.filter_images(images, boxes, [])["ImageID"]) == ["a", "b", "c"]
    assert list(gallery.filter_images(images, boxes, ["group-of"])["ImageID"]) == ["a"]
    assert list(gallery.filter_images(images, boxes, ["occluded"])["ImageID"]) == ["b"]
    assert list(gallery.filter_images(images, boxes, ["truncated"])["ImageID"]) == []  # -1 is unknown, not 1
    assert list(gallery.filter_images(images, boxes, [gallery.ROTATED])["ImageID"]) == ["c"]  # NaN is not rotated
    assert list(gallery.filter_images(images, boxes, ["group-of", gallery.ROTATED])["ImageID"]) == []


def test_sample_ids_is_deterministic_and_bounded():
    ids = [f"id{i}" for i in range(10)]
    assert gallery.sample_ids([], 5, 0) == []
    assert gallery.sample_ids(ids, 0, 0) == []
    first = gallery.sample_ids(ids, 4, seed=3)
    assert first == gallery.sample_ids(ids, 4, seed=3)
    assert len(set(first)) == 4 and set(first) <= set(ids)
    assert first != gallery.sample_ids(ids, 4, seed=4)
    assert sorted(gallery.sample_ids(ids, 50, 1)) == sorted(ids)


def test_original_path_prefers_the_dataset_then_the_demo_layout(tmp_path):
    ws = Workspace(tmp_path).ensure()
    assert gallery.original_path(ws, "boat", "abc", "train") is None
    demo = tmp_path / "demo" / "originals" / "train" / "abc.jpg"
    demo.parent.mkdir(parents=True)
    demo.write_bytes(b"x")
    assert gallery.original_path(ws, "boat", "abc", "train") == demo
    fetched = ws.dataset_dir("boat") / "originals" / "abc.jpg"
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(b"x")
    assert gallery.original_path(ws, "boat", "abc", "train") == fetched


def test_render_tile_draws_the_box_where_the_relative_corners_say(tmp_path):
    path = tmp_path / "black.png"
    Image.new("RGB", (200, 100)).save(path)
    tile = gallery.render_tile(path, np.array([[0.25, 0.5, 0.75, 1.0]]), side=100)
    assert tile.shape == (50, 100, 3)  # shrunk to the longest side, aspect kept
    assert tuple(tile[30, 25]) == COLORS["gt"]  # left edge of the box at x = 0.25 * 100
    assert tuple(tile[10, 25]) == (0, 0, 0)  # above the box: untouched
    assert tuple(tile[40, 50]) == (0, 0, 0)  # inside the box: outline only


def test_render_tile_enlarges_small_images_before_drawing(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 32)).save(path)
    tile = gallery.render_tile(path, np.array([[0.0, 0.0, 0.5, 0.5]]), side=128)
    assert tile.shape == (64, 128, 3)
    assert tuple(tile[10, 0]) == COLORS["gt"] and tuple(tile[10, 2]) == (0, 0, 0)  # a 2 px line, not 4


def test_to_jpeg_round_trips_size(tmp_path):
    data = gallery.to_jpeg(np.zeros((7, 9, 3), dtype=np.uint8))
    assert data[:3] == b"\xff\xd8\xff"
    path = tmp_path / "t.jpg"
    path.write_bytes(data)
    assert Image.open(path).size == (9, 7)


# --- charts -------------------------------------------------------------------------------------


def _iterations(n):
    it = np.arange(1, n + 1)
    return pd.DataFrame({"iteration": it, "loss": 10.0 / it, "avg_loss": 12.0 / it, "rate": 0.001 * np.ones(n),
                         "seconds": np.full(n, 0.5), "images": it * 4})


def test_thin_keeps_short_frames_and_the_last_row():
    short = _iterations(5)
    assert charts.thin(short) is short
    long = _iterations(10)
    thinned = charts.thin(long, max_points=4)
    assert list(thinned["iteration"]) == [1, 4, 7, 10]
    assert list(charts.thin(_iterations(11), max_points=4)["iteration"]) == [1, 4, 7, 10, 11]


def test_loss_figure_has_both_traces_and_a_fixed_uirevision():
    fig = charts.loss_figure(_iterations(3))
    assert [t.name for t in fig.data] == ["loss", "avg loss"]
    assert list(fig.data[1].y) == [12.0, 6.0, 4.0]
    assert fig.layout.uirevision == "loss"


def test_per_layer_figure_averages_each_iteration():
    assert charts.per_layer_figure(pd.DataFrame(), "iou", "IoU", "iou").data == ()
    layers = pd.DataFrame({"layer": [16, 16, 23, 16], "iteration": [1, 1, 1, 2], "iou": [0.2, 0.4, 0.9, 0.5]})
    fig = charts.per_layer_figure(layers, "iou", "IoU", "iou")
    assert [t.name for t in fig.data] == ["layer 16", "layer 23"]
    assert list(fig.data[0].x) == [1, 2]
    assert list(fig.data[0].y) == pytest.approx([0.3, 0.5])


def test_compare_and_pr_figures():
    fig = charts.compare_figure({"a": _iterations(2), "b": _iterations(3)})
    assert [t.name for t in fig.data] == ["a", "b"] and len(fig.data[1].x) == 3
    pr = charts.pr_figure([0.0, 0.5, 1.0], [1.0, 0.8, 0.5], (0.5, 0.8))
    assert [t.name for t in pr.data] == ["PR curve", "threshold"]
    assert list(pr.data[1].x) == [0.5] and list(pr.data[1].y) == [0.8]
    assert len(charts.pr_figure([0.1], [1.0], None).data) == 1


def test_health_figures_take_the_health_tables():
    from pipeline.yolo import health

    boxes = pd.DataFrame({"ImageID": ["a", "a"], "ClassIndex": [0, 0], "XMin": [0.0, 0.5], "XMax": [0.5, 0.75],
                          "YMin": [0.0, 0.0], "YMax": [0.25, 0.0]})
    table = health.box_table(boxes, 416)
    sizes = charts.box_size_figure(table)
    assert list(sizes.data[0].x) == [208.0, 104.0] and list(sizes.data[0].y) == [104.0, 0.0]
    assert list(charts.aspect_figure(table).data[0].x) == [2.0]  # zero height: no ratio drawn
    histogram = health.boxes_per_image(pd.DataFrame({"ImageID": ["a", "b"]}), boxes)
    bars = charts.boxes_per_image_figure(histogram)
    assert list(bars.data[0].x) == [0, 2] and list(bars.data[0].y) == [1, 1]


# --- train stats --------------------------------------------------------------------------------


def test_progress_stats_without_iterations_is_unknown_not_zero():
    stats = trainview.progress_stats(_iterations(0), 40)
    assert stats["iteration"] is None and stats["eta_seconds"] is None and stats["fraction"] == 0.0


def test_progress_stats_speed_and_eta():
    stats = trainview.progress_stats(_iterations(10), 40)
    assert stats["iteration"] == 10 and stats["fraction"] == 0.25
    assert stats["seconds_per_iteration"] == 0.5
    assert stats["images_per_second"] == 8.0  # 4 images per iteration in 0.5 s
    assert stats["eta_seconds"] == 15.0  # 30 iterations left at 0.5 s
    frame = _iterations(10).assign(hours_left=0.5)
    assert trainview.progress_stats(frame, 40)["eta_seconds"] == 1800.0  # darknet's own estimate wins


def test_format_duration():
    assert trainview.format_duration(None) == "—"
    assert trainview.format_duration(42) == "42 s"
    assert trainview.format_duration(125) == "2 min 5 s"
    assert trainview.format_duration(3725) == "1 h 2 min"


def test_log_tail_missing_empty_and_carriage_returns(tmp_path):
    log = tmp_path / "train_log.txt"
    assert trainview.log_tail(log) is None
    log.write_bytes(b"")
    assert trainview.log_tail(log) == []
    log.write_bytes(b"a\n\x1b[1;37mb\x1b[0m\r c\x07\n\nd")
    assert trainview.log_tail(log, 3) == ["b", " c", "d"]


# --- evaluation views ---------------------------------------------------------------------------


def test_threshold_point_and_filters():
    curve = {"recall": [0.1, 0.5, 0.9], "precision": [1.0, 0.8, 0.4], "confidence": [0.9, 0.6, 0.2]}
    assert evalview.threshold_point(curve, 0.95) is None
    assert evalview.threshold_point(curve, 0.5) == (0.5, 0.8)
    assert evalview.threshold_point(curve, 0.0) == (0.9, 0.4)
    table = pd.DataFrame({"ImageID": ["a", "b", "c"], "tp": [1, 0, 2], "fp": [0, 2, 0], "fn": [1, 0, 0]})
    assert list(evalview.filter_images(table, "all")["ImageID"]) == ["a", "b", "c"]
    assert list(evalview.filter_images(table, "fp")["ImageID"]) == ["b"]
    assert list(evalview.filter_images(table, "fn")["ImageID"]) == ["a"]


def _statuses():
    """One image as metrics.image_box_status returns it: a found box, a missed one, a hit, a near miss."""
    gt = pd.DataFrame({"ClassIndex": [0, 0], "XMin": [0.1, 0.5], "YMin": [0.1, 0.5], "XMax": [0.2, 0.6],
                       "YMax": [0.2, 0.6], "status": ["tp", "fn"], "iou": [0.81, 0.0]})
    det = pd.DataFrame({"ClassIndex": [0, 0, 0], "Confidence": [0.91, 0.3, 0.5], "XMin": [0.1, 0.55, 0.0],
                        "YMin": [0.1, 0.5, 0.0], "XMax": [0.2, 0.65, 1.0], "YMax": [0.2, 0.6, 1.0],
                        "status": ["tp", "fp", "ignored"], "iou": [0.81, 1 / 3, 0.0]})
    return gt, det


def test_tile_boxes_colours_and_labels():
    gt, det = _statuses()
    boxes, labels, colors = evalview.tile_boxes(gt, det, {0: "Boat"})
    assert boxes.shape == (4, 4)
    # One class: no class name on the tags; the near miss says its IoU.
    assert labels == ["", "FN", "TP 0.91", "FP 0.30 IoU 0.33"]
    assert colors == [COLORS["gt"], COLORS["fn"], COLORS["tp"], COLORS["fp"]]
    assert len(set(colors)) == 4  # four distinct colours
    _, labels, _ = evalview.tile_boxes(gt, det, {0: "Boat", 1: "Canoe"}, numbered=True)
    assert labels == ["1", "2 FN Boat", "3 TP Boat 0.91", "4 FP Boat 0.30 IoU 0.33"]
    empty = evalview.tile_boxes(gt.iloc[:0], det.iloc[:0], {})
    assert empty[0].shape == (0, 4) and empty[1] == [] and empty[2] == []


def test_box_table_lists_every_drawn_box_with_its_verdict():
    gt, det = _statuses()
    table = evalview.box_table(gt, det, {0: "Boat"}, iou=0.5)
    assert list(table.index) == ["1", "2", "3", "4"]
    assert list(table["result"]) == ["found (TP)", "missed (FN)", "TP", "FP: near miss (IoU 0.33 < 0.50)"]
    assert list(table["IoU"]) == ["0.81", "", "0.81", "0.33"]
    assert list(table["confidence"]) == ["", "", "0.91", "0.30"]
    duplicate = det.assign(iou=[0.81, 0.7, 0.0])
    assert evalview.box_table(gt, duplicate, {0: "Boat"}, 0.5)["result"].iloc[3].startswith("FP: duplicate")
    elsewhere = det.assign(iou=[0.81, 0.0, 0.0])
    assert evalview.box_table(gt, elsewhere, {0: "Boat"}, 0.5)["result"].iloc[3] == "FP: nothing of that class here"


def test_empty_states_say_what_happened_and_what_to_do():
    result = {"images": 25, "classes": [{"name": "Boat", "ap": 0.0, "tp": 0, "fp": 0, "fn": 52, "precision": None,
                                         "recall": 0.0, "f1": None}]}
    none = pd.DataFrame({"Confidence": pd.Series([], dtype=float)})
    [nothing] = evalview.empty_states(result, none, 0.25)
    assert nothing.startswith("These weights found nothing in the 25 test images") and "train longer" in nothing
    low = pd.DataFrame({"Confidence": [0.12, 0.18]})
    [below] = evalview.empty_states(result, low, 0.25)
    assert "the highest is 0.18" in below and "lower the threshold" in below
    assert evalview.empty_states(result, low, 0.1) == []
    no_gt = {"images": 3, "classes": [{"name": "Boat", "ap": None, "tp": 0, "fp": 2, "fn": 0}]}
    assert "no ground-truth boxes" in evalview.empty_states(no_gt, low, 0.1)[0]
    table = evalview.class_table(result)
    assert table.iloc[0].to_dict() == {"class": "Boat", "AP": "0.0 %", "TP": 0, "FP": 0, "FN": 52,
                                       "precision": "—", "recall": "0.0 %", "F1": "—"}
    assert evalview.floor2(0.1834) == 0.18 and evalview.floor2(0.9) == 0.9


def test_list_weights_newest_first(tmp_path):
    import os
    import struct

    assert evalview.list_weights(tmp_path) == []
    (tmp_path / "backup").mkdir()
    old, new = tmp_path / "backup" / "m_100.weights", tmp_path / "backup" / "m_final.weights"
    header = struct.pack("<3iQ", 0, 2, 0, 400)  # no model.cfg here: the header alone is checked
    old.write_bytes(header)
    new.write_bytes(header)
    (tmp_path / "backup" / "m_broken.weights").write_bytes(b"")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    assert evalview.list_weights(tmp_path) == [new, old]
    assert evalview.broken_weights(tmp_path) == [
        "backup/m_broken.weights is 0 bytes, too short for a darknet weights header"]
