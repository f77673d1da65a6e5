"""The playground (service/playground/, docs/playground.md) in a real browser: Debian's
chromium, driven by chromedriver through Selenium, headless, against one `bentoml serve`
over the synthetic test models and the shipped mnist-mlp. The server wants an API key, so
every test also goes through the page's key field. Each check compares what the page shows
with what the API answers the test for the same request. Needs Debian's chromium and
chromium-driver (.ci/run installs them).

COUNTERFEIT_SCREENSHOTS=1 also writes the screenshots of docs/playground/ (quantised to a
few colours: the committed files stay small)."""

from __future__ import annotations

import base64
import io
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from loadtests.server import REPO, Server, serving

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install chromium"),
    pytest.mark.skipif(CHROMEDRIVER is None,
                       reason="needs chromedriver: apt-get install chromium-driver"),
]

KEY = secrets.token_urlsafe(32)
KEY_STORAGE = "counterfeit.api-key"  # playground.js keeps the key there
DESKTOP = (1280, 800)
PHONE = (390, 844)
WAIT_S = 60  # a busy 2-core machine: generous, a passing test never waits this long
SCREENSHOTS = REPO / "docs" / "playground" if os.environ.get("COUNTERFEIT_SCREENSHOTS") == "1" \
    else None


@pytest.fixture(scope="module")
def server(served_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(served_models, tmp_path_factory.mktemp("playground"), COUNTERFEIT_API_KEY=KEY,
                 COUNTERFEIT_DEFAULT_MODEL="mnist-mlp") as server:
        yield server


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    """The test's own client: what the page shows must be what the API answers."""
    with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {KEY}"},
                      timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    set_viewport(driver, DESKTOP)
    try:
        yield driver
    finally:
        driver.quit()


def set_viewport(browser, size: tuple[int, int], mobile: bool = False) -> None:
    """The page's viewport, exactly (a window's size includes the browser's own bars)."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": mobile})


def open_page(browser, server: Server) -> None:
    """The page, its models listed and its first samples drawn."""
    browser.get(f"{server.url}/playground/")
    wait(browser, lambda: "seed" in text(browser, "#samples .status"))


@pytest.fixture
def page(browser, server: Server) -> Iterator:
    """The page, with the key in this tab's sessionStorage as if the user had pasted it; the
    test fails on any error in the browser's console but a failed load (the browser logs
    each 4xx answer so, and tests ask for some)."""
    browser.get(f"{server.url}/playground/favicon.svg")  # the origin, without the page
    browser.execute_script("sessionStorage.setItem(arguments[0], arguments[1])", KEY_STORAGE,
                           KEY)
    open_page(browser, server)
    browser.get_log("browser")
    yield browser
    assert [e for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and e["source"] != "network"] == []


def wait(browser, condition, timeout: float = WAIT_S):
    return WebDriverWait(browser, timeout).until(lambda _: condition())


def text(browser, selector: str) -> str:
    return browser.find_element(By.CSS_SELECTOR, selector).text


def panel(browser, name: str) -> WebElement:
    return browser.find_element(By.ID, name)


def fill(element: WebElement, value: str) -> None:
    element.clear()
    element.send_keys(value)


def submit(section: WebElement) -> None:
    section.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def shown_pixels(browser, element: WebElement) -> np.ndarray:
    """The RGB pixels the page shows in an <img> (at its natural size) or a <canvas>."""
    width, height, rgba = browser.execute_script("""
        const element = arguments[0];
        const canvas = element instanceof HTMLCanvasElement ? element :
          document.createElement("canvas");
        if (canvas !== element) {
          canvas.width = element.naturalWidth;
          canvas.height = element.naturalHeight;
          canvas.getContext("2d").drawImage(element, 0, 0);
        }
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let bytes = "";
        for (const value of data) bytes += String.fromCharCode(value);
        return [canvas.width, canvas.height, btoa(bytes)];""", element)
    pixels = np.frombuffer(base64.b64decode(rgba), np.uint8).reshape(height, width, 4)
    return pixels[:, :, :3]


def png_pixels(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def grey_png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image, "L").save(out, format="PNG")
    return out.getvalue()


def draw_a_seven(browser, canvas: WebElement) -> None:
    """A 7 drawn with the mouse: a bar, then the stem (offsets from the canvas's centre)."""
    strokes = ActionChains(browser, duration=20).move_to_element_with_offset(canvas, -50, -55)
    strokes.click_and_hold()
    for dx, dy in [(25, 0)] * 4 + [(-8, 15)] * 8:
        strokes.move_by_offset(dx, dy)
    strokes.release().perform()


def screenshot(browser, element: WebElement | None, name: str) -> None:
    """docs/playground/NAME.png, when asked for: all of `element` (even where it is taller
    than the viewport), or the viewport as it is (None)."""
    if SCREENSHOTS is None:
        return
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.execute_script("document.activeElement.blur()")  # no focus ring in the docs
    if element is None:
        raw = browser.get_screenshot_as_png()
    else:
        box = browser.execute_script("""const box = arguments[0].getBoundingClientRect();
            return {x: box.left + scrollX, y: box.top + scrollY, width: box.width,
                    height: box.height, scale: 1};""", element)
        shot = browser.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "clip": box, "captureBeyondViewport": True})
        raw = base64.b64decode(shot["data"])
    image = Image.open(io.BytesIO(raw)).convert("RGB").quantize(64, dither=Image.Dither.NONE)
    image.save(SCREENSHOTS / f"{name}.png", optimize=True)


def test_the_page_wants_the_servers_key_and_loads_without_errors(browser, server: Server,
                                                                 api: httpx.Client) -> None:
    # the page's files load without the key; everything it asks the API needs it
    for path in ("/playground/", "/playground/playground.js", "/playground/playground.css"):
        assert httpx.get(f"{server.url}{path}").status_code == 200
    assert httpx.get(f"{server.url}/playground").headers["location"] == "playground/"
    assert httpx.get(f"{server.url}/models").status_code == 401
    assert "(./playground/)" in api.get("/docs.json").json()["info"]["description"]

    browser.get(f"{server.url}/playground/favicon.svg")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/playground/")
    key = browser.find_element(By.ID, "api-key")
    wait(browser, lambda: key.get_attribute("aria-invalid") == "true")
    refusal = httpx.get(f"{server.url}/models").json()["error"]
    assert text(browser, "#models-error") == f"401: {refusal}"
    assert browser.switch_to.active_element == key

    fill(key, KEY)
    browser.find_element(By.CSS_SELECTOR, "#access button[type=submit]").click()
    wait(browser, lambda: "seed" in text(browser, "#samples .status"))
    assert text(browser, "#models-status") == \
        f"6 models served: {', '.join(sorted(api.get('/models').json()['models']))}."
    assert not browser.find_element(By.ID, "models-error").is_displayed()
    browser.get_log("browser")  # the 401 before the key, as the browser logs it
    open_page(browser, server)  # the key stays in the tab
    assert browser.get_log("browser") == []
    assert browser.execute_script("return document.documentElement.scrollWidth") <= DESKTOP[0]


def test_samples_show_the_seeds_images_and_same_again_repeats_them(page, api: httpx.Client
                                                                   ) -> None:
    samples = panel(page, "samples")
    fill(samples.find_element(By.NAME, "seed"), "7")
    submit(samples)
    wait(page, lambda: "seed 7 " in text(page, "#samples .status"))
    picture = samples.find_element(By.CSS_SELECTOR, "img.picture")
    expected = api.post("/sample", json={"n": 16, "seed": 7, "model": "mnist-mlp"})
    np.testing.assert_array_equal(shown_pixels(page, picture), png_pixels(expected.content))

    samples.find_element(By.CSS_SELECTOR, "[data-action=random]").click()
    wait(page, lambda: "seed 7 " not in text(page, "#samples .status"))
    seed = re.search(r"seed (\d+) ", text(page, "#samples .status")).group(1)
    drawn = shown_pixels(page, picture)
    samples.find_element(By.CSS_SELECTOR, "[data-action=again]").click()
    wait(page, lambda: samples.get_attribute("aria-busy") is None)
    assert f"seed {seed} " in text(page, "#samples .status")
    np.testing.assert_array_equal(shown_pixels(page, picture), drawn)
    screenshot(page, samples, "samples")


def test_the_interpolation_slider_walks_the_path_without_new_requests(page, api: httpx.Client
                                                                      ) -> None:
    walk = panel(page, "interpolation")
    submit(walk)  # seeds 1 and 2, 24 steps: the form's defaults
    step = walk.find_element(By.CSS_SELECTOR, "canvas.step")
    wait(page, lambda: step.is_displayed())
    path = np.load(io.BytesIO(api.post("/interpolate", json={
        "seed_start": 1, "seed_end": 2, "steps": 24, "model": "mnist-mlp",
        "format": "npy"}).content))
    requests = page.execute_script("return performance.getEntriesByType('resource').length")
    slider = walk.find_element(By.ID, "interpolation-slider")
    for i in (0, 5, 17):
        slider.send_keys(Keys.HOME + Keys.RIGHT * i)
        assert walk.find_element(By.TAG_NAME, "output").text == f"{i + 1} of 24"
        shown = shown_pixels(page, step)[:, :, 0].astype(int)
        assert np.abs(shown - np.round(path[i] * 255)).max() <= 1
    assert page.execute_script("return performance.getEntriesByType('resource').length") \
        == requests
    slider.send_keys(Keys.HOME + Keys.RIGHT * 9)
    screenshot(page, walk, "interpolation")
    page.execute_script("window.scrollTo(0, 0)")
    screenshot(page, None, "overview")


def test_scoring_a_drawn_digit_shows_d_and_the_reconstruction(page, api: httpx.Client) -> None:
    scoring = panel(page, "scoring")
    Select(scoring.find_element(By.NAME, "model")).select_by_value("tiny")  # has an encoder
    pad = scoring.find_element(By.CSS_SELECTOR, "canvas[data-field=file]")
    draw_a_seven(page, pad)
    submit(scoring)
    wait(page, lambda: scoring.find_element(By.CSS_SELECTOR, "figcaption").text)
    digit = grey_png(shown_pixels(page, pad)[:, :, 0])
    score = api.post("/score", files={"file": ("digit.png", digit)}, data={"model": "tiny"})
    assert f"D(x) = {score.json()['scores'][0]:.3f}: " in text(page, "#scoring .status")
    inverted = api.post("/invert", files={"file": ("digit.png", digit)},
                        data={"model": "tiny"}).json()
    assert f"error {inverted['pixel_error'][0]:.4f}" in \
        scoring.find_element(By.CSS_SELECTOR, "figcaption").text
    pair = api.post("/invert", files={"file": ("digit.png", digit)},
                    data={"model": "tiny", "format": "png"})
    np.testing.assert_array_equal(
        shown_pixels(page, scoring.find_element(By.CSS_SELECTOR, "img.picture")),
        png_pixels(pair.content))
    screenshot(page, scoring, "scoring")


def test_inpainting_an_uploaded_digit_shows_k_completions(page, api: httpx.Client,
                                                           tmp_path: Path) -> None:
    one = np.load(io.BytesIO(api.post("/sample", json={
        "n": 1, "seed": 3, "model": "mnist-mlp", "format": "npy"}).content))
    digit = grey_png(np.round(one[0] * 255).astype(np.uint8))
    (tmp_path / "digit.png").write_bytes(digit)
    inpainting = panel(page, "inpainting")
    inpainting.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        str(tmp_path / "digit.png"))
    Select(inpainting.find_element(By.NAME, "family")).select_by_value("centre")
    fill(inpainting.find_element(By.NAME, "k"), "5")
    fill(inpainting.find_element(By.NAME, "seed"), "11")
    submit(inpainting)
    wait(page, lambda: "seed 11:" in text(page, "#inpainting .status"))
    assert text(page, "#inpainting .status").startswith("5 completions by paint")
    completions = api.post("/inpaint", files={"file": ("digit.png", digit)}, data={
        "family": "centre", "hidden": "0.5", "k": "5", "seed": "11", "model": "paint"})
    shown = shown_pixels(page, inpainting.find_element(By.CSS_SELECTOR, "img.picture"))
    np.testing.assert_array_equal(shown, png_pixels(completions.content))
    # one row: the digit, the masked input, k completions; 2-pixel gaps, enlarged twice
    assert shown.shape[:2] == (2 * (28 + 2 * 2), 2 * ((5 + 2) * (28 + 2) + 2))
    screenshot(page, inpainting, "inpainting")


def test_a_job_reaches_completed_with_a_download_link(page, api: httpx.Client) -> None:
    jobs = panel(page, "jobs")
    fill(jobs.find_element(By.NAME, "n"), "300")
    fill(jobs.find_element(By.NAME, "seed"), "5")
    Select(jobs.find_element(By.NAME, "model")).select_by_value("mnist-mlp")
    submit(jobs)
    link = jobs.find_element(By.CSS_SELECTOR, "a.download")
    wait(page, lambda: link.is_displayed())
    assert ": completed, 300 of 300 images (100%), seed 5." in text(page, "#jobs .status")
    assert jobs.find_element(By.TAG_NAME, "progress").get_attribute("value") == "1"
    job_id = link.get_attribute("download").removesuffix(".npy")
    assert link.get_attribute("href").startswith("blob:")
    result = np.load(io.BytesIO(api.post("/jobs/result", json={"job_id": job_id}).content))
    preview = shown_pixels(page, jobs.find_element(By.CSS_SELECTOR, ".preview canvas"))
    np.testing.assert_array_equal(preview[:28, :28, 0], result[0])
    assert not jobs.find_element(By.CSS_SELECTOR, "[data-action=cancel]").is_enabled()
    screenshot(page, jobs, "jobs")


def test_api_errors_are_shown_in_the_apis_words_and_network_failures_plainly(
        page, api: httpx.Client) -> None:
    samples = panel(page, "samples")
    n = samples.find_element(By.NAME, "n")
    fill(n, "5000")
    submit(samples)
    error = samples.find_element(By.CSS_SELECTOR, ".error")
    wait(page, error.is_displayed)
    refusal = api.post("/sample", json={"n": 5000, "model": "mnist-mlp"})
    assert error.text == f"{refusal.status_code}: {refusal.json()['error']}"
    assert n.get_attribute("aria-invalid") == "true" and page.switch_to.active_element == n
    screenshot(page, samples, "error")

    fill(n, "4")
    page.execute_cdp_cmd("Network.enable", {})
    page.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    try:
        submit(samples)
        wait(page, lambda: "No answer from the service" in error.text)
    finally:
        page.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    assert n.get_attribute("aria-invalid") is None
    submit(samples)
    wait(page, lambda: not error.is_displayed())


def test_panels_offer_only_what_each_model_can_do(page) -> None:
    def models(name: str) -> set[str]:
        select = panel(page, name).find_element(By.NAME, "model")
        return {option.get_attribute("value") for option in Select(select).options}

    assert models("inpainting") == {"paint"}
    scorers = models("scoring")
    assert {"tiny", "rgb", "cond"} <= scorers and not {"gonly", "paint"} & scorers
    assert "paint" not in models("samples") | models("interpolation") | models("jobs")

    walk = panel(page, "interpolation")
    digits = walk.find_element(By.CSS_SELECTOR, "input[value=digits]")
    Select(walk.find_element(By.NAME, "model")).select_by_value("gonly")
    note = walk.find_element(By.CSS_SELECTOR, "[data-note=encoder]")
    assert not digits.is_enabled()
    assert note.text.startswith("gonly has no encoder (encoder.onnx)")
    Select(walk.find_element(By.NAME, "model")).select_by_value("tiny")
    assert digits.is_enabled() and not note.is_displayed()

    samples = panel(page, "samples")
    Select(samples.find_element(By.NAME, "model")).select_by_value("cond")
    label = Select(samples.find_element(By.NAME, "label"))
    assert [o.text for o in label.options] == ["each class in turn"] + \
        [f"class-{i}" for i in range(10)]


def test_a_panel_no_served_model_can_do_is_off_and_says_why(page, server: Server) -> None:
    # the page as a server without an inpainting model would answer it: /models without one
    script = page.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const fetchFromServer = window.fetch;
        window.fetch = async (...args) => {
          const response = await fetchFromServer(...args);
          if (!String(args[0]).endsWith("/models")) return response;
          const catalogue = await response.json();
          delete catalogue.models.paint;
          return new Response(JSON.stringify(catalogue), {headers: response.headers});
        };"""})
    try:
        open_page(page, server)
    finally:
        page.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                             {"identifier": script["identifier"]})
    inpainting = panel(page, "inpainting")
    assert inpainting.find_element(By.CSS_SELECTOR, ".unavailable").text.startswith(
        "No loaded model completes images")
    assert not inpainting.find_element(By.CSS_SELECTOR,
                                       "button[type=submit]").is_enabled()


def test_the_page_fits_a_phone_without_sideways_scrolling(page, server: Server) -> None:
    set_viewport(page, PHONE, mobile=True)
    try:
        open_page(page, server)
        assert page.execute_script("return document.documentElement.scrollWidth") <= PHONE[0]
        page.execute_script("document.querySelector('#samples').scrollIntoView()")
        screenshot(page, None, "phone")
    finally:
        set_viewport(page, DESKTOP)
