"""`vidchat ui` in a real browser: Debian's headless Chromium driven by selenium, against the
real CPU server (the session's `server` fixture). Writes a screenshot to out/ui/playground.png;
with VIDCHAT_UPDATE_SCREENSHOT=1 to docs/img/playground.png, the one the README shows.

The page is run as users run it, `vidchat ui --server URL --port N` in a child process, and
its uploads must be gone once it stops.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from vidchat.client import sample_frames
from vidchat.limits import TOKENS_PER_IMAGE
from vidchat.serve_process import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
# A test run leaves the tracked README picture alone unless asked to refresh it.
SCREENSHOT = ROOT / ("docs/img" if os.environ.get("VIDCHAT_UPDATE_SCREENSHOT") else "out/ui") \
    / "playground.png"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags that run Debian's Chromium headless as root in a container, with nothing fetched.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1300")
UI_START_TIMEOUT_S = 60
ANSWER_TIMEOUT_S = 180
# Long enough that the answer takes a second or so to generate on the CPU profile.
MAX_TOKENS = 96
# Records every change of the first answer's text, with the page's clock: the test reads it
# after the stream ends, so no sample of the page can miss how the answer grew.
RECORD_GROWTH_JS = """
window.__growth = [];
new MutationObserver(() => {
  const text = document.querySelector('#answers .answer[data-q="0"] .answer-text');
  if (text) window.__growth.push([performance.now(), text.textContent.length]);
}).observe(document.getElementById('answers'),
           {childList: true, subtree: true, characterData: true});
"""


def clock(seconds: float) -> str:
    """The page's frame label (m:ss.s), computed independently of its script."""
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}:{secs:04.1f}"


@dataclass
class Playground:
    proc: subprocess.Popen[bytes]
    url: str
    tmpdir: Path
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_playground(server_url: str, tmp: Path) -> Playground:
    """`vidchat ui` as a child process with its own TMPDIR; waits until the page answers."""
    tmpdir = tmp / "ui-tmp"
    tmpdir.mkdir()
    port = free_port()
    log = tmp / "ui.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidchat", "ui", "--server", server_url, "--port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmpdir)})
    ui = Playground(proc, f"http://127.0.0.1:{port}/", tmpdir, log)
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vidchat ui exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(ui.url, timeout=2) as resp:
                if resp.status == 200:
                    return ui
        except OSError:
            pass
        if time.monotonic() > deadline:
            ui.stop()
            pytest.fail(f"vidchat ui did not answer in {UI_START_TIMEOUT_S} s: "
                        f"{log.read_text()[-2000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.TemporaryDirectory(prefix="vidchat-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


def wait_for(driver: webdriver.Chrome, what: Callable[[Any], Any], timeout: float = 60,
             message: str = "") -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(what, message)


def element(driver: webdriver.Chrome, css: str) -> Any:
    return driver.find_element(By.CSS_SELECTOR, css)


def set_value(driver: webdriver.Chrome, css: str, value: str) -> None:
    field = element(driver, css)
    field.clear()
    field.send_keys(value)


def upload(driver: webdriver.Chrome, path: Path) -> None:
    element(driver, "#file").send_keys(str(path))
    wait_for(driver, lambda d: f"{path.name} (uploaded" in element(d, "#source").text,
             message=f"{path.name} was not uploaded")


def message_text(driver: webdriver.Chrome) -> str:
    box = element(driver, "#message")
    return box.text if box.is_displayed() else ""


def answers_over(driver: webdriver.Chrome, count: int) -> bool:
    """``count`` answer cards, each done or failed (read in one step: the page replaces the
    cards when a new question goes out)."""
    return driver.execute_script(
        "const cards = [...document.querySelectorAll('#answers .answer')];"
        "return cards.length === arguments[0] && cards.every("
        "c => c.classList.contains('done') || c.classList.contains('failed'));", count)


@pytest.mark.engine
def test_playground_in_a_browser(server, browser, h264_clip, tmp_path):
    ui = start_playground(server.base_url, tmp_path)
    try:
        browser.get(ui.url)
        wait_for(browser, lambda d: "ok" in element(d, "#server-status").get_attribute("class"),
                 message="the page did not find the server")
        assert server.model in element(browser, "#server-status").text

        # 8 frames, shown as thumbnails with the times the library samples.
        upload(browser, h264_clip)
        element(browser, "#timestamps").click()
        element(browser, "#sample").click()
        wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#strip img")) == 8,
                 message="no strip of 8 frames")
        reference = sample_frames(h264_clip, 8)
        captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#strip .time")]
        assert captions == [clock(t) for t in reference.timestamps]
        wait_for(browser, lambda d: d.execute_script(
            "return [...document.querySelectorAll('#strip img')]"
            ".every(i => i.complete && i.naturalWidth === 384)"), message="thumbnails")
        assert "8 frames of testsrc.mp4" in element(browser, "#strip-info").text

        # Two questions; the first answer must be seen growing while it streams.
        set_value(browser, "#questions", "What is happening in this video?\nWhat colors?")
        set_value(browser, "#max-tokens", str(MAX_TOKENS))
        browser.execute_script(RECORD_GROWTH_JS)
        element(browser, "#ask").click()
        wait_for(browser, lambda d: answers_over(d, 2), ANSWER_TIMEOUT_S, "answers")
        cards = browser.find_elements(By.CSS_SELECTOR, "#answers .answer")
        assert [c.get_attribute("class").split() for c in cards] == [["answer", "done"]] * 2, \
            [c.text for c in cards]
        growth = browser.execute_script("return window.__growth")
        lengths = [n for _, n in growth]
        final = browser.execute_script("return document.querySelector("
                                       "'#answers .answer[data-q=\"0\"] .answer-text')"
                                       ".textContent.length")
        assert final > 0 and lengths[-1] == final
        assert lengths == sorted(lengths), "the answer text only grows"
        # A partial answer was on the page before the whole one. (vLLM merges tokens into
        # one chunk when its reader lags, so a loaded machine may show only a few steps.)
        partial = [(t, n) for t, n in growth if 0 < n < final]
        assert partial, f"the answer arrived in one piece: {growth}"

        # Usage and timings: 8 frames x 729 image tokens plus the labels and question; the
        # second question found the frames in the server's cache (ids only).
        stats = [c.find_element(By.CSS_SELECTOR, ".answer-stats").text for c in cards]
        prompt, completion = map(int, re.search(r"(\d+) prompt \+ (\d+) completion",
                                                stats[0]).groups())
        assert 8 * TOKENS_PER_IMAGE < prompt < 8 * TOKENS_PER_IMAGE + 200
        assert 0 < completion <= MAX_TOKENS
        assert re.search(r"first token \d+\.\d\d s", stats[0]), stats[0]
        assert "KiB of frames sent" in stats[0] and "frames from the server's cache" in stats[1]
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        # Over budget: 20 frames, more than the profile's 16; refused before sending.
        set_value(browser, "#frames", "20")
        set_value(browser, "#questions", "What happens?")
        element(browser, "#ask").click()  # the frames changed: sampled again, then asked
        wait_for(browser, lambda d: answers_over(d, 1), ANSWER_TIMEOUT_S, "over budget")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#strip img")) == 20
        error = element(browser, ".answer-error").text
        assert error.startswith("FrameBudgetError: 20 frames exceed the server's limit of 16")

        # A broken file: a message, not a traceback.
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"this is not a video\n" * 500)
        upload(browser, broken)
        element(browser, "#sample").click()
        wait_for(browser, lambda d: "VideoDecodeError" in message_text(d),
                 message="no error message for a broken file")
        assert browser.find_elements(By.CSS_SELECTOR, "#strip img") == []
        assert "Traceback" not in browser.page_source
    finally:
        ui.stop()
    assert list(ui.tmpdir.iterdir()) == [], "the uploads outlived the playground"


def test_server_down_is_a_message_on_the_page(browser, h264_clip, tmp_path):
    ui = start_playground(f"http://127.0.0.1:{free_port()}/v1", tmp_path)
    try:
        browser.get(ui.url)
        wait_for(browser, lambda d: "bad" in element(d, "#server-status").get_attribute("class"),
                 message="no server status")
        assert "ServerUnavailableError" in element(browser, "#server-status").text
        upload(browser, h264_clip)  # sampling is local: it works without the server
        set_value(browser, "#questions", "What happens?")
        element(browser, "#ask").click()
        wait_for(browser, lambda d: answers_over(d, 1), ANSWER_TIMEOUT_S, "no answer card")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#strip img")) == 8
        assert element(browser, ".answer-error").text.startswith("ServerUnavailableError:")
        assert "Traceback" not in browser.page_source
    finally:
        ui.stop()
