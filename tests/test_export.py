"""pipeline.evaluation.export: COCO JSON (exact pixel values, loadable by pycocotools) and YOLO txt files."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation import export

SIZES = pd.DataFrame({"ImageID": ["a", "b"], "width": [200, 50], "height": [100, 40]})
GT = pd.DataFrame({"ImageID": ["a", "a"], "ClassIndex": [0, 1], "XMin": [0.1, 0.0], "YMin": [0.2, 0.0],
                   "XMax": [0.5, 1.0], "YMax": [0.6, 1.0], "IsGroupOf": np.array([-1, 1], np.int8)})
DET = pd.DataFrame({"ImageID": ["b"], "ClassIndex": [1], "Confidence": [0.75], "XMin": [0.5], "YMin": [0.25],
                    "XMax": [1.0], "YMax": [0.5]})
EMPTY_GT = GT.iloc[:0]
EMPTY_DET = DET.iloc[:0]


def test_to_coco_with_no_boxes_still_lists_images_and_categories():
    gt_json, det_json = export.to_coco(EMPTY_GT, EMPTY_DET, SIZES, {0: "boat"})
    assert gt_json == {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "b.jpg", "width": 50, "height": 40}],
        "annotations": [],
        "categories": [{"id": 1, "name": "boat"}],
    }
    assert det_json == []


def test_to_coco_pixel_xywh_category_ids_and_crowd():
    gt_json, det_json = export.to_coco(GT, DET, SIZES, {0: "boat", 1: "canoe"})
    assert gt_json["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": pytest.approx([20.0, 20.0, 80.0, 40.0]),
         "area": pytest.approx(3200.0), "iscrowd": 0},  # IsGroupOf -1 (unknown) is not crowd
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0.0, 0.0, 200.0, 100.0], "area": 20000.0,
         "iscrowd": 1},
    ]
    assert det_json == [{"image_id": 2, "category_id": 2, "bbox": [25.0, 10.0, 25.0, 10.0], "score": 0.75}]


def test_to_coco_refuses_boxes_of_an_unknown_image():
    with pytest.raises(ValueError, match="image c has boxes but no width and height"):
        export.to_coco(EMPTY_GT, DET.assign(ImageID="c"), SIZES, {})
    with pytest.raises(ValueError, match="lacks the column.s. width"):
        export.to_coco(EMPTY_GT, EMPTY_DET, SIZES.drop(columns="width"), {})


def test_pycocotools_reads_the_export_and_ignores_detections_on_crowd_boxes():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    det = pd.DataFrame({"ImageID": ["a", "a"], "ClassIndex": [0, 1], "Confidence": [0.9, 0.8],
                        "XMin": [0.1, 0.2], "YMin": [0.2, 0.2], "XMax": [0.5, 0.4], "YMax": [0.6, 0.4]})
    gt_json, det_json = export.to_coco(GT, det, SIZES, {0: "boat", 1: "canoe"})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt_json
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(det_json), "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]
    assert precision[:, 0].mean() == pytest.approx(1.0)  # the boat box is found (pr = tp / (tp + eps))
    assert (precision[:, 1] == -1).all()  # canoe has only a crowd box: no class to score


def test_write_yolo_txt_empty_file_for_listed_images_without_boxes(tmp_path):
    assert export.write_yolo_txt(EMPTY_GT, tmp_path / "labels", images=["x"]) == 1
    assert (tmp_path / "labels" / "x.txt").read_text() == ""
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["x.txt"]  # no temp files left


def test_write_yolo_txt_lines_are_cxcywh_rel(tmp_path):
    written = export.write_yolo_txt(GT, tmp_path, images=["b"])
    assert written == 2
    assert (tmp_path / "a.txt").read_text() == ("0 0.300000 0.400000 0.400000 0.400000\n"
                                                "1 0.500000 0.500000 1.000000 1.000000\n")
    assert (tmp_path / "b.txt").read_text() == ""
    export.write_yolo_txt(DET, tmp_path, with_confidence=True)
    assert (tmp_path / "b.txt").read_text() == "1 0.750000 0.375000 0.500000 0.250000 0.750000\n"
