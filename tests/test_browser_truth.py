"""The dashboard tells the truth, in real Chromium: each test changes the state on disk (or an input)
and reads what the page then says — numbers, sentences, table cells — not only that it rendered.

One server on one prepared demo workspace (Boat built, fetched, prepared at 128 px, split) for the
module; the tests run in file order and the last one rebuilds the dataset.
"""
from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from pipeline.openimages import build
from pipeline.workspace import Workspace
from tests.support.browser import (
    StreamlitServer, choose, click_button, loaded_images, make_driver, metric, open_page, open_panels_text,
    page_text, screenshot, table_rows, tables_text, type_into, wait_for, wait_text,
)
from tests.support.runs import make_run, write_weights
from tests.support.states import ready_workspace, running_run, scored_run, write_predictions
from tests.support.tools import needs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def truth_ws(demo_root, tmp_path_factory) -> Workspace:
    return Workspace(ready_workspace(tmp_path_factory.mktemp("truth") / "workspace", demo_root))


@pytest.fixture(scope="module")
def server(truth_ws):
    needs("chromium")
    srv = StreamlitServer(truth_ws.root).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def driver(server):
    drv = make_driver()
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def scored(truth_ws):
    """Run r1 with final weights and chosen predictions (a hit and a near miss on one image)."""
    return scored_run(truth_ws)


def _gallery_total(driver) -> int:
    found = re.search(r"(\d+) of (\d+) matching images", page_text(driver))
    assert found, "no gallery caption"
    return int(found.group(2))


def _total_images(driver) -> int:
    """The "total" row's "images" cell of the Dataset page's counts table."""
    rows = table_rows(driver)
    header = next(cells for cells in rows if "images" in cells)
    total = next(cells for cells in rows if cells and cells[0] == "total")
    return int(float(total[header.index("images")]))


# --- 2. a failed step keeps its panel open, with the reason in the page's words ------------------


def test_failed_build_panel_stays_open_with_the_reason_in_page_words(server, driver):
    open_page(driver, server, "dataset")
    type_into(driver, "Search classes by name or MID", "boat")
    click_button(driver, "Build dataset")  # boat exists and "Replace" is not ticked
    wait_text(driver, "Build failed")
    opened = open_panels_text(driver)
    assert "already exists" in opened
    assert "tick “Replace an existing dataset of that name”" in opened
    assert "--overwrite" not in page_text(driver) and "--name" not in page_text(driver)
    screenshot(driver, "truth-build-failed")


# --- 4. Home's next step and ticks follow the run on disk ---------------------------------------------


def test_home_next_step_follows_a_running_run_then_its_weights(server, driver, truth_ws):
    run_dir = make_run(truth_ws.root, "boat", max_batches=1000, run_id="r-home")
    try:
        with running_run(run_dir, iteration=61):
            open_page(driver, server)
            wait_text(driver, "iteration 61 of 1000")
            text = page_text(driver)
            assert "Evaluate the trained weights" not in text
            assert "training, 61/1000" in tables_text(driver)
            screenshot(driver, "truth-home-training")
            write_weights(run_dir / "backup" / "model_last.weights", seen=61 * 4)
            open_page(driver, server)
            wait_text(driver, "Next step: Evaluate the trained weights")
            assert "training, 61/1000" not in tables_text(driver)
    finally:
        shutil.rmtree(run_dir)


# --- 7. one image larger, its boxes listed with IoU; near misses say their IoU ----------------------


def test_evaluate_detail_lists_each_box_with_its_iou(server, driver, scored):
    _, _, image_id = scored
    open_page(driver, server, "evaluate")
    wait_text(driver, "Predictions against ground truth")
    before = loaded_images(driver)
    choose(driver, "Look closer at", image_id)
    wait_for(driver, lambda d: "near miss" in tables_text(d), 60, "no box table")
    table = tables_text(driver)
    assert "FP: near miss (IoU 0.33 < 0.50)" in table
    assert "found (TP)" in table and "1.00" in table
    wait_for(driver, lambda d: loaded_images(d) == before + 1, 60, "the larger image never loaded")
    screenshot(driver, "truth-evaluate-detail")


# --- 8. nothing found: say so; the best threshold is one click -----------------------------------


def test_evaluate_explains_zero_detections_and_applies_the_best_threshold(server, driver, scored):
    _, predictions, _ = scored
    kept = pd.read_parquet(predictions)
    write_predictions(predictions, [])
    open_page(driver, server, "evaluate")
    wait_text(driver, "found nothing in the")
    text = page_text(driver)
    assert "train longer" in text and "None" not in tables_text(driver)
    assert metric(driver, "mAP@0.5") == "0.0 %" and metric(driver, "TP") == "0"
    assert not driver.find_elements("css selector", "[data-testid='stPlotlyChart']")
    screenshot(driver, "truth-evaluate-nothing-found")

    write_predictions(predictions, list(kept.itertuples(index=False, name=None)))
    open_page(driver, server, "evaluate")
    wait_text(driver, "Best F1 at confidence ≥ 0.90")
    assert metric(driver, "FP") == "1"  # the near miss (0.60) is above the default 0.25
    click_button(driver, "Set the threshold to 0.90 (best F1)")
    wait_for(driver, lambda d: metric(d, "FP") == "0", 30, "the threshold did not move")
    thumb = driver.find_element("css selector", 'input[type="range"][aria-label="Confidence threshold"]')
    assert thumb.get_attribute("aria-valuetext") == "0.90"
    assert metric(driver, "TP") == "1"


# --- 1. a change on disk changes the page (caches keyed by the files) ------------------------------


def test_pages_follow_files_changed_on_disk(server, driver, truth_ws, scored):
    _, _, image_id = scored
    open_page(driver, server, "evaluate")
    wait_for(driver, lambda d: loaded_images(d) >= 12, 60, "the prediction gallery never loaded")
    (truth_ws.dataset_dir("boat") / "yolo" / f"{image_id}.jpg").unlink()
    open_page(driver, server, "evaluate")
    wait_text(driver, f"{image_id} · TP 1 · FP")
    assert re.search(f"{image_id} · TP 1 · FP 1 · FN \\d+: pixels not available", page_text(driver))

    open_page(driver, server, "dataset")
    before = len(pd.read_parquet(truth_ws.dataset_dir("boat") / "images.parquet"))
    assert _gallery_total(driver) == before and _total_images(driver) == before
    shutil.rmtree(truth_ws.run_dir("r1"))  # a dataset a run trained on is not replaced
    build.build_dataset(truth_ws, ["Boat"], overwrite=True, max_images=40)  # the command line, meanwhile
    after = len(pd.read_parquet(truth_ws.dataset_dir("boat") / "images.parquet"))
    assert after != before
    open_page(driver, server, "dataset")
    wait_for(driver, lambda d: _gallery_total(d) == after, 30, "the gallery still counts the old dataset")
    assert _total_images(driver) == after
    screenshot(driver, "truth-dataset-rebuilt")
