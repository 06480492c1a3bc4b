"""Benchmark each dashboard page's first render in real Chromium (printed, never asserted; target ≤ 2 s).

Builds a demo workspace where every page has something to show (Boat built, fetched, prepared at
128 px, split; run ``r1`` with final weights and test predictions; a finished 1,000-iteration log),
starts ``streamlit run`` on it and opens each page in a fresh browser session (``driver.get``):

- ``idle``: until the script has finished and no skeleton is left (Streamlit's own state attributes);
- ``painted``: until every ``st.image`` has loaded and every plotly chart has drawn its SVG;
- ``script``: one run of the page's script alone (AppTest, caches warm), the server's share.

The first load of the server (Python imports, first session) is shown apart as "cold start".
Each page is opened ``--repeat`` times; the table shows the median and the worst. Screenshots of
every page go to ``test-artifacts/bench-<page>.png``.

Run: ``.venv/bin/python bench/pages.py [--repeat 3] [--workspace DIR]``. Needs chromium and chromedriver.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.workspace import Workspace  # noqa: E402
from tests.support.browser import StreamlitServer, loaded_images, make_driver, screenshot, wait_idle  # noqa: E402
from tests.support.states import pjreddie_lines, ready_workspace, scored_run  # noqa: E402

PAGES = ["home", "dataset", "images", "prepare", "split", "train", "evaluate"]
TARGET_S = 2.0
PAINTED_JS = """
const imgs = [...document.querySelectorAll("[data-testid='stImage'] img")];
const charts = document.querySelectorAll("[data-testid='stPlotlyChart']").length;
const drawn = document.querySelectorAll("[data-testid='stPlotlyChart'] .main-svg").length;
return imgs.every(i => i.complete && i.naturalWidth > 0) && drawn >= charts;
"""


def workspace(root: Path) -> Path:
    """A workspace where every page has content (see the module docstring)."""
    ready_workspace(root)
    run_dir, _, _ = scored_run(Workspace(root))
    (run_dir / "train_log.txt").write_text(pjreddie_lines(1, 1000))
    return root


def first_render(driver, url: str) -> tuple[float, float]:
    """Seconds until idle and until painted, for one fresh session of ``url``."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    start = time.monotonic()
    driver.get(url)
    wait_idle(driver, 120)
    idle = time.monotonic() - start
    WebDriverWait(driver, 120, poll_frequency=0.05).until(lambda d: d.execute_script(PAINTED_JS))
    return idle, time.monotonic() - start


def script_seconds(root: Path, page: str) -> float:
    """Seconds of one run of the page's script alone (Streamlit's AppTest, caches warm): the server's
    share of a render, without the browser's."""
    from streamlit.testing.v1 import AppTest

    os.environ["STUDIO_WORKSPACE"] = str(root)
    app = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=300).run()
    at.switch_page(f"views/{page}.py").run()  # warms this page's caches
    start = time.monotonic()
    at.run()
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workspace", type=Path, help="an existing workspace to use as is")
    args = parser.parse_args()
    root = args.workspace or workspace(Path(tempfile.mkdtemp(prefix="bench-pages-")) / "workspace")
    server = StreamlitServer(root).start()
    driver = make_driver()
    try:
        cold, cold_painted = first_render(driver, f"{server.url}/")
        print(f"cold start (first session of a new server, Home): idle {cold:.2f} s, painted {cold_painted:.2f} s")
        print(f"{'page':<10}{'idle median':>13}{'idle max':>10}{'painted median':>16}{'painted max':>13}"
              f"{'script':>9}  target ≤ {TARGET_S:g} s")
        for page in PAGES:
            times = [first_render(driver, f"{server.url}/{page}") for _ in range(args.repeat)]
            idle, painted = [t[0] for t in times], [t[1] for t in times]
            images = loaded_images(driver)
            screenshot(driver, f"bench-{page}")
            script = script_seconds(root, page)
            flag = "" if statistics.median(painted) <= TARGET_S else "  over target"
            print(f"{page:<10}{statistics.median(idle):>12.2f}s{max(idle):>9.2f}s{statistics.median(painted):>15.2f}s"
                  f"{max(painted):>12.2f}s{script:>8.2f}s{flag}  ({images} images)", flush=True)
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
        print(f"load average while measuring: {' '.join(load)} on {os.cpu_count()} CPUs (the browser and the "
              f"server share them; times grow with the load)")
    finally:
        driver.quit()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
