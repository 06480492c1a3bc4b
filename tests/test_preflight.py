"""Preflight: each fork's label-path rule, and one sentence per problem before a launch."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from darknet_runner import preflight
from darknet_runner.binary import ALEXEYAB, HANK, PJREDDIE
from darknet_runner.preflight import Problem, label_path
from tests.support.runs import PJ_INFO, make_run, make_split_dataset


def _kinds(problems: list[Problem]) -> list[str]:
    return [p.kind for p in problems]


def _set_fork(run_dir: Path, fork: str) -> None:
    path = run_dir / "run.json"
    run = json.loads(path.read_text())
    run["fork"] = fork
    path.write_text(json.dumps(run))


@pytest.fixture
def run_dir(tmp_path):
    make_split_dataset(tmp_path, train=4, valid=2)
    return make_run(tmp_path)


def test_a_fresh_run_is_clean(run_dir):
    assert preflight.check(run_dir) == []


@pytest.mark.parametrize("fork, image, label", [
    (PJREDDIE, "data/0a1b.jpg", "data/0a1b.txt"),
    (PJREDDIE, "data/openimages/x.jpg", "data/openlabels/x.txt"),
    (PJREDDIE, "fruit/strawberry/a.jpg", "fruit/stlabelsberry/a.txt"),
    (PJREDDIE, "/home/rawson/images/a.jpg", "/home/labelsson/labels/a.txt"),  # images, then raw
    (PJREDDIE, "/home/rawson/a.jpg", "/home/labelsson/a.txt"),
    (PJREDDIE, "OpenImages/a.JPEG", "OpenImages/a.txt"),  # case-sensitive
    (PJREDDIE, "a.jpg.d/b.png", "a.txt.d/b.txt"),  # .jpg replaced anywhere, then .png
    (ALEXEYAB, "data/openimages/x.jpg", "data/openimages/x.txt"),
    (ALEXEYAB, "voc/JPEGImages/x.jpeg", "voc/labels/x.txt"),
    (ALEXEYAB, "a.jpg.d/b.png", "a.jpg.d/b.txt"),
    (ALEXEYAB, "x.webp", None),
    (HANK, "dir.v2/img.jpg", "dir.v2/img.txt"),
    (HANK, "dir.v2/img", "dir.txt"),
])
def test_label_path_rules(fork, image, label):
    assert label_path(fork, image) == label


def test_pjreddie_rewrite_that_misses_the_label(run_dir):
    # a list that points into a folder named "strawberry": pjreddie looks in "stlabelsberry"
    straw = run_dir / "strawberry"
    straw.mkdir()
    first = (run_dir / "train.txt").read_text().splitlines()[0]
    shutil.copy(run_dir / first, straw / "a.jpg")
    shutil.copy((run_dir / first).with_suffix(".txt"), straw / "a.txt")
    (run_dir / "train.txt").write_text("strawberry/a.jpg\n")
    assert preflight.check(run_dir) == [Problem(
        "missing-label", "the pjreddie fork looks for the label of strawberry/a.jpg -> stlabelsberry/a.txt (in "
        "train.txt), which does not exist; keep each .txt next to its image in folders without 'images', "
        "'JPEGImages' or 'raw' in their names (prepare the dataset again)")]
    _set_fork(run_dir, HANK)
    assert preflight.check(run_dir) == []


def test_missing_images_are_named_then_counted(run_dir):
    (run_dir / "valid.txt").write_text("".join(f"data/{i:016x}.jpg\n" for i in range(5)))
    problems = preflight.check(run_dir)
    assert _kinds(problems) == ["missing-image"] * 4
    assert problems[0].message == ("image data/0000000000000000.jpg (in valid.txt) does not exist; prepare the "
                                   "dataset again or fix the list")
    assert problems[3].message.startswith("2 more files have the same problem (missing-image)")


def test_class_id_out_of_range(run_dir):
    first = (run_dir / "train.txt").read_text().splitlines()[0]
    label = (run_dir / first).with_suffix(".txt")
    label.write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.2 0.2\n")
    assert preflight.check(run_dir) == [Problem(
        "bad-class", f"{first[:-4]}.txt has class id 3; class ids must be 0..0; prepare the dataset again with "
        f"the same classes")]


def test_empty_label_file_is_fine(run_dir):
    first = (run_dir / "train.txt").read_text().splitlines()[0]
    (run_dir / first).with_suffix(".txt").write_text("")
    assert preflight.check(run_dir) == []


def test_whitespace_in_data_values(run_dir):
    (run_dir / "my list.txt").write_text((run_dir / "train.txt").read_text())
    text = (run_dir / "obj.data").read_text().replace("train=train.txt", "train = my list.txt")
    (run_dir / "obj.data").write_text(text)
    problems = preflight.check(run_dir)
    assert problems[0] == Problem("data-whitespace", "obj.data: the value of train ('my list.txt') contains "
                                  "whitespace, which darknet deletes; use a path without spaces")
    assert problems[1].kind == "missing-file" and "train=mylist.txt does not exist" in problems[1].message


def test_filters_that_disagree_with_classes(run_dir):
    cfg = (run_dir / "model.cfg").read_text().replace("filters=18", "filters=255", 1)
    (run_dir / "model.cfg").write_text(cfg)
    assert preflight.check(run_dir) == [Problem(
        "filters", "model.cfg: the convolution before [yolo] layer 16 has filters=255 but classes=1 with 3 masks "
        "needs filters=18; set it (or create the run again)")]


def test_classes_that_disagree_with_names(run_dir):
    (run_dir / "obj.names").write_text("Boat\nCanoe\n")
    assert preflight.check(run_dir) == [
        Problem("classes", "model.cfg has classes=1 in a [yolo] layer but obj.names lists 2 names; create the run "
                "again"),
        Problem("classes", "obj.data says classes=1 but obj.names lists 2 names; create the run again")]


def test_yolov4_tiny_is_refused_for_pjreddie_only(tmp_path):
    make_split_dataset(tmp_path, train=2, valid=1)
    run_dir = make_run(tmp_path, model="yolov4-tiny")
    problems = preflight.check(run_dir)
    assert _kinds(problems) == ["model"]
    assert "pjreddie's darknet cannot train" in problems[0].message
    _set_fork(run_dir, ALEXEYAB)
    assert preflight.check(run_dir) == []


def test_map_needs_a_fork_that_has_it(tmp_path):
    make_split_dataset(tmp_path, train=2, valid=1)
    run_dir = make_run(tmp_path, use_map=True)
    assert preflight.check(run_dir) == [Problem("map", "the pjreddie fork has no -map; train without --map")]


def test_pretrained_weights_must_exist_and_have_a_header(tmp_path):
    make_split_dataset(tmp_path, train=2, valid=1)
    run_dir = make_run(tmp_path, pretrained="yolov3-tiny.conv.11")
    problems = preflight.check(run_dir)
    assert _kinds(problems) == ["weights"]
    assert "cannot read the weights file" in problems[0].message and "weights download NAME" in problems[0].message
    (tmp_path / "weights" / "yolov3-tiny.conv.11").write_bytes(b"<html>not found</html>")
    assert "does not start with a darknet weights header" in preflight.check(run_dir)[0].message
    (tmp_path / "weights" / "yolov3-tiny.conv.11").write_bytes(bytes(20) + bytes(8))
    assert preflight.check(run_dir) == []


def test_missing_binary(tmp_path):
    make_split_dataset(tmp_path, train=2, valid=1)
    run_dir = make_run(tmp_path, darknet=PJ_INFO.__class__(**{**PJ_INFO.to_dict(), "path": str(tmp_path / "nope")}))
    assert _kinds(preflight.check(run_dir)) == ["darknet"]


def _cli(argv):
    parser = argparse.ArgumentParser()
    preflight.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exit_codes(run_dir, capsys):
    assert _cli(["preflight", str(run_dir)]) == 0
    assert capsys.readouterr().out == "r1: ready to train\n"
    (run_dir / "obj.names").write_text("")
    assert _cli(["preflight", str(run_dir)]) == 1
    assert capsys.readouterr().out.startswith("[classes] model.cfg has classes=1 in a [yolo] layer but obj.names "
                                              "lists 0 names")


@pytest.mark.parametrize("text, bad", [("0 0.5 0.5 0 0.1\n", "line 1: 0.5 0.5 0 0.1"),
                                       ("0 0.5 0.5 0.1 0.1\n0 1.2 0.5 0.1 0.1\n", "line 2: 1.2 0.5 0.1 0.1"),
                                       ("0 0.5 0.5 0.1 nan\n", "line 1: 0.5 0.5 0.1 nan")])
def test_boxes_that_are_not_cxcywh_rel(run_dir, text, bad):
    first = (run_dir / "train.txt").read_text().splitlines()[0]
    (run_dir / first).with_suffix(".txt").write_text(text)
    assert preflight.check(run_dir) == [Problem(
        "bad-box", f"{first[:-4]}.txt {bad} is not a box (class cx cy w h, centre in [0, 1], size in (0, 1]); "
        "prepare the dataset again")]


def test_label_reading_stops_at_the_first_bad_line_like_darknet(run_dir):
    first = (run_dir / "train.txt").read_text().splitlines()[0]
    (run_dir / first).with_suffix(".txt").write_text("0 0.5 0.5 0.1 0.1\nnot a box\n5 9 9 9 9\n")
    assert preflight.check(run_dir) == []
