"""The darknet log parser against the real logs of every fork (shared/fixtures/darknet, counted by hand
with grep) and hand-written lines of the older formats of facts/darknet.md §1–7, §10."""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from darknet_runner.logs import (LogFollower, LogParser, ParsedLog, alerts, as_json, failure_reason,
                                 iterations_frame, layers_frame, log_alerts, parse_file, parse_tail, strip_ansi)
from pipeline.cli import UserError, main

from tests.support.fixtures import DARKNET_FIXTURES as FIXTURES

LOGS = sorted(p.name for p in FIXTURES.glob("*.log"))
needs_fixtures = pytest.mark.skipif(not LOGS, reason="darknet fixture logs not found")

AB_ITER = " {i}: 2.500000, 3.000000 avg loss, 0.001000 rate, 0.500000 seconds, {img} images, 1.000000 hours left\n"


def parse(text: str | bytes) -> ParsedLog:
    parser = LogParser()
    parser.feed(text.encode() if isinstance(text, str) else text)
    parser.finish()
    return parser.log


def pieces(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        step = rng.randint(1, largest)
        out.append(data[pos:pos + step])
        pos += step
    return out


def parse_pieces(chunks: list[bytes]) -> ParsedLog:
    parser = LogParser()
    for chunk in chunks:
        parser.feed(chunk)
    parser.finish()
    return parser.log


# -- the empty cases first ------------------------------------------------------------------------
def test_empty_log_has_no_records():
    parser = LogParser()
    assert parser.feed(b"") == 0
    assert parser.finish() == 0
    assert as_json(parser.log) == {"fork": None, "iterations": [], "layers": [], "map": [], "weights": [],
                                   "errors": [], "alerts": []}
    assert parser.log.last_iteration is None
    assert failure_reason(parser.log) is None


def test_follower_tells_no_log_from_an_empty_log(tmp_path):
    follower = LogFollower(tmp_path / "train_log.txt")
    assert follower.refresh() == 0 and follower.exists is False
    (tmp_path / "train_log.txt").write_bytes(b"")
    assert follower.refresh() == 0 and follower.exists is True
    assert follower.log.iteration_count == 0


def test_parse_file_refuses_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="No log file at"):
        parse_file(tmp_path / "nope.log")


# -- line handling ----------------------------------------------------------------------------------
def test_partial_line_waits_for_its_end():
    parser = LogParser()
    line = AB_ITER.format(i=7, img=28).encode()
    assert parser.feed(line[:-10]) == 0
    assert parser.log.iteration_count == 0
    assert parser.feed(line[-10:]) == 1
    assert parser.log.iterations == [{"iteration": 7, "loss": 2.5, "avg_loss": 3.0, "rate": 0.001, "seconds": 0.5,
                                      "images": 28, "hours_left": 1.0}]


def test_finish_parses_an_unterminated_last_line():
    parser = LogParser()
    parser.feed(b"Couldn't open file: data/obj.data")
    assert parser.log.errors == []
    parser.finish()
    assert [(e["kind"], e["line"]) for e in parser.log.errors] == [("missing_file", 1)]


def test_ansi_title_and_bel_are_stripped():
    text = (" (next mAP calculation at 100 iterations) \x1b[H\x1b[J5/120: loss=33.9 hours left=0.0\x07\n"
            + AB_ITER.format(i=5, img=20))
    log = parse(text)
    assert log.max_batches == 120
    assert [r["iteration"] for r in log.iterations] == [5]


def test_hank_colour_codes_and_osc_title():
    text = ("\x1b]2;1/120: loss=34.9 time=unknown\x07\x1b[1;37m1\x1b[0m: loss=\x1b[0;31m34.913\x1b[0m, avg loss="
            "\x1b[0;31m34.913\x1b[0m, last=\x1b[0mnone\x1b[0m, best=\x1b[0mnone\x1b[0m, mAP=100, rate=0.00000000, "
            "load 4=10.5 milliseconds, train=287.6 milliseconds, 4 images, time remaining=2 minutes\n")
    log = parse(text)
    assert log.fork == "hank" and log.max_batches == 120
    assert log.iterations == [{"iteration": 1, "loss": 34.913, "avg_loss": 34.913, "rate": 0.0,
                               "seconds": pytest.approx(0.2876), "images": 4, "hours_left": pytest.approx(2 / 60)}]


def test_carriage_return_splits_lines():
    text = (" calculation mAP (mean average precision)...\n"
            " rank = 0 of ranks = 42 \rclass_id = 0, name = box, ap = 90.41%   \t (TP = 8, FP = 1) \n"
            " mean average precision (mAP@0.50) = 0.904084, or 90.41 % \n")
    log = parse(text)
    assert log.map[0]["classes"] == [{"id": 0, "name": "box", "ap": pytest.approx(0.9041), "tp": 8, "fp": 1}]
    assert log.map[0]["map50"] == pytest.approx(0.904084)


def test_crlf_log_gives_the_same_records_and_line_numbers():
    lf = (FIXTURES / "alexeyab_exp_bad_class.log").read_bytes()
    crlf = lf.replace(b"\n", b"\r\n")
    assert as_json(parse(crlf)) == as_json(parse(lf))
    assert parse(crlf).errors[0]["line"] == 46


# -- every fixture, checked by hand (grep -c, and reading the lines) ---------------------------------
# file: (fork, max_batches, iterations, first, last, layers)
ITERATIONS = {
    "alexeyab_cpu_yolov3tiny_map.log": (
        "alexeyab", 120, 120, (1, 33.952961, 33.952961, 0.0, 0.675912, 4, -1.0),
        (120, 0.832327, 0.885284, 0.000005, 0.909268, 480, 0.012440), 240),
    "alexeyab_exp_bad_class.log": (
        "alexeyab", 2, 2, (1, 23.355820, 23.355820, 0.0, 1.988274, 2, -1.0),
        (2, 23.726652, 23.392902, 0.0, 0.718652, 4, 0.000554), 4),
    "alexeyab_exp_missing_label.log": (
        "alexeyab", 2, 2, (1, 32.401157, 32.401157, 0.0, 1.758736, 2, -1.0),
        (2, 32.272961, 32.388336, 0.0, 0.570518, 4, 0.000497), 4),
    "hankai_cpu_yolov3tiny_map.log": (
        "hank", 120, 120, (1, 34.913, 34.913, 0.0, 0.2876, 4, None),
        (120, 0.642, 0.839, 0.000005, 0.2701, 480, None), 0),
    "hankai_cpu_yolov3tiny_map_nocolour_verbose.log": (
        "hank", 120, 120, (1, 31.304, 31.304, 0.0, 1.3, 4, 119 / 3600),
        (120, 0.084, 0.684, 0.000005, 0.2091, 480, None), 240),
    "pjreddie_debian_yolov3tiny.log": (
        "pjreddie", None, 120, (1, 44.102848, 44.102848, 0.0, 0.810647, 4, None),
        (120, 0.898483, 0.816754, 0.000005, 0.592781, 480, None), 240),
    "pjreddie_debian_yolov3tiny_stdbufL.log": (
        "pjreddie", None, 30, (1, 44.423302, 44.423302, 0.0, 0.708242, 4, None),
        (30, 1.998152, 11.263450, 0.0005, 0.694532, 120, None), 60),
    "pjreddie_debian_images_removed_midrun.log": (  # half the listed images deleted after iteration 2
        "pjreddie", None, 8, (1, 45.494812, 45.494812, 0.001, 1.379490, 4, None),
        (8, 18.323570, 29.349455, 0.00001, 1.652679, 32, None), 16),
}
# file: [(iteration, map50, precision, recall, f1, tp, fp, fn, avg_iou, new_best, class ap)]
MAPS = {
    "alexeyab_cpu_yolov3tiny_map.log": [(100, 0.664198, 0.78, 0.78, 0.78, 7, 2, 2, 0.5377, True, 0.6642),
                                        (120, 0.904084, 0.89, 0.89, 0.89, 8, 1, 1, 0.6507, True, 0.9041)],
    "alexeyab_detector_map.log": [(None, 0.904084, 0.89, 0.89, 0.89, 8, 1, 1, 0.6507, False, 0.9041)],
    "hankai_cpu_yolov3tiny_map.log": [(100, 0.9428, 0.83, 0.56, 0.67, 5, 1, 4, 0.5642, True, 0.942761),
                                      (120, 0.9056, 0.80, 0.89, 0.84, 8, 2, 1, 0.5971, False, 0.905556)],
    "hankai_cpu_yolov3tiny_map_nocolour_verbose.log": [
        (100, 0.9428, 0.83, 0.56, 0.67, 5, 1, 4, 0.6084, True, 0.942761),
        (120, 0.9556, 0.88, 0.78, 0.82, 7, 1, 2, 0.6478, True, 0.955556)],
    "hankai_detector_map_nocolour.log": [(None, 0.9556, 0.875, 0.777778, 0.823529, 7, 1, 2, 0.64782379, False,
                                          0.955556)],
}
WEIGHTS = {
    "alexeyab_cpu_yolov3tiny_map.log": [(100, "backup_ab/yolov3-tiny-obj-lr_best.weights"),
                                        (100, "backup_ab/yolov3-tiny-obj-lr_last.weights"),
                                        (120, "backup_ab/yolov3-tiny-obj-lr_best.weights"),
                                        (120, "backup_ab/yolov3-tiny-obj-lr_final.weights")],
    "alexeyab_exp_bad_class.log": [(2, "exp/backup/exp2_final.weights")],
    "alexeyab_exp_missing_label.log": [(2, "exp/backup/exp2_final.weights")],
    "hankai_cpu_yolov3tiny_map.log": [(100, "backup_hank/yolov3-tiny-obj-lr_best.weights"),
                                      (100, "backup_hank/yolov3-tiny-obj-lr_last.weights"),
                                      (120, "backup_hank/yolov3-tiny-obj-lr_final.weights")],
    "hankai_cpu_yolov3tiny_map_nocolour_verbose.log": [(100, "backup_hank/yolov3-tiny-obj-lr_best.weights"),
                                                       (100, "backup_hank/yolov3-tiny-obj-lr_last.weights"),
                                                       (120, "backup_hank/yolov3-tiny-obj-lr_best.weights"),
                                                       (120, "backup_hank/yolov3-tiny-obj-lr_final.weights")],
    # stdout 4096-byte blocks lag behind stderr (facts §10): .backup lands after line "90:"; the number in a
    # file name wins; _final lands inside line "116:".
    "pjreddie_debian_yolov3tiny.log": [(90, "backup_pj/yolov3-tiny-obj-lr.backup"),
                                       (100, "backup_pj/yolov3-tiny-obj-lr_100.weights"),
                                       (115, "backup_pj/yolov3-tiny-obj-lr_final.weights")],
    "pjreddie_debian_yolov3tiny_stdbufL.log": [(30, "backup_pj30/yolov3-tiny-obj-30_final.weights")],
    "pjreddie_debian_images_removed_midrun.log": [(8, "backup/model_final.weights")],
}
# file: [(line, kind, count, fatal)] — exit codes lie; these say whether the run stopped there
ERRORS = {
    "alexeyab_exp_bad_class.log": [(46, "wrong_annotation", 6, False)],
    "alexeyab_exp_filters_mismatch.log": [(22, "filters_mismatch", 1, True)],
    "alexeyab_exp_missing_label.log": [(45, "missing_label", 6, False)],
    "hankai_exp_missing_label.log": [(23, "missing_label", 1965, True)],  # 1964 "unexpected error" + the block
    "pjreddie_debian_exp_filters_mismatch_rc134.log": [(19, "filters_mismatch", 1, True)],
    "pjreddie_debian_exp_missing_label_rc139.log": [(26, "missing_label", 1, True)],
    # Debian's build loads images with OpenCV (its imread_ warning comes first) and trains on with a blank one
    "pjreddie_debian_images_removed_midrun.log": [(38, "missing_image", 5, False), (64, "missing_image", 1, False),
                                                  (70, "missing_image", 1, False), (72, "missing_image", 2, False),
                                                  (76, "missing_image", 1, False)],
    "pjreddie_debian_cfg_typo_rc134.log": [(4, "cfg_layer", 1, True), (8, "crash", 1, True)],
}
FORKS = {"alexeyab_detector_map.log": "alexeyab", "alexeyab_detector_test_ext_output.log": "alexeyab",
         "alexeyab_detector_valid.log": "alexeyab", "alexeyab_exp_filters_mismatch.log": "alexeyab",
         "hankai_detector_map_nocolour.log": "hank", "hankai_exp_missing_label.log": "hank",
         "pjreddie_debian_exp_filters_mismatch_rc134.log": "pjreddie",
         "pjreddie_debian_exp_missing_label_rc139.log": "pjreddie", "pjreddie_debian_cfg_typo_rc134.log": "pjreddie"}


def test_every_fixture_is_covered_by_the_tables():
    assert set(LOGS) == set(ITERATIONS) | set(FORKS) and LOGS, "a new fixture needs hand-checked values"


@needs_fixtures
@pytest.mark.parametrize("name", LOGS)
def test_fixture_records(name):
    log = parse_file(FIXTURES / name)
    fork, max_batches, count, first, last, layers = ITERATIONS.get(name, (FORKS.get(name), None, 0, None, None, 0))
    assert (log.fork, log.max_batches, log.iteration_count, log.layer_count) == (fork, max_batches, count, layers)
    keys = ("iteration", "loss", "avg_loss", "rate", "seconds", "images", "hours_left")
    if count:
        assert log.iterations[0] == pytest.approx(dict(zip(keys, first)))
        assert log.iterations[-1] == pytest.approx(dict(zip(keys, last)))
        assert [r["iteration"] for r in log.iterations] == list(range(1, count + 1))
    got_maps = [(m["iteration"], m["map50"], m["precision"], m["recall"], m["f1"], m["tp"], m["fp"], m["fn"],
                 m["avg_iou"], m["new_best"], m["classes"][0]["ap"]) for m in log.map]
    assert got_maps == [pytest.approx(e) for e in MAPS.get(name, [])]
    assert [(w["iteration"], w["path"]) for w in log.weights] == WEIGHTS.get(name, [])
    assert [(e["line"], e["kind"], e["count"], e["fatal"]) for e in log.errors] == ERRORS.get(name, [])
    assert log.resizes == []


@needs_fixtures
def test_layers_of_each_format():
    ab = parse_file(FIXTURES / "alexeyab_cpu_yolov3tiny_map.log")
    assert ab.layers[0] == {"iteration": 1, "layer": 16, "iou": 0.0, "class": None, "obj": None, "no_obj": None,
                            "r50": None, "r75": None, "count": 1, "class_loss": 13.143693, "iou_loss": 0.0,
                            "total_loss": 13.143693}
    assert ab.layers[-1]["iteration"] == 120 and ab.layers[-1]["total_loss"] == 1.664516
    pj = parse_file(FIXTURES / "pjreddie_debian_yolov3tiny.log")
    assert pj.layers[-1] == {"iteration": 120, "layer": 23, "iou": 0.657399, "class": 0.975853, "obj": 0.488606,
                             "no_obj": 0.008198, "r50": 1.0, "r75": 0.142857, "count": 7, "class_loss": None,
                             "iou_loss": None, "total_loss": None}
    assert pj.layers[0]["iou"] is None and pj.layers[0]["no_obj"] == 0.400367  # "-nan" when count is 0
    hank = parse_file(FIXTURES / "hankai_cpu_yolov3tiny_map_nocolour_verbose.log")
    assert (hank.layers[0]["iteration"], hank.layers[0]["iou_loss"], hank.layers[-1]["total_loss"]) == (
        1, -0.000001, 0.165327)


@needs_fixtures
def test_pjreddie_stderr_spliced_into_stdout_lines():
    """``…, ClassSaving weights to …`` and ``…seconds,Saving weights to …`` (facts §10) are rejoined."""
    log = parse_file(FIXTURES / "pjreddie_debian_yolov3tiny.log")
    assert log.iteration(115) == {"iteration": 116, "loss": 0.532417, "avg_loss": 0.745010, "rate": 0.000005,
                                  "seconds": 0.625641, "images": 464, "hours_left": None}
    spliced = [r for r in log.layers if r["iteration"] == 91]
    assert [(r["layer"], r["no_obj"], r["count"]) for r in spliced] == [(16, 0.000004, 0), (23, 0.009140, 7)]


FAILURES = {
    "alexeyab_exp_filters_mismatch.log": "filters= in the [convolutional] layer",
    "pjreddie_debian_exp_filters_mismatch_rc134.log": "filters= in the [convolutional] layer",
    "pjreddie_debian_exp_missing_label_rc139.log": "Label file exp/imgs/missing_label.txt is missing",
    "hankai_exp_missing_label.log": "Label file exp/imgs/missing_label.txt is missing",
    # the log says why, where the exit code (SIGABRT of a later assertion) says "darknet crashed (0)."
    "pjreddie_debian_cfg_typo_rc134.log": "model.cfg has a layer type darknet does not know: [maxpoool] (a typo?",
}


@needs_fixtures
@pytest.mark.parametrize("name", LOGS)
def test_failure_reason_from_the_log(name):
    reason = failure_reason(parse_file(FIXTURES / name))
    if name in FAILURES:
        assert reason.startswith(FAILURES[name])
    else:
        assert reason is None  # AlexeyAB carries on past a missing label / wrong class id


# -- pieces of any size give the same records -------------------------------------------------------------
@needs_fixtures
@pytest.mark.parametrize("name", LOGS)
def test_random_pieces_give_the_same_records(name):
    data = (FIXTURES / name).read_bytes()
    whole = as_json(parse(data))
    rng = random.Random(name)
    for largest in (1, 7, 300, 5000):
        assert as_json(parse_pieces(pieces(data, rng, largest))) == whole


@needs_fixtures
def test_splits_inside_every_escape_sequence_and_crlf():
    data = (FIXTURES / "hankai_cpu_yolov3tiny_map.log").read_bytes()[:6000].replace(b"\n", b"\r\n")
    whole = as_json(parse(data))
    cuts = sorted({i + d for i, b in enumerate(data) if b in (0x1b, 0x07, 0x0d) for d in (1, 2, 3)})
    assert len(cuts) > 100
    chunks = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
    assert as_json(parse_pieces(chunks)) == whole
    assert len(whole["iterations"]) == 17  # grep -c "time remaining" on those bytes


# -- older formats, one line each (facts §1–5) ----------------------------------------------------------
def test_older_iteration_formats():
    log = parse(" 1: 5.0, 6.0 avg, 0.1 rate, 2.0 seconds, 64 images\n"          # AlexeyAB 2017 / pjreddie
                "\n 2: 4.0, 5.5 avg loss, 0.1 rate, 2.0 seconds, 128 images\n"   # 2018-05 → 2020-03
                " 3: 3.0, 5.0 avg loss, 0.1 rate, 2.0 seconds, 192 images, 9.5 time left\n"  # 2020-03 (9 days)
                "4: loss=2.0, avg loss=4.5, rate=0.100000, 1.5 seconds, 256 images, time remaining=3 hours\n")
    assert [(r["iteration"], r["avg_loss"], r["images"], r["hours_left"]) for r in log.iterations] == [
        (1, 6.0, 64, None), (2, 5.5, 128, None), (3, 5.0, 192, 9.5), (4, 4.5, 256, 3.0)]
    assert log.iterations[3]["seconds"] == 1.5


def test_older_layer_formats():
    log = parse(
        "v3 (mse loss, Normalizer: (iou: 0.750000, cls: 1.000000) Region 82 Avg (IOU: 0.331966, GIOU: 0.327298), "
        "Class: 0.500477, Obj: 0.484945, No Obj: 0.503155, .5R: 0.250000, .75R: 0.000000, count: 4\n"
        "v3 (giou loss, Normalizer: (iou: 0.07, cls: 1.00) Region 94 Avg (IOU: 0.5, GIOU: 0.4), Class: 0.6, Obj: 0.7,"
        " No Obj: 0.01, .5R: 0.5, .75R: 0.25, count: 2, loss = 3.5, class_loss = 1.25, iou_loss = 2.25\n"
        "Region Avg IOU: 0.412, Class: 0.9, Obj: 0.3, No Obj: 0.002, Avg Recall: 0.5,  count: 8\n"
        "v3 (ciou loss, Normalizer: (iou: 0.07, obj: 1.00, cls: 1.00) Region 30 Avg (IOU: 0.8), count: 3, "
        "total_loss = 1.5 \n"
        " 10: 4.0, 5.5 avg loss, 0.1 rate, 2.0 seconds, 128 images\n")
    got = [(r["iteration"], r["layer"], r["iou"], r["class"], r["r50"], r["r75"], r["count"], r["class_loss"],
            r["total_loss"]) for r in log.layers]
    assert got == [(10, 82, 0.331966, 0.500477, 0.25, 0.0, 4, None, None),
                   (10, 94, 0.5, 0.6, 0.5, 0.25, 2, 1.25, 3.5),
                   (10, None, 0.412, 0.9, 0.5, None, 8, None, None),
                   (10, 30, 0.8, None, None, None, 3, None, 1.5)]


def test_layers_wait_for_their_iteration_line():
    parser = LogParser()
    parser.feed(b"Region 16 Avg IOU: 0.5, Class: 0.5, Obj: 0.5, No Obj: 0.5, .5R: 0.5, .75R: 0.5,  count: 1\n")
    assert parser.log.layers[0]["iteration"] is None
    parser.feed(b"7: 1.0, 1.0 avg, 0.1 rate, 1.0 seconds, 4 images\n")
    assert parser.log.layers[0]["iteration"] == 7


def test_resizing_lines_of_each_fork():
    log = parse(AB_ITER.format(i=10, img=40) + "Resizing\n416\n"                     # pjreddie
                + "Resizing, random_coef = 1.40 \n\n 608 x 608 \n"                  # AlexeyAB now
                + "Resizing\n320 x 320 \n"                                            # AlexeyAB ≤ 2019
                + "Resizing, random_coef=1.4, batch=4, 224x224\n"                    # hank
                + "Resizing to initial size: 416 x 416 \n")
    assert [(r["iteration"], r["width"], r["height"]) for r in log.resizes] == [
        (10, 416, 416), (10, 608, 608), (10, 320, 320), (10, 224, 224), (10, 416, 416)]


# file-less error lines, each one with its kind and whether the run stops (facts §6)
ERROR_LINES = [
    (" Try to set subdivisions=64 in your cfg-file. \n CUDA Error: out of memory\n", "cuda_oom", True),
    ("CUDA memory allocation failed (1234).\nIf possible, try to set subdivisions=... higher in your cfg file.\n",
     "cuda_oom", True),
    ("Couldn't open file: data/obj.data\n", "missing_file", True),
    ('Cannot load image "data/img/a.jpg"\nSTB Reason: can\'t fopen\n', "missing_image", True),
    ("* Error message:  invalid class ID #1 in exp/imgs/x.txt\n", "wrong_annotation", True),
    ("* Error message:  something new\n", "fatal", True),
    ("double free or corruption (out)\n", "crash", True),
    ("Darknet error location: ./src/data.c, load_data(), line #1\nmosaic=1 - compile Darknet with OpenCV for using "
     "mosaic=1: Success\n", "config", True),
    ("Darknet error location: ./src/x.c, f(), line #2\nSomething unexpected: Success\n", "fatal", True),
    ("    1 Type not recognized: [maxpoool]\n", "cfg_layer", True),
    ("Saving weights to backup/m_final.weights\nCouldn't open file: backup/m_final.weights\n", "write_failed", True),
]


@pytest.mark.parametrize("text,kind,fatal", ERROR_LINES)
def test_error_lines(text, kind, fatal):
    errors = parse(text).errors
    assert [(e["kind"], e["fatal"]) for e in errors] == [(kind, fatal)]
    assert failure_reason(parse(text)) == errors[0]["message"]


def test_oom_reason_says_raise_subdivisions():
    assert "raise subdivisions" in failure_reason(parse(ERROR_LINES[0][0]))


def test_alexeyab_goes_on_after_a_missing_image():
    text = " GPU isn't used \n" + ERROR_LINES[3][0] + AB_ITER.format(i=1, img=4)
    log = parse(text)
    assert [(e["kind"], e["fatal"]) for e in log.errors] == [("missing_image", False)]
    assert failure_reason(log) is None


def test_alphabet_images_of_detector_test_are_not_errors():
    assert parse('Cannot load image "data/labels/32_0.png"\nSTB Reason: can\'t fopen\n').errors == []


def test_nan_loss_is_an_error_and_an_alert():
    text = AB_ITER.format(i=1, img=4) + " 2: nan, -nan avg loss, 0.001000 rate, 0.5 seconds, 8 images, 1.0 hours left\n"
    log = parse(text)
    assert [(e["kind"], e["fatal"]) for e in log.errors] == [("nan", True)]
    assert "NaN at iteration 2" in failure_reason(log)
    assert [(a["kind"], a["iteration"]) for a in as_json(log)["alerts"]] == [("nan", 2)]
    assert as_json(log)["iterations"][1]["loss"] is None  # strict JSON
    json.dumps(as_json(log), allow_nan=False)


def test_map_train_line_alone_when_the_block_was_lost():
    log = parse(AB_ITER.format(i=36, img=4) + " mean_average_precision (mAP@0.50) = 0.000000 \n")
    assert [(m["iteration"], m["map50"]) for m in log.map] == [(36, 0.0)]


# -- alerts ---------------------------------------------------------------------------------------------------
@needs_fixtures
def test_images_removed_during_a_real_run_raise_an_alert_with_the_count_and_the_first_paths():
    log = parse_file(FIXTURES / "pjreddie_debian_images_removed_midrun.log")
    found = [a for a in alerts(log, now=0, last_growth=0, process_alive=True, max_batches=8)
             if a["kind"] == "missing_images"]
    assert found == [{"kind": "missing_images", "iteration": 8, "count": 5,
                      "paths": ["data/cca5a5a19e4d6e3c.jpg", "data/7c65c1e582e2e662.jpg", "data/23c6612f48268673.jpg"],
                      "message": "darknet could not load 5 images (10 error lines in the log), first "
                                 "data/cca5a5a19e4d6e3c.jpg, data/7c65c1e582e2e662.jpg, data/23c6612f48268673.jpg, …: "
                                 "they were removed or are unreadable; restore them or drop them from the list."}]
    assert failure_reason(log) is None  # OpenCV's loader goes on: not why a run would stop
    assert [a["kind"] for a in as_json(log)["alerts"]] == ["missing_images"]  # parse-log shows it too


def test_453_missing_images_of_a_live_alexeyab_run_are_one_alert():
    lines = [" GPU isn't used \n"]
    for i in range(1, 454):
        lines.append(f'Cannot load image "data/{i:016x}.jpg"\nSTB Reason: can\'t fopen\n')
        if i % 50 == 0:
            lines.append(AB_ITER.format(i=i // 50, img=4 * i // 50))
    log = parse("".join(lines))
    (alert,) = log_alerts(log)
    assert alert["count"] == 453 and alert["iteration"] == 9
    assert alert["message"].startswith("darknet could not load 453 images (453 error lines in the log), first "
                                       "data/0000000000000001.jpg, data/0000000000000002.jpg, data/0000000000000003.jpg, …")
    assert failure_reason(log) is None  # AlexeyAB goes on: the run is "running", the alert says what is wrong


def rising_log(n: int) -> ParsedLog:
    return parse("".join(f" {i}: 1.0, {1 + i / 100:f} avg loss, 0.1 rate, 1.0 seconds, {4 * i} images\n"
                         for i in range(1, n + 1)))


def test_alerts_none_for_a_healthy_live_run():
    log = parse_file(FIXTURES / "alexeyab_cpu_yolov3tiny_map.log")
    assert alerts(log, now=1000.0, last_growth=990.0, process_alive=True, max_batches=120) == []
    assert alerts(log, now=1000.0, last_growth=990.0, process_alive=False, max_batches=120) == []


def test_alert_rising_avg_loss():
    assert alerts(rising_log(5), now=0, last_growth=0, process_alive=True, max_batches=None, rising_k=5) == []
    got = alerts(rising_log(6), now=0, last_growth=0, process_alive=True, max_batches=None, rising_k=5)
    assert [(a["kind"], a["iteration"]) for a in got] == [("rising", 6)]


def test_alert_stalled_only_while_the_process_lives():
    log = rising_log(3)
    kw = dict(max_batches=None, stall_seconds=120, rising_k=50)
    assert alerts(log, now=1119.0, last_growth=1000.0, process_alive=True, **kw) == []
    got = alerts(log, now=1121.0, last_growth=1000.0, process_alive=True, **kw)
    assert [(a["kind"], a["iteration"]) for a in got] == [("stalled", 3)]
    assert alerts(log, now=1121.0, last_growth=1000.0, process_alive=False, **kw) == []


def test_alert_exit_before_max_batches():
    got = alerts(rising_log(3), now=0, last_growth=None, process_alive=False, max_batches=10, rising_k=50)
    assert [(a["kind"], a["iteration"], a["message"]) for a in got] == [
        ("early_exit", 3, "darknet ended at iteration 3 of 10.")]
    assert alerts(rising_log(3), now=0, last_growth=None, process_alive=False, max_batches=3, rising_k=50) == []


# -- follower -----------------------------------------------------------------------------------------------
def test_follower_reads_only_new_bytes(tmp_path):
    path = tmp_path / "train_log.txt"
    follower = LogFollower(path)
    path.write_text(AB_ITER.format(i=1, img=4) + " 2: 2.0, 2.9")
    assert follower.refresh() == 1 and follower.offset == path.stat().st_size
    assert follower.refresh() == 0
    with open(path, "a") as f:
        f.write(" avg loss, 0.001000 rate, 0.5 seconds, 8 images, 1.0 hours left\n" + AB_ITER.format(i=3, img=12))
    assert follower.refresh() == 2
    assert [r["iteration"] for r in follower.log.iterations] == [1, 2, 3]
    assert follower.log.iteration(1)["avg_loss"] == 2.9


def test_follower_restarts_on_a_truncated_log(tmp_path):
    path = tmp_path / "train_log.txt"
    path.write_text(AB_ITER.format(i=1, img=4) + AB_ITER.format(i=2, img=8))
    follower = LogFollower(path)
    assert follower.refresh() == 2
    path.write_text(AB_ITER.format(i=1, img=4))
    assert follower.refresh() == 1
    assert [r["iteration"] for r in follower.log.iterations] == [1]


# -- the tail of a run's log: what darknet_runner.runstate reads (last iteration, failure reason) ------------
def test_tail_of_a_missing_or_empty_log(tmp_path):
    (tmp_path / "empty.log").write_bytes(b"")
    for log in (parse_tail(tmp_path / "missing.log"), parse_tail(tmp_path / "empty.log")):
        assert (log.last_iteration, failure_reason(log)) == (None, None)


@needs_fixtures
@pytest.mark.parametrize("name, iteration, words", [
    ("pjreddie_debian_exp_filters_mismatch_rc134.log", None, "filters"),
    ("pjreddie_debian_exp_missing_label_rc139.log", None, "exp/imgs/missing_label.txt"),
    ("hankai_exp_missing_label.log", None, "exp/imgs/missing_label.txt"),
    ("pjreddie_debian_yolov3tiny_stdbufL.log", 30, None),
    ("alexeyab_cpu_yolov3tiny_map.log", 120, None),
])
def test_tail_of_fixture_logs(name, iteration, words):
    log = parse_tail(FIXTURES / name)
    assert log.last_iteration == iteration
    reason = failure_reason(log)
    assert (reason is None) if words is None else (words in reason)


def test_tail_reads_the_current_segment_only_and_its_last_line(tmp_path):
    path = tmp_path / "train_log.txt"
    first = "Couldn't open file: train.txt\n" + AB_ITER.format(i=1, img=4)
    path.write_text(first + AB_ITER.format(i=2, img=8) + AB_ITER.format(i=3, img=12).rstrip("\n"))
    log = parse_tail(path, offset=len(first.encode()))
    assert (log.iteration_count, log.last_iteration, failure_reason(log)) == (2, 3, None)
    assert parse_tail(path, max_bytes=len(AB_ITER.format(i=3, img=12)) + 1).iteration_count == 1
    assert "train.txt" in failure_reason(parse_tail(path))


def test_failure_reasons_of_short_logs():
    """The fatal patterns of facts §7 (jobs once kept a second copy of them)."""
    text = "   16 yolo\ndarknet: ./src/parser.c:315: parse_yolo: Assertion `l.outputs == params.inputs' failed.\n"
    assert failure_reason(parse(text)) == (
        "filters= in the [convolutional] layer before a [yolo] layer does not match classes: set it to "
        "(classes + 5) × 3 (18 for one class).")
    assert failure_reason(parse("Couldn't open file: train.txt\n")) == (
        "darknet could not open train.txt: check the paths in obj.data and the list files (relative to the run "
        "folder, no spaces).")
    assert failure_reason(parse("7: nan, nan avg, 0.001 rate, 0.5 seconds, 28 images\n")) == (
        "The loss became NaN at iteration 7: training diverged; lower learning_rate, lengthen burn_in or check the "
        "labels.")
    assert failure_reason(parse("1: 2.0, 2.0 avg, 0.001 rate, 0.5 seconds, 4 images\n")) is None


def test_strip_ansi():
    assert strip_ansi("\x1b[1;37mb\x1b[0m c\x07") == "b c"
    assert strip_ansi("\x1b]2;12/500: loss=1.0 hours left=2\x07x") == "x"
    assert strip_ansi("plain") == "plain"


# -- helpers for charts and the CLI ---------------------------------------------------------------------------
@needs_fixtures
def test_frames():
    log = parse_file(FIXTURES / "pjreddie_debian_yolov3tiny_stdbufL.log")
    frame = iterations_frame(log)
    assert list(frame.columns) == ["iteration", "loss", "avg_loss", "rate", "seconds", "images", "hours_left"]
    assert (len(frame), frame["iteration"].iloc[-1], frame["images"].iloc[-1]) == (30, 30, 120)
    assert frame["hours_left"].isna().all()
    layers = layers_frame(log)
    assert (len(layers), layers["iteration"].iloc[0], layers["layer"].iloc[1]) == (60, 1, 23)


@needs_fixtures
def test_cli_parse_log_json(capsys):
    rc = main("python -m darknet_runner", "test", ["darknet_runner.logs.command"],
              ["parse-log", str(FIXTURES / "alexeyab_exp_filters_mismatch.log"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert list(out) == ["fork", "iterations", "layers", "map", "weights", "errors", "alerts"]
    assert (out["fork"], out["iterations"], out["errors"][0]["kind"]) == ("alexeyab", [], "filters_mismatch")


@needs_fixtures
def test_cli_parse_log_summary(capsys):
    rc = main("python -m darknet_runner", "test", ["darknet_runner.logs.command"],
              ["parse-log", str(FIXTURES / "alexeyab_cpu_yolov3tiny_map.log")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "iterations: 120 (last 120 of 120)" in out and "mAP@0.5 at iteration 120: 90.41 %" in out


def test_cli_parse_log_missing_file(capsys, tmp_path):
    rc = main("python -m darknet_runner", "test", ["darknet_runner.logs.command"], ["parse-log", str(tmp_path / "x")])
    assert rc == 2 and "No log file at" in capsys.readouterr().err


def test_nan_values_are_floats_in_python():
    log = parse(" 1: nan, nan avg loss, 0.1 rate, 1.0 seconds, 4 images\n")
    assert math.isnan(log.iterations[0]["loss"])


def test_v3_lines_of_an_older_year_alone_in_a_feed():
    """No Region line: the bulk regex of today's format misses them and the general one takes over."""
    log = parse("v3 (iou loss, Normalizer: (iou: 0.07, cls: 1.00) Region 94 Avg (IOU: 0.5, GIOU: 0.4), Class: 0.6, "
                "Obj: 0.7, No Obj: 0.01, .5R: 0.5, .75R: 0.25, count: 2, class_loss = 1.25, iou_loss = 2.25, "
                "total_loss = 3.5 \n"
                "v3 (mse loss, Normalizer: (iou: 0.75, obj: 1.00, cls: 1.00) Region 16 Avg (IOU: 0.25), count: 1, "
                "class_loss = 1.0, iou_loss = 0.5, total_loss = 1.5 \n" + AB_ITER.format(i=3, img=12))
    assert [(r["layer"], r["iou"], r["class"], r["count"], r["total_loss"], r["iteration"]) for r in log.layers] == [
        (94, 0.5, 0.6, 2, 3.5, 3), (16, 0.25, None, 1, 1.5, 3)]


def test_windows_nan_in_todays_v3_line():
    log = parse("v3 (mse loss, Normalizer: (iou: 0.75, obj: 1.00, cls: 1.00) Region 16 Avg (IOU: -1.#IND00), "
                "count: 1, class_loss = 2.0, iou_loss = 0.0, total_loss = 2.0 \n")
    assert (log.layer_count, log.layers[0]["iou"], log.layers[0]["total_loss"]) == (1, None, 2.0)


def test_hank_v4_iteration_line_with_last_best_next():
    log = parse("5: loss=2.0, avg loss=4.5, last=12.50%, best=none, next=100, rate=0.001000, 210.5 milliseconds, "
                "320 images, time remaining=45 minutes\n")
    assert log.iterations == [{"iteration": 5, "loss": 2.0, "avg_loss": 4.5, "rate": 0.001,
                               "seconds": pytest.approx(0.2105), "images": 320, "hours_left": 0.75}]


def test_pjreddie_cuda_oom_then_assertion_reason_is_the_oom():
    log = parse("CUDA Error: out of memory\ndarknet: ./src/cuda.c:36: check_error: Assertion `0' failed.\n")
    assert [(e["kind"], e["fatal"]) for e in log.errors] == [("cuda_oom", True), ("crash", True)]
    assert failure_reason(log).startswith("The GPU ran out of memory: raise subdivisions")


def test_cuda_status_error_of_2019_builds():
    log = parse("CUDA status Error: file: ./src/dark_cuda.c : () : line: 235 : build time: Jan  1 2020 - 00:00:00\n")
    assert [(e["kind"], e["line"]) for e in log.errors] == [("cuda", 1)]


SAMPLE = ("Darknet V5 \x1b[1;37mv5.1\x1b[0m\r\n"
          "\x1b]2;1/9: loss=34.9 time=unknown\x07\x1b[1;37m1\x1b[0m: loss=\x1b[0;31m34.913\x1b[0m, avg loss=34.913, "
          "last=none, best=none, mAP=100, rate=0.00000000, load 4=10.5 milliseconds, train=287.6 milliseconds, "
          "4 images, time remaining=unknown\r\n"
          "v3 mse loss, Normalizer: (iou: 0.75, obj: 1.00, cls: 1.00) Region 16 Avg (IOU: 0.5), count: 1, "
          "class_loss: 1.0, iou_loss: 2.0, total_loss: 3.0\r\n"
          "2: loss=30.0, avg loss=34.5, rate=0.1, 1 seconds, 8 images, time remaining=3 seconds\r\n"
          "Calculating mAP (mean average precision) with threshold 0.25 and IoU threshold 0.50.\r\n"
          "\rrank=0 of ranks=30\r\n  Id Name   AP  TP  FP  FN  GT  F1  AvgIoU\r\n"
          "   \x1b[0m0\x1b[0m box   94.2761   5   1   4   9  66.6667  56.4160\r\n"
          "-> mean average precision (mAP@0.50)=\x1b[1;34m94.28%\x1b[0m\r\n"
          "Saving weights to \x1b[1;35mbackup/x_best.weights\x1b[0m\r\n"
          "* Error message:  failed to open annotation file \"a b.txt\"\r\n").encode()


def test_sample_whole():
    log = parse(SAMPLE)
    assert (log.fork, log.max_batches, log.iteration_count, log.layer_count) == ("hank", 9, 2, 1)
    assert [(m["iteration"], m["map50"], m["classes"][0]["tp"]) for m in log.map] == [(2, 0.9428, 5)]
    assert log.weights == [{"iteration": 2, "path": "backup/x_best.weights"}]
    assert [(e["kind"], e["line"]) for e in log.errors] == [("missing_label", 11)]
    assert log.layers[0]["iteration"] == 2


def test_any_cuts_give_the_same_records():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    whole = as_json(parse(SAMPLE))

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.lists(st.integers(min_value=0, max_value=len(SAMPLE)), max_size=40))
    def check(cuts):
        bounds = [0, *sorted(cuts), len(SAMPLE)]
        assert as_json(parse_pieces([SAMPLE[a:b] for a, b in zip(bounds, bounds[1:])])) == whole

    check()
