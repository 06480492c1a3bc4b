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
    from pipeline.openimages import build
    from pipeline.images import fetch
    from pipeline.yolo import prepare, split

    root = tmp_path_factory.mktemp("split") / "workspace"
    shutil.copytree(demo_root, root, symlinks=True)
    ws = Workspace(root)
    build.build_dataset(ws, ["Boat"])
    fetch.fetch_images(ws, "boat", str(root / "demo" / "originals"), workers=4)
    prepare.prepare_dataset(ws, "boat", size=128, workers=1)
    split.split_dataset(ws, "boat")
    return root


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
    write_json(ws.run_dir("20260101-000000-x-0000") / "run.json", {"dataset": {"slug": "boat"}})
    assert journey.dataset_runs(ws, "boat") == ["20260101-000000-x-0000"]
    assert journey.next_step(ws, "boat").page == "Evaluate"
    (ws.run_dir("20260101-000000-x-0000") / "predictions").mkdir()
    (ws.run_dir("20260101-000000-x-0000") / "predictions" / "last.parquet").write_bytes(b"")
    assert journey.dataset_stages(ws, "boat") == dict.fromkeys(
        ["built", "fetched", "prepared", "split", "trained", "evaluated"], True)
    assert "Everything is done" in journey.next_step(ws, "boat").message


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


def _create_run(at: AppTest, iterations: int = 2) -> AppTest:
    at.select_slider(key="tr_size").set_value(128)
    at.number_input(key="tr_iters").set_value(iterations)
    at.number_input(key="tr_batch").set_value(2)
    at.number_input(key="tr_subdiv").set_value(1).run()
    return button(at, "Create run").click().run()


def test_train_with_an_unusable_darknet_path(split_app, tmp_path):
    make, _ = split_app
    at = make("train")
    at.text_input(key="darknet_setting").set_value(str(tmp_path / "no-darknet")).run()
    assert not at.exception
    assert any(e.startswith("Darknet not found: the darknet binary") for e in texts(at, "error"))
    assert button(at, "Create run").disabled


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


# --- Evaluate without a run -------------------------------------------------------------------


def test_evaluate_without_a_run(app):
    at = app("evaluate")
    assert not at.exception
    assert texts(at, "info") == ["No run yet: train one on the Train page first."]


def test_train_without_a_dataset(app):
    at = app("train")
    assert not at.exception
    assert texts(at, "info") == ["No dataset yet: build, prepare and split one before training."]
