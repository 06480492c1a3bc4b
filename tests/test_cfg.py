"""cfg reader/writer and the yolov3 / yolov3-tiny / yolov4-tiny generator."""
from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from darknet_runner import cfg
from darknet_runner.cfg import Section
from tests.support.tools import needs

DEBIAN_CFG = Path("/usr/share/darknet/cfg")


def _yolos(sections):
    return [(i, s) for i, s in enumerate(sections) if s.name == "yolo"]


def test_read_empty_and_comment_only():
    assert cfg.read_cfg("") == []
    assert cfg.read_cfg("# only a comment\n\n; another\n") == []


def test_read_like_darknet_repeated_sections_whitespace_and_comments():
    text = "[net]\n# Testing\nbatch = 64\n  width=416 \n\n[convolutional]\nfilters=16\nfilters=32\n" \
           "[convolutional]\nanchors = 10,14,  23,27\n"
    assert cfg.read_cfg(text) == [
        Section("net", {"batch": "64", "width": "416"}),
        Section("convolutional", {"filters": "16"}),  # darknet's option_find returns the first
        Section("convolutional", {"anchors": "10,14,23,27"}),
    ]


def test_read_rejects_option_before_any_section():
    with pytest.raises(ValueError, match="line 1 of the cfg is not a \\[section\\] or key=value option: 'batch=1'"):
        cfg.read_cfg("batch=1\n[net]\n")


def test_write_then_read_is_a_fixpoint():
    sections = [Section("net", {"batch": "1"}), Section("yolo", {"mask": "0,1,2"}), Section("yolo", {})]
    text = cfg.write_cfg(sections)
    assert text == "[net]\nbatch=1\n\n[yolo]\nmask=0,1,2\n\n[yolo]\n"
    assert cfg.read_cfg(text) == sections
    assert cfg.write_cfg(cfg.read_cfg(text)) == text


@pytest.mark.parametrize("model", ["yolov3", "yolov3-tiny"])
def test_generated_80_class_cfg_equals_debian_layer_for_layer(model):
    needs("darknet")  # the stock cfgs come with Debian's package
    stock = cfg.read_cfg((DEBIAN_CFG / f"{model}.cfg").read_text())
    generated = cfg.read_cfg(cfg.generate_cfg(model, 80))
    assert [s.name for s in generated] == [s.name for s in stock]
    assert len(generated) == {"yolov3": 108, "yolov3-tiny": 25}[model]
    for index, (mine, theirs) in enumerate(zip(cfg.layer_keys(generated), cfg.layer_keys(stock))):
        assert mine == theirs, f"section {index} differs"


@pytest.mark.parametrize("model, classes, filters", [("yolov3", 1, 18), ("yolov3-tiny", 2, 21),
                                                     ("yolov4-tiny", 3, 24), ("yolov3", 600, 1815)])
def test_filters_before_each_yolo(model, classes, filters):
    sections = cfg.read_cfg(cfg.generate_cfg(model, classes))
    yolos = _yolos(sections)
    assert len(yolos) == (3 if model == "yolov3" else 2)
    for index, yolo in yolos:
        assert yolo.options["classes"] == str(classes)
        assert sections[index - 1].name == "convolutional"
        assert sections[index - 1].options["filters"] == str(filters)
    assert cfg.filter_mismatches(sections) == []


def test_filter_mismatch_is_one_sentence_per_layer():
    sections = cfg.read_cfg(cfg.generate_cfg("yolov3-tiny", 1))
    sections[16].options["filters"] = "255"  # layer 15 ([net] is section 0)
    assert cfg.filter_mismatches(sections) == [
        "the convolution before [yolo] layer 16 has filters=255 but classes=1 with 3 masks needs filters=18"]


@pytest.mark.parametrize("size", [100, 0, 415])
def test_size_must_be_a_multiple_of_32(size):
    with pytest.raises(ValueError, match=f"multiple of 32 between 32 and 4096 \\(e.g. 416\\), not {size}$"):
        cfg.generate_cfg("yolov3-tiny", 1, size=size)


def test_bad_inputs_are_one_sentence():
    with pytest.raises(ValueError, match="unknown model 'yolov5'"):
        cfg.generate_cfg("yolov5", 1)
    with pytest.raises(ValueError, match="at least one class, not 0"):
        cfg.generate_cfg("yolov3", 0)
    with pytest.raises(ValueError, match="batch \\(64\\) must be a positive multiple of subdivisions \\(5\\)"):
        cfg.generate_cfg("yolov3", 1, subdivisions=5)
    with pytest.raises(ValueError, match="yolov3-tiny needs 6 anchors"):
        cfg.generate_cfg("yolov3-tiny", 1, anchors=[(1, 2)] * 9)


@pytest.mark.parametrize("classes, images, expected", [(1, 0, 6000), (4, 0, 8000), (1, 10000, 10000)])
def test_default_max_batches_and_steps(classes, images, expected):
    net = cfg.net_options(cfg.read_cfg(cfg.generate_cfg("yolov3", classes, train_images=images)))
    assert net["max_batches"] == str(expected)
    assert net["steps"] == f"{int(expected * 0.8)},{int(expected * 0.9)}"


@pytest.mark.parametrize("max_batches, burn_in", [(40, 4), (6000, 600), (20000, 1000)])
def test_burn_in_scales_down_for_short_runs(max_batches, burn_in):
    net = cfg.net_options(cfg.read_cfg(cfg.generate_cfg("yolov3-tiny", 1, max_batches=max_batches)))
    assert net["burn_in"] == str(burn_in)


def test_training_values_and_options_are_written():
    anchors = [(5.2, 6.7), (10, 12), (20, 30), (40, 50), (60, 70), (100, 110)]
    sections = cfg.read_cfg(cfg.generate_cfg("yolov3-tiny", 1, size=128, batch=4, subdivisions=1, max_batches=40,
                                              anchors=anchors, random=0, burn_in=3, learning_rate=0.0005))
    net = cfg.net_options(sections)
    assert {k: net[k] for k in ("batch", "subdivisions", "width", "height", "max_batches", "steps", "burn_in",
                                "learning_rate")} == {
        "batch": "4", "subdivisions": "1", "width": "128", "height": "128", "max_batches": "40",
        "steps": "32,36", "burn_in": "3", "learning_rate": "0.0005"}
    for _, yolo in _yolos(sections):
        assert yolo.options["anchors"] == "5,7,10,12,20,30,40,50,60,70,100,110"
        assert yolo.options["random"] == "0"


def test_yolov4_tiny_uses_route_groups_and_the_conv29_backbone():
    sections = cfg.read_cfg(cfg.generate_cfg("yolov4-tiny", 1))[1:]  # layers only
    groups = [i for i, s in enumerate(sections) if s.name == "route" and s.get("groups") == "2"]
    assert groups == [3, 11, 19]
    assert [i for i, s in enumerate(sections) if s.name == "yolo"] == [30, 37]
    assert sections[34].options["layers"] == "-1,23"
    assert (sections[23].name, sections[23].options["filters"], sections[23].options["size"]) == (
        "convolutional", "256", "1")
    assert sections[30].options["iou_loss"] == "ciou" and sections[37].options["mask"] == "1,2,3"


@pytest.mark.parametrize("model, outputs", [("yolov3", 3), ("yolov3-tiny", 2), ("yolov4-tiny", 2)])
def test_opencv_reads_every_generated_cfg(tmp_path, model, outputs):
    path = tmp_path / "model.cfg"
    path.write_text(cfg.generate_cfg(model, 2, size=128))
    net = cv2.dnn.readNetFromDarknet(str(path))
    assert len(net.getUnconnectedOutLayersNames()) == outputs


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batches": -5}, "iterations \\(max_batches\\) must be a whole number from 1"),
    ({"max_batches": 0}, "iterations \\(max_batches\\) must be a whole number from 1"),
    ({"learning_rate": -1.0}, "learning rate must be above 0"),
    ({"learning_rate": float("nan")}, "learning rate must be above 0"),
    ({"max_batches": 100, "burn_in": 200}, "burn_in must be a whole number from 0 to the iterations"),
    ({"width": 0.0}, "width multiplier must be between"),
    ({"steps": (0.9, 0.8)}, "steps must be two fractions"),
    ({"anchors": [(0, 1)] * 6}, "anchors must be positive sizes"),
    ({"batch": 0, "subdivisions": 1}, "batch \\(0\\) must be a positive multiple"),
])
def test_training_numbers_are_validated_with_one_sentence(kwargs, message):
    from pipeline.cli import UserError

    with pytest.raises(UserError, match=message):
        cfg.generate_cfg("yolov3-tiny", 1, size=128, **kwargs)


def test_width_scales_the_batch_normalised_convs_only():
    sections = cfg.read_cfg(cfg.generate_cfg("yolov3-tiny", 1, size=128, width=0.5, max_batches=100, steps=(0.5, 0.75)))
    convs = [s for s in sections if s.name == "convolutional"]
    assert [int(s.options["filters"]) for s in convs] == [8, 16, 32, 64, 128, 256, 512, 128, 256, 18, 64, 128, 18]
    assert cfg.net_options(sections)["steps"] == "50,75"
