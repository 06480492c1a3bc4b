"""The dashboard tells the truth (AppTest): a change on disk changes the page, failures say why in the
page's words, the next step follows real run state, empty results explain themselves, and the gallery
names every box. Browser versions of the same are in tests/test_browser_truth.py."""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from darknet_runner import baseline
from pipeline.openimages import build
from pipeline.workspace import Workspace
from tests.support.runs import make_run, write_weights
from tests.support.states import running_run, scored_run, write_baseline_metrics, write_predictions
from tests.test_app_pages import _app_factory, app, button, split_root, texts  # noqa: F401  (fixtures)


@pytest.fixture
def split_app(split_root, tmp_path, monkeypatch):  # noqa: F811
    root = tmp_path / "workspace"
    shutil.copytree(split_root, root, symlinks=True)
    return _app_factory(root, monkeypatch), Workspace(root)


def _gallery_total(at) -> int:
    found = [re.match(r"\d+ of (\d+) matching images", c) for c in texts(at, "caption")]
    return next(int(m.group(1)) for m in found if m)


# --- 1. caches follow the files --------------------------------------------------------------


def test_dataset_page_follows_a_rebuild_on_disk(split_app):
    make, ws = split_app
    at = make("dataset")
    before = len(pd.read_parquet(ws.dataset_dir("boat") / "images.parquet"))
    assert _gallery_total(at) == before
    build.build_dataset(ws, ["Boat"], overwrite=True, max_images=40)  # e.g. the command line, meanwhile
    after = len(pd.read_parquet(ws.dataset_dir("boat") / "images.parquet"))
    assert after != before
    at.run()
    assert _gallery_total(at) == after
    counts = at.table[0].value
    assert int(counts.loc["total", "images"]) == after


def test_evaluate_tile_of_a_deleted_image_says_so(split_app):
    make, ws = split_app
    run_dir, _, image_id = scored_run(ws)
    at = make("evaluate")
    assert not at.exception
    assert len(at.image) == 12
    (ws.dataset_dir("boat") / "yolo" / f"{image_id}.jpg").unlink()
    at.run()
    assert not at.exception
    captions = texts(at, "caption")
    assert any(re.match(f"{image_id} · TP 1 · FP 1 · FN \\d+: pixels not available", c) for c in captions), captions


# --- 2. failures stay open and speak the page's language ---------------------------------------


def test_a_failed_build_keeps_its_panel_open_with_the_reason_in_page_words(app):
    at = app("dataset")
    at.text_input(key="class_query").set_value("boat").run()
    button(at, "Build dataset").click().run()
    button(at, "Build dataset").click().run()
    assert not at.exception
    status = at.status[0]
    assert status.label == "Build failed" and status.state == "error" and status.proto.expanded
    [message] = texts(at, "error")
    assert "already exists" in message
    assert "tick “Replace an existing dataset of that name”" in message and "--overwrite" not in message
    assert "type another “Dataset name”" in message and "--name" not in message


def test_a_failed_fetch_keeps_its_panel_open(split_app, tmp_path):
    make, _ = split_app
    at = make("images")
    at.radio(key="img_source").set_value("gcs").run()
    at.text_input(key="img_bucket").set_value("gs://Not_A..Bucket!/x").run()
    button(at, "Fetch images").click().run()
    assert not at.exception
    status = at.status[0]
    assert status.label == "Fetch failed" and status.state == "error" and status.proto.expanded
    assert texts(at, "error") and "bucket" in texts(at, "error")[0].lower()


# --- 4. Home's next step and ticks come from real state --------------------------------------------


def test_home_says_training_while_a_run_has_no_weights_then_evaluate(split_app):
    make, ws = split_app
    run_dir = make_run(ws.root, "boat", max_batches=1000)
    with running_run(run_dir, iteration=61):
        at = make()
        step = next(t for t in texts(at, "markdown") if t.startswith("**Next step:**"))
        assert "iteration 61 of 1000" in step and "Evaluate" not in step
        assert at.table[0].value.loc["boat", "trained"] == "training, 61/1000"
        write_weights(run_dir / "backup" / "model_last.weights", seen=61 * 4)
        at.run()
        step = next(t for t in texts(at, "markdown") if t.startswith("**Next step:**"))
        assert "Evaluate the trained weights" in step
        assert at.table[0].value.loc["boat", "trained"] == "✓"


def test_baseline_runs_are_not_offered_as_runs(split_app):
    make, ws = split_app
    write_baseline_metrics(ws, "boat", map50=0.25, images=30)
    at = make()
    assert "run" not in [s.key for s in at.selectbox]  # the only run is the baseline: no run to pick
    assert any("No training run yet." == c for c in texts(at, "caption"))


# --- 7. the gallery names every box; one image larger with its boxes listed ------------------------


def test_evaluate_detail_lists_boxes_with_iou_of_a_near_miss(split_app):
    make, ws = split_app
    _, _, image_id = scored_run(ws)
    at = make("evaluate")
    assert at.selectbox(key="eval_detail").value is None
    at.selectbox(key="eval_detail").set_value(image_id).run()
    assert not at.exception
    table = at.table[-1].value
    results = list(table["result"])
    assert "found (TP)" in results and "TP" in results
    assert "FP: near miss (IoU 0.33 < 0.50)" in results
    found = table[table["result"] == "found (TP)"]
    assert list(found["IoU"]) == ["1.00"]
    assert set(table.loc[table["box"] == "prediction", "IoU"]) == {"1.00", "0.33"}


def test_dataset_detail_lists_the_boxes_of_one_image(split_app):
    make, ws = split_app
    at = make("dataset")
    options = at.selectbox(key="dataset_detail").options
    at.selectbox(key="dataset_detail").set_value(options[0].split(" · ")[0]).run()
    assert not at.exception
    boxes = pd.read_parquet(ws.dataset_dir("boat") / "boxes.parquet")
    n = int((boxes["ImageID"] == options[0].split(" · ")[0]).sum())
    assert len(at.table[-1].value) == n


# --- 8. empty results explain themselves; the best threshold is one click --------------------------


def test_evaluate_with_no_detections_says_what_happened(split_app):
    make, ws = split_app
    run_dir, predictions, _ = scored_run(ws)
    write_predictions(predictions, [])
    at = make("evaluate")
    assert not at.exception
    assert any("found nothing in the" in w and "train longer" in w for w in texts(at, "warning"))
    assert not at.get("plotly_chart")
    assert at.metric[0].value == "0.0 %"
    assert "None" not in at.table[0].value.to_string()


def test_evaluate_threshold_button_applies_the_best_f1_threshold(split_app):
    make, ws = split_app
    scored_run(ws)
    at = make("evaluate")
    at.slider(key="conf").set_value(0.95).run()
    assert any("No prediction reaches the confidence threshold 0.95" in w for w in texts(at, "warning"))
    assert at.metric[2].value == "0"  # TP
    button(at, "Set the threshold to 0.90 (best F1)").click().run()
    assert at.slider(key="conf").value == pytest.approx(0.90)
    assert at.metric[2].value == "1"
    assert not any("No prediction reaches" in w for w in texts(at, "warning"))


# --- 12. the zero-shot baseline beside the fine-tuned run -------------------------------------------


def test_evaluate_shows_the_baseline_beside_the_run_and_scores_it_on_request(split_app, monkeypatch):
    make, ws = split_app
    scored_run(ws)
    calls = []

    def fake_evaluate_baseline(ws_arg, slug, **kwargs):
        calls.append((slug, kwargs["backend"]))
        return write_baseline_metrics(ws_arg, slug, map50=0.125, images=30)

    monkeypatch.setattr(baseline, "evaluate_baseline", fake_evaluate_baseline)
    at = make("evaluate")
    assert at.metric[1].label == "zero-shot COCO baseline" and at.metric[1].value == "not scored"
    button(at, "Score the COCO yolov3-tiny baseline").click().run()
    assert calls == [("boat", "opencv")]
    assert not at.exception
    assert at.metric[1].value == "12.5 %"
    assert at.selectbox(key="run").options == ["r1"]  # the baseline run is not offered


# --- 9. smaller ones ---------------------------------------------------------------------------------


def test_split_success_lists_images_and_boxes_per_split_in_order(split_app):
    make, _ = split_app
    at = make("split")
    button(at, "Write split").click().run()
    [message] = texts(at, "success")
    assert re.fullmatch(r"Wrote the split lists: train \d+ images \(\d+ boxes\), valid \d+ images \(\d+ boxes\), "
                        r"test \d+ images \(\d+ boxes\)\.", message), message
    table = at.table[0].value
    assert list(table.columns) == ["train", "valid", "test"]
    assert list(table.index) == ["images", "boxes", "images without boxes"]


def test_class_suggestion_is_a_button_that_fills_the_search(app):
    at = app("dataset")
    at.text_input(key="class_query").set_value("bost").run()
    button(at, "Boat").click().run()
    assert at.text_input(key="class_query").value == "Boat"
    assert not at.error and at.multiselect[0].value == ["Boat"]


def test_images_page_previews_fetched_originals(split_app):
    make, _ = split_app
    at = make("images")
    assert any(c.startswith("Preview: 8 of the") for c in texts(at, "caption"))
    assert len(at.image) == 8
