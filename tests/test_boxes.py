import numpy as np
import pytest

from pipeline.boxes import (
    clip_xyxy_rel,
    cxcywh_rel_to_xyxy_rel,
    iou_xyxy,
    xyxy_px_1based_to_xyxy_rel,
    xyxy_rel_to_cxcywh_rel,
    xyxy_rel_to_xyxy_px,
)


def test_empty_inputs_keep_shape():
    assert xyxy_rel_to_cxcywh_rel(np.zeros((0, 4))).shape == (0, 4)
    assert iou_xyxy(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_xyxy_rel_to_cxcywh_rel_exact():
    out = xyxy_rel_to_cxcywh_rel([[0.25, 0.5, 0.75, 1.0]])
    np.testing.assert_allclose(out, [[0.5, 0.75, 0.5, 0.5]])


def test_cxcywh_round_trip():
    boxes = np.array([[0.1, 0.2, 0.4, 0.9], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(cxcywh_rel_to_xyxy_rel(xyxy_rel_to_cxcywh_rel(boxes)), boxes)


def test_darknet_valid_corners_to_rel():
    # facts/darknet.md §9: GT cx=147.5 cy=32 w=77 h=46 in 200×150 → 1-based corners 110,10,187,56
    rel = xyxy_px_1based_to_xyxy_rel([[110.0, 10.0, 187.0, 56.0]], width=200, height=150)
    np.testing.assert_allclose(rel, [[109 / 200, 9 / 150, 186 / 200, 55 / 150]])
    np.testing.assert_allclose(xyxy_rel_to_cxcywh_rel(rel)[0, 2:] * [200, 150], [77, 46])


def test_rel_to_px():
    np.testing.assert_allclose(xyxy_rel_to_xyxy_px([[0.5, 0.25, 1.0, 0.5]], 640, 480), [[320, 120, 640, 240]])


def test_clip():
    np.testing.assert_allclose(clip_xyxy_rel([[-0.1, 0.2, 1.3, 0.9]]), [[0.0, 0.2, 1.0, 0.9]])


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),
        ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
        ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # degenerate: no division by zero
    ],
)
def test_iou(a, b, expected):
    assert iou_xyxy([a], [b])[0, 0] == pytest.approx(expected)


def test_letterbox_conversion_exact():
    from pipeline.boxes import xyxy_rel_to_letterbox_xyxy_rel

    assert xyxy_rel_to_letterbox_xyxy_rel(np.zeros((0, 4)), (416, 312), (0, 52), (416, 416)).shape == (0, 4)
    # a 1024×768 image letterboxed to 416: content 416×312 pasted 52 px down
    out = xyxy_rel_to_letterbox_xyxy_rel([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.75, 1.0]], (416, 312), (0, 52), (416, 416))
    np.testing.assert_allclose(out, [[0, 52 / 416, 1, 364 / 416], [0.5, 208 / 416, 0.75, 364 / 416]])
    same = xyxy_rel_to_letterbox_xyxy_rel([[0.1, 0.2, 0.3, 0.4]], (416, 416), (0, 0), (416, 416))
    np.testing.assert_allclose(same, [[0.1, 0.2, 0.3, 0.4]])
