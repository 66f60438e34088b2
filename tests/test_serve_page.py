"""The web page in a real headless browser (Debian's chromium + chromium-driver, Selenium).

The server serves a model of GPT-2 124M's shapes with random weights in int8 (``--random
gpt2``): it takes long enough to build for ``/health`` to be seen answering 503 while
loading, and long enough per token for Stop to land mid-stream. The page's streamed text is
checked against the API's own greedy completion; Stop must show up in /metrics as a
cancelled request. A screenshot is saved (its path is printed).
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from server_process import ALLOW_MISSING, ServerProcess, metric, require_serve

require_serve("selenium")

from fastgpt.serving.bench import get, post  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    message = ("chromium and chromedriver are needed: apt-get install chromium chromium-driver "
               "(or set FASTGPT_ALLOW_NO_SERVE=1 to skip)")
    if ALLOW_MISSING:
        pytest.skip(message, allow_module_level=True)
    pytest.fail(message, pytrace=False)

#: Seconds any wait on the page or the server may take.
WAIT = 120.0
PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(["--random", "gpt2", "--dtype", "int8", "--threads", "1", "--max-batch", "4"],
                        tmp_path_factory.mktemp("page") / "server.log").start(wait=False)
    try:
        url = srv.wait_listening()
        seen = []                                     # /health while the model is built
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            code, body = get(url, "/health")
            seen.append((code, json.loads(body)["status"]))
            if code == 200:
                break
            time.sleep(0.05)
        assert (503, "loading") in seen and seen[-1] == (200, "ok"), seen[:3] + seen[-3:]
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fill(driver, **fields):
    for name, value in fields.items():
        box = driver.find_element("id", name)
        box.clear()
        if value != "":
            box.send_keys(str(value))


def text_of(driver, element_id: str) -> str:
    # textContent exactly (Selenium's .text normalises whitespace)
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def generate(driver) -> str:
    driver.find_element("id", "generate").click()
    wait_until(lambda: text_of(driver, "status").startswith("done"), "the stream to finish")
    return text_of(driver, "completion")


def test_page_streams_the_greedy_completion_then_stops_on_request(server, browser, tmp_path):
    browser.get(server.url + "/")
    wait_until(lambda: "random-gpt2" in text_of(browser, "model"), "the model's name")
    fill(browser, prompt=PROMPT, max_tokens=24, temperature=0, seed="", stop="")
    shown = generate(browser)
    api = post(server.url, "/v1/completions", {"prompt": PROMPT, "max_tokens": 24, "temperature": 0},
               timeout=WAIT).body["choices"][0]["text"]
    assert shown == api, f"page {shown!r} != API {api!r}"
    assert text_of(browser, "tokens") == "24"
    assert text_of(browser, "ttft").endswith(" ms") and float(text_of(browser, "rate")) > 0

    # Colouring by probability: one coloured span per token, same text.
    browser.find_element("id", "colour").click()
    assert generate(browser) == api
    coloured = browser.execute_script(
        "return [...document.querySelectorAll('#completion span')].filter(s => s.style.background).length")
    assert coloured == 24
    shot = tmp_path / "fastgpt-page.png"
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot: {shot}")

    # Stop mid-stream: the server cancels the request and frees its slot.
    cancelled = _cancelled(server)
    fill(browser, max_tokens=900, temperature=0.8)
    browser.find_element("id", "colour").click()
    browser.find_element("id", "generate").click()
    wait_until(lambda: int(text_of(browser, "tokens")) >= 5, "a few tokens")
    browser.find_element("id", "stop_button").click()
    wait_until(lambda: text_of(browser, "status") == "stopped", "the page to stop")
    assert int(text_of(browser, "tokens")) < 900
    wait_until(lambda: _cancelled(server) == cancelled + 1, "/metrics to count the cancelled request")
    text = get(server.url, "/metrics")[1]
    wait_until(lambda: metric(get(server.url, "/metrics")[1], "fastgpt_slots_busy") == 0, "a free slot")
    assert metric(text, "fastgpt_requests_waiting") == 0
    browser.save_screenshot(str(tmp_path / "fastgpt-page-stopped.png"))


def _cancelled(server) -> float:
    text = get(server.url, "/metrics")[1]
    if 'finished_reason="cancelled"' not in text:
        return 0.0
    return metric(text, "fastgpt_requests_finished_total", finished_reason="cancelled")
