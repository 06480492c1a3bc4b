"""A real Streamlit server and a real headless Chromium for browser tests (facts/streamlit.md §2).

``StreamlitServer`` runs ``streamlit run dashboard/app.py`` in its own process group on a free
loopback port with ``STUDIO_WORKSPACE`` set, and is ready when ``/_stcore/health`` says ``ok``.
The helpers wait on Streamlit's own DOM state attributes, never on fixed sleeps alone.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = (1400, 1800)  # tall, so one viewport screenshot shows most of a page
SERVER_FLAGS = ["--server.headless", "true", "--server.fileWatcherType", "none",
                "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
                "--server.address", "127.0.0.1"]
IDLE = ("[data-testid='stApp'][data-test-connection-state='CONNECTED']"
        "[data-test-script-state='notRunning']")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """``streamlit run dashboard/app.py`` on ``workspace``; ``start()``, ``stop()``, ``restart()``."""

    def __init__(self, workspace: Path, port: int | None = None, log_path: Path | None = None):
        self.workspace = Path(workspace)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="streamlit-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60, attempts: int = 3) -> "StreamlitServer":
        for attempt in range(attempts):
            self._spawn()
            if self._wait_healthy(timeout):
                return self
            self.stop()
        raise RuntimeError(f"streamlit did not become healthy; log:\n{self.log_tail()}")

    def _spawn(self) -> None:
        env = dict(os.environ, STUDIO_WORKSPACE=str(self.workspace), PYTHONUNBUFFERED="1")
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        cmd = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(self.port),
               *SERVER_FLAGS]
        with open(self.log_path, "ab") as log:
            # Own process group: stop() can kill the server without touching training jobs,
            # which darknet_runner starts in sessions of their own.
            self.process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if requests.get(f"{self.url}/_stcore/health", timeout=2).text.strip() == "ok":
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> "StreamlitServer":
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 4000) -> str:
        return Path(self.log_path).read_text(errors="replace")[-chars:]


def make_driver():
    """A headless Chromium driven by the system chromedriver (no Selenium Manager network calls)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}",
                                f"--window-size={WINDOW[0]},{WINDOW[1]}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_window_size(*WINDOW)
    return driver


def wait_idle(driver, timeout: float = 60) -> None:
    """Wait until the app is connected, its script is not running, and no skeleton is left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    time.sleep(0.25)  # a just-triggered rerun may not have flipped the state attribute yet
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, IDLE))
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "[data-testid='stSkeleton']"))


def wait_for(driver, predicate, timeout: float = 60, message: str = ""):
    """Poll ``predicate(driver)`` until it is truthy; return its value."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Streamlit replaces elements on every rerun: a vanished element means "look again".
    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, poll_frequency=0.2, ignored_exceptions=ignored).until(predicate, message)


def page_text(driver) -> str:
    """The page's visible text (read in the page: no stale element references)."""
    return driver.execute_script("return document.body.innerText;")


def wait_text(driver, text: str, timeout: float = 60) -> None:
    """Wait until the page's visible text contains ``text``."""
    wait_for(driver, lambda d: text in page_text(d), timeout, f"text {text!r} never appeared")


def open_page(driver, server: StreamlitServer, url_path: str = "", timeout: float = 60) -> float:
    """Load ``/<url_path>``, wait for idle; return seconds until the first complete render."""
    start = time.monotonic()
    driver.get(f"{server.url}/{url_path}")
    wait_idle(driver, timeout)
    return time.monotonic() - start


def screenshot(driver, name: str) -> Path:
    """Save the viewport as ``test-artifacts/<name>.png`` and return the path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


# --- interacting with Streamlit widgets -----------------------------------------------------------


def _by_text(driver, css: str, text: str, exact: bool = False):
    from selenium.webdriver.common.by import By

    for element in driver.find_elements(By.CSS_SELECTOR, css):
        shown = element.text.strip()
        if (shown == text) if exact else (text in shown):
            return element
    return None


def _xpath_literal(text: str) -> str:
    return f"'{text}'" if "'" not in text else f'"{text}"'


def click_button(driver, label: str, timeout: float = 60) -> None:
    """Click the enabled button whose text is ``label`` and wait for the rerun to finish."""
    from selenium.webdriver.common.by import By

    # The label is the button's markdown paragraph (an icon, if any, sits beside it as ligature text).
    xpath = f"//button[.//p[normalize-space()={_xpath_literal(label)}]]"

    def enabled(d):
        found = [b for b in d.find_elements(By.XPATH, xpath) if b.is_enabled()]
        return found[0] if found else None

    wait_idle(driver, timeout)  # a rerun still drawing may yet move, replace or disable the button
    button = wait_for(driver, enabled, timeout, f"no enabled button {label!r}")
    _settle(driver, button)
    _watch_reruns(driver)
    button.click()
    _rerun_started(driver)
    wait_idle(driver, timeout)


def _rerun_started(driver, seconds: float = 3.0) -> bool:
    """Wait (at most ``seconds``) until the rerun a click asked for has begun, so a following
    ``wait_idle`` cannot take the page's state from before the click for the answer. A rerun quick
    enough to start and end between two paints is not seen: False then, after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if driver.execute_script("return window.__studioReran === true;"):
            return True
        time.sleep(0.05)
    return False


def _settle(driver, element, tries: int = 30) -> None:
    """Scroll ``element`` to the middle of the view and wait until it stops moving (an expander
    animating above it, a late element pushing it down) so the click lands where it is."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    where = "const r = arguments[0].getBoundingClientRect(); return [r.x, r.y, r.width, r.height];"
    last = None
    for _ in range(tries):
        now = driver.execute_script(where, element)
        if now == last:
            return
        last = now
        time.sleep(0.1)


def _watch_reruns(driver) -> None:
    """Set ``window.__studioReran`` once the app's script state leaves ``notRunning`` (a rerun began)."""
    driver.execute_script("""
        const app = document.querySelector("[data-testid='stApp']");
        window.__studioReran = false;
        if (window.__studioWatch) window.__studioWatch.disconnect();
        window.__studioWatch = new MutationObserver(() => {
            if (app.getAttribute('data-test-script-state') !== 'notRunning') window.__studioReran = true;
        });
        window.__studioWatch.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
    """)


def pick_radio(driver, label: str, option: str, timeout: float = 30) -> None:
    """Choose ``option`` of the ``st.radio`` labelled ``label`` and wait for the rerun."""
    from selenium.webdriver.common.by import By

    group = (f"//div[@data-testid='stRadio'][.//*[@data-testid='stWidgetLabel']"
             f"[normalize-space()={_xpath_literal(label)}]]")
    choice = wait_for(driver, lambda d: d.find_element(
        By.XPATH, f"{group}//label[normalize-space()={_xpath_literal(option)}]"), timeout,
        f"no option {option!r} in the radio {label!r}")
    _watch_reruns(driver)
    choice.click()
    _rerun_started(driver)
    wait_idle(driver, timeout)


def nav(driver, title: str, timeout: float = 60) -> float:
    """Click the sidebar link ``title``; return seconds until its page (h1 == title) is idle."""
    from selenium.webdriver.common.by import By

    start = time.monotonic()
    link = wait_for(driver, lambda d: _by_text(d, "[data-testid='stSidebarNavLink']", title), timeout,
                    f"no navigation link {title!r}")
    link.click()
    titles = "return [...document.querySelectorAll('h1')].map(h => h.innerText.trim());"
    wait_for(driver, lambda d: title in d.execute_script(titles), timeout, f"page {title!r} never showed its title")
    wait_idle(driver, timeout)
    return time.monotonic() - start


def widget_input(driver, label: str):
    """The <input> of the text or number input labelled ``label``."""
    from selenium.webdriver.common.by import By

    return wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'input[aria-label="{label}"]'), 30,
                    f"no input labelled {label!r}")


def type_into(driver, label: str, value: str) -> None:
    """Replace the value of a text/number input and commit it (Enter), then wait for the rerun."""
    from selenium.webdriver.common.keys import Keys

    box = widget_input(driver, label)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    box.send_keys(value, Keys.ENTER)
    wait_idle(driver)


def set_slider(driver, label: str, value: str, key: str, max_presses: int = 40) -> None:
    """Move the slider (or select slider) labelled ``label`` with ``key`` (Keys.LEFT/RIGHT) until its
    shown value is ``value``.

    The thumb is a visually hidden ``<input type=range>`` (react-aria). Each press may commit and
    rerun the app, which redraws the slider, so the input is found and focused again every time.
    """
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    css = f'input[type="range"][aria-label="{label}"]'
    for _ in range(max_presses):
        thumb = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, css), 30, f"no slider {label!r}")
        if thumb.get_attribute("aria-valuetext") == value:
            break
        driver.execute_script("arguments[0].focus();", thumb)
        ActionChains(driver).send_keys(key).perform()
        time.sleep(0.3)  # the slider commits its value when the keys stop
        wait_idle(driver)
    else:
        raise AssertionError(f"slider {label!r} never reached {value!r}")
    time.sleep(0.3)
    wait_idle(driver)


def count(driver, css: str) -> int:
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, css))


def loaded_images(driver) -> int:
    """How many st.image pictures have finished loading (naturalWidth > 0)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(\"[data-testid='stImage'] img\")]"
        ".filter(i => i.complete && i.naturalWidth > 0).length;")


def choose(driver, label: str, text: str, timeout: float = 30) -> None:
    """Pick the option containing ``text`` in the selectbox labelled ``label`` (typed to filter, then clicked)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = widget_input(driver, label)
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)
    option = wait_for(driver, lambda d: _by_text(d, "[role='option']", text), timeout, f"no option {text!r} in {label!r}")
    option.click()
    wait_idle(driver, timeout)


def metric(driver, label: str) -> str:
    """The shown value of the ``st.metric`` labelled ``label``."""
    from selenium.webdriver.common.by import By

    for element in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMetric']"):
        lines = [line.strip() for line in element.text.splitlines() if line.strip()]
        if lines and lines[0] == label:
            return lines[1] if len(lines) > 1 else ""
    raise AssertionError(f"no metric {label!r}")


def tables_text(driver) -> str:
    """The text of every ``st.table`` on the page (HTML tables, unlike the canvas of ``st.dataframe``)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(\"[data-testid='stTable']\")].map(t => t.innerText).join('\\n');")


def open_panels_text(driver) -> str:
    """The text of the ``st.status`` / ``st.expander`` panels that are open (a closed one hides its text)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(\"[data-testid='stExpander'] details[open]\")]"
        ".map(d => d.innerText).join('\\n');")


def table_rows(driver) -> list[list[str]]:
    """Every row of every ``st.table`` on the page as its cells' text (header rows included)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(\"[data-testid='stTable'] tr\")]"
        ".map(r => [...r.querySelectorAll('th,td')].map(c => c.innerText.trim()));")
