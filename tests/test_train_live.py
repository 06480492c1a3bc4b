"""The Train page's live numbers without Streamlit: resumed log segments merged by iteration, the
run-file stamp, resume markers, the form's text fields, and the runner reaped after it ends."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from darknet_runner.logs import LogParser, iterations_frame, layers_frame, resume_points
from dashboard import charts, trainview
from pipeline.cli import UserError

ITERATION_COLUMNS = ["iteration", "loss", "avg_loss", "rate", "seconds", "images", "hours_left"]


def _text(iterations, avg: float, iou: float) -> str:
    """pjreddie lines: two Region lines (IoU ``iou``) then ``i: loss, avg avg, …`` per iteration."""
    return "".join(f"Region 16 Avg IOU: {iou}, Class: 0.5, Obj: 0.4, No Obj: 0.01, .5R: 0.5, .75R: 0.1,  count: 5\n"
                   f"Region 23 Avg IOU: {iou}, Class: 0.5, Obj: 0.4, No Obj: 0.01, .5R: 0.5, .75R: 0.1,  count: 1\n"
                   f"{i}: {avg + i - 0.5}, {avg + i} avg, 0.001000 rate, 0.5 seconds, {4 * i} images\n"
                   for i in iterations)


def _parse(text: str):
    parser = LogParser()
    parser.feed(text.encode())
    parser.finish()
    return parser.log


# What darknet left: stopped at 4 (weights saved at 2), resumed from 2, so 3 and 4 come twice; the
# first segment also ends with a Region line whose iteration line never came.
FIRST = _text([1, 2, 3, 4], avg=10, iou=0.25) + \
    "Region 16 Avg IOU: 0.99, Class: 0.5, Obj: 0.4, No Obj: 0.01, .5R: 0.5, .75R: 0.1,  count: 5\n"
SECOND = _text([3, 4, 5], avg=20, iou=0.75)


def test_no_segment_and_empty_segments_give_empty_frames():
    for log in ([], [_parse("")], _parse(""), [_parse(""), _parse("")]):
        frame = iterations_frame(log)
        assert list(frame.columns) == ITERATION_COLUMNS and frame.empty
        assert layers_frame(log).empty
        assert resume_points(log) == []


def test_resumed_segments_merge_by_iteration_the_later_winning():
    segments = [_parse(FIRST), _parse(SECOND)]
    frame = iterations_frame(segments)
    assert frame["iteration"].tolist() == [1, 2, 3, 4, 5]
    assert frame["avg_loss"].tolist() == [11.0, 12.0, 23.0, 24.0, 25.0]  # 3 and 4 from the resumed segment
    assert frame["images"].tolist() == [4, 8, 12, 16, 20]
    assert frame.index.tolist() == [0, 1, 2, 3, 4]
    assert resume_points(segments) == [3]
    layers = layers_frame(segments)
    assert layers["iteration"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # the dangling 0.99 line is dropped
    assert layers["iou"].tolist() == [0.25] * 4 + [0.75] * 6
    assert layers["layer"].tolist() == [16, 23] * 5


def test_a_log_read_in_one_piece_merges_the_same_way():
    whole = _parse(_text([1, 2, 3, 4], avg=10, iou=0.25) + SECOND)
    assert iterations_frame(whole)["avg_loss"].tolist() == [11.0, 12.0, 23.0, 24.0, 25.0]
    assert layers_frame(whole)["iou"].tolist() == [0.25] * 4 + [0.75] * 6
    assert resume_points(whole) == [3]


def test_a_resumed_segment_without_iterations_yet_changes_nothing_and_a_restart_replaces_all():
    first = _parse(FIRST)
    assert iterations_frame([first, _parse("")])["iteration"].tolist() == [1, 2, 3, 4]
    assert resume_points([first, _parse("")]) == []
    pending = layers_frame([_parse(_text([1], avg=10, iou=0.25)), _parse(SECOND.split("3: ")[0])])
    assert pending["iteration"].tolist()[:2] == [1, 1] and pending["iteration"].isna().tolist() == [False] * 2 + [True] * 2
    restarted = iterations_frame([first, _parse(_text([1, 2], avg=30, iou=0.5))])  # no weights: from scratch
    assert restarted["avg_loss"].tolist() == [31.0, 32.0]


def test_run_log_reads_each_segment_from_its_offset(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(FIRST)
    run = {"segments": [{"log_offset": 0}, {"log_offset": len(FIRST)}, {"log_offset": "garbage"}]}
    assert trainview.segment_offsets(run) == (0, len(FIRST))
    assert trainview.segment_offsets({}) == (0,)
    reader = trainview.RunLog(log, trainview.segment_offsets(run))
    assert reader.refresh() == 0 and reader.current.iteration_count == 0
    with log.open("a") as handle:
        handle.write(SECOND)
    assert reader.refresh() == 3
    assert [s.iteration_count for s in reader.segments] == [4, 3]
    assert iterations_frame(reader.segments)["avg_loss"].tolist() == [11.0, 12.0, 23.0, 24.0, 25.0]
    assert trainview.last_record(reader.segments)["iteration"] == 5
    assert trainview.last_record([_parse("")]) is None


def test_loss_chart_marks_each_resume_and_legends_sit_under_the_plot():
    frame = iterations_frame([_parse(FIRST), _parse(SECOND)])
    fig = charts.loss_figure(frame, resumes=[3])
    assert [(s.type, s.x0, s.x1) for s in fig.layout.shapes] == [("line", 3, 3)]
    assert fig.layout.annotations[0].text == "resumed at 3"
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"  # not under plotly's toolbar
    assert charts.loss_figure(frame).layout.shapes == ()


def test_a_run_that_is_not_running_has_no_eta():
    frame = iterations_frame(_parse(_text(range(1, 11), avg=1, iou=0.5)))
    assert trainview.progress_stats(frame, 40)["eta_seconds"] == 15.0
    stopped = trainview.progress_stats(frame, 40, running=False)
    assert stopped["eta_seconds"] is None and stopped["iteration"] == 10 and stopped["seconds_per_iteration"] == 0.5


def test_anchor_text_round_trip_and_refusal():
    assert trainview.format_anchors(None) == "stock"
    assert trainview.format_anchors(((24.7, 4.9), (38.0, 9.4))) == "24.7,4.9 38,9.4"
    assert trainview.parse_anchors(" 24.7,4.9  38,9.4 ") == [(24.7, 4.9), (38.0, 9.4)]
    assert trainview.parse_anchors("10, 14, 23, 27") == [(10.0, 14.0), (23.0, 27.0)]
    assert trainview.parse_anchors("Stock") == "stock"
    for bad in ("", "10,14 23", "a,b", "nan,1"):
        with pytest.raises(UserError, match=r"^anchors must be width,height pairs"):
            trainview.parse_anchors(bad)


def test_the_pretrained_source():
    assert trainview.pretrained_source("yolov3-tiny.conv.15") == "PyPI, 66 MB"
    assert trainview.pretrained_source("yolov3-tiny.conv.11") is None


def test_run_stamp_changes_only_when_a_run_file_does(tmp_path):
    run = tmp_path / "r1"
    run.mkdir()
    (run / "run.json").write_text("{}")
    first = trainview.run_stamp(run)
    assert trainview.run_stamp(run) == first
    (run / "train_log.txt").write_text("1: 2.0, 2.1 avg, 0.001 rate, 0.5 seconds, 4 images\n")
    second = trainview.run_stamp(run)
    assert second != first
    (run / "pid").write_text(f"{os.getpid()}\n")  # a live process group leader? pytest is not one
    assert trainview.run_stamp(run)[-1] in (True, False)
    (run / "exit_code").write_text("0\n")
    assert trainview.run_stamp(run)[-1] is None  # ended: /proc is not read


def test_a_started_runner_is_reaped_when_it_ends(tmp_path):
    """The dashboard's server lives long: the runner it launched must not stay behind as <defunct>."""
    from darknet_runner import jobs
    from darknet_runner.binary import PJREDDIE, DarknetInfo
    from tests.support.runs import make_run, make_split_dataset

    make_split_dataset(tmp_path)
    info = DarknetInfo("/bin/true", PJREDDIE, "", False, False, False, False)  # "trains" by exiting at once
    run_dir = make_run(tmp_path, darknet=info)
    pid = jobs.start(run_dir, skip_preflight=True).pid
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # nothing here waits on it: only start()'s own reaper can
    assert not Path(f"/proc/{pid}").exists(), Path(f"/proc/{pid}/stat").read_text()
