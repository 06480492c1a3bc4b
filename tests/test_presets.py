"""darknet_runner.presets: the quick/gpu/custom presets, their validation and the duration estimate."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from darknet_runner import presets
from darknet_runner.binary import ALEXEYAB, DarknetInfo
from darknet_runner.cfg import CfgError
from pipeline.atomic import write_json
from pipeline.cli import UserError
from pipeline.workspace import Workspace
from tests.support.runs import PJ_INFO, make_run, make_split_dataset

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "darknet"


@pytest.fixture
def ws(tmp_path) -> Workspace:
    dataset = make_split_dataset(tmp_path, train=12, valid=4, test=4)
    manifest = Workspace(tmp_path).dataset("boat").load()
    write_json(dataset / "dataset.json", {**manifest, "prepare": {"settings": {"size": 160}}})
    return Workspace(tmp_path)


def test_an_unprepared_dataset_has_no_quick_preset(tmp_path):
    make_split_dataset(tmp_path)
    with pytest.raises(UserError, match="dataset 'boat' is not prepared: prepare it"):
        presets.make_preset("quick", Workspace(tmp_path), "boat", PJ_INFO)
    with pytest.raises(UserError, match="unknown preset 'fast'"):
        presets.make_preset("fast", Workspace(tmp_path), "boat", PJ_INFO)


def test_a_cuda_linked_binary_gets_the_gpu_preset(tmp_path):
    cpu = tmp_path / "cpu-darknet"
    cpu.write_bytes(b"\x7fELF...libm.so.6\0libc.so.6\0")
    gpu = tmp_path / "gpu-darknet"
    gpu.write_bytes(b"\x7fELF...libcudart.so.12\0libcublas.so.12\0")
    assert presets.default_preset(replace(PJ_INFO, path=str(cpu))) == "quick"
    assert presets.default_preset(DarknetInfo(str(gpu), ALEXEYAB, "", True, True, False, False)) == "gpu"
    assert presets.default_preset(None) == "quick"
    if Path("/usr/bin/darknet").is_file():  # Debian's package is a CPU build
        assert presets.default_preset(replace(PJ_INFO, path="/usr/bin/darknet")) == "quick"


def test_quick_preset_fits_the_prepared_size_the_dataset_and_the_minutes(ws):
    quick = presets.make_preset("quick", ws, "boat", PJ_INFO, minutes=8)
    assert (quick.preset, quick.model, quick.size, quick.random, quick.width, quick.pretrained) == \
        ("quick", "yolov3-tiny", 160, False, 0.25, None)
    assert (quick.batch, quick.subdivisions, quick.learning_rate, quick.steps) == (16, 4, 0.01, (0.8, 0.9))
    assert len(quick.anchors) == 6 and all(0 < w <= 160 and 0 < h <= 160 for w, h in quick.anchors)
    assert quick.max_batches % presets.SAVE_EVERY == 0 and quick.burn_in == quick.max_batches // 10
    per_iteration = presets.seconds_per_iteration(quick, ws, PJ_INFO)
    assert quick.max_batches * per_iteration <= 8 * 60 < (quick.max_batches + presets.SAVE_EVERY) * per_iteration
    assert presets.estimate_seconds(quick, ws, PJ_INFO) == pytest.approx(quick.max_batches * per_iteration)
    longer = presets.make_preset("quick", ws, "boat", PJ_INFO, minutes=30)
    assert longer.max_batches > quick.max_batches
    with pytest.raises(UserError, match="time budget must be between 1 minute and a day"):
        presets.make_preset("quick", ws, "boat", PJ_INFO, minutes=0)


def test_quick_preset_caps_the_size_a_cpu_trains_at(ws):
    write_json(ws.dataset("boat").manifest_path, {**ws.dataset("boat").load(), "prepare": {"settings": {"size": 416}}})
    quick = presets.make_preset("quick", ws, "boat", PJ_INFO)
    assert quick.size == presets.QUICK_MAX_SIZE and "prepared at 416 px" in quick.notes[0]


def test_gpu_and_custom_presets(ws):
    gpu = presets.make_preset("gpu", ws, "boat", DarknetInfo("/x", ALEXEYAB, "", True, True, False, False))
    assert (gpu.size, gpu.batch, gpu.subdivisions, gpu.max_batches, gpu.random, gpu.use_map) == (416, 64, 16, 6000, True, True)
    custom = presets.make_preset("custom", ws, "boat", PJ_INFO)
    assert (custom.size, custom.batch, custom.max_batches, custom.pretrained) == (416, 64, None, None)


def test_given_values_win_and_are_validated(ws):
    settings = presets.resolve_settings(ws, "boat", PJ_INFO, "quick", size=128, max_batches=300, anchors="stock",
                                        learning_rate=None)
    assert (settings.size, settings.max_batches, settings.anchors, settings.learning_rate) == (128, 300, None, 0.01)
    assert settings.burn_in == 30  # follows the given iterations
    assert presets.resolve_settings(ws, "boat", PJ_INFO, "quick", max_batches=10).burn_in == 10
    backbone = presets.resolve_settings(ws, "boat", PJ_INFO, None, width=1.0, pretrained="yolov3-tiny.conv.15")
    assert (backbone.width, backbone.pretrained) == (1.0, "yolov3-tiny.conv.15")
    yolov3 = presets.resolve_settings(ws, "boat", PJ_INFO, "gpu", model="yolov3", pretrained="none", size=320)
    assert yolov3.pretrained is None and yolov3.anchors is None
    yolov3 = presets.resolve_settings(ws, "boat", PJ_INFO, "quick", model="yolov3")
    assert len(yolov3.anchors) == 9  # refitted for the model's anchor count
    quick = presets.make_preset("quick", ws, "boat", PJ_INFO)
    bigger = presets.resolve_settings(ws, "boat", PJ_INFO, "quick", size=320)
    assert max(w for w, _ in bigger.anchors) == pytest.approx(2 * max(w for w, _ in quick.anchors), rel=0.05)
    with pytest.raises(CfgError, match="pretrained weights need the stock width"):
        presets.resolve_settings(ws, "boat", PJ_INFO, "quick", pretrained="yolov3-tiny.conv.15")
    assert presets.resolve_settings(ws, "boat", PJ_INFO, "quick", width=0.5).width == 0.5
    with pytest.raises(UserError, match="iterations \\(max_batches\\) must be a whole number from 1"):
        presets.resolve_settings(ws, "boat", PJ_INFO, "quick", max_batches=-5)
    with pytest.raises(UserError, match="learning rate must be above 0"):
        presets.resolve_settings(ws, "boat", PJ_INFO, "custom", learning_rate=-1.0)


def test_seconds_per_iteration_come_from_earlier_runs_when_there_are_some(ws):
    settings = presets.TrainSettings(model="yolov3-tiny", size=128, batch=4, subdivisions=1)
    table = presets.seconds_per_iteration(settings, ws, PJ_INFO)
    run_dir = make_run(ws.root, run_id="earlier")  # yolov3-tiny 128, batch 4 on /usr/bin/darknet
    shutil.copy(FIXTURES / "pjreddie_debian_yolov3tiny.log", run_dir / "train_log.txt")
    measured = presets.seconds_per_iteration(settings, ws, PJ_INFO)
    assert measured != table and 0 < measured < 60
    other = replace(settings, batch=8)  # another network shape: the table again
    assert presets.seconds_per_iteration(other, ws, PJ_INFO) == pytest.approx(table * 2)
