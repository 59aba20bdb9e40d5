"""The playground in a real browser: headless Chromium from the system's packages, driven by Selenium.

It loads the page, moves a context slider, samples (frames stream, then the grid: the right size, not blank),
races (DDIM finishes before DDPM), edits a sprite picked from the grid, and saves a screenshot. With
SPRITEDIFF_SCREENSHOT=docs/playground.png it runs the shipped model and writes the README's screenshot there.
Without a browser the test is skipped, except under CI (env CI), where that is a failure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny_model
from PIL import Image

import spritediff
from spritediff.serve.app import create_app
from spritediff.serve.config import ServeConfig
from spritediff.serve.server import run_in_thread

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1280, 1000)


def _missing(message: str):
    if os.environ.get("CI"):  # CI installs chromium (.ci/run): a missing browser is a failure, not a skip
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[test]')")
    browser = next((path for path in map(shutil.which, BROWSERS) if path), None)
    chromedriver = shutil.which("chromedriver")
    if browser is None:
        _missing(f"no Chromium found (looked for {', '.join(BROWSERS)}; apt-get install chromium chromium-driver)")
    if chromedriver is None:
        _missing(f"{browser} is there but chromedriver is not (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    chrome.set_script_timeout(30)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def page_url():
    screenshot = os.environ.get("SPRITEDIFF_SCREENSHOT")
    model = spritediff.load() if screenshot else tiny_model()
    model.class_mix = model.class_mix or (0.1, 0.4, 0.1, 0.3, 0.1)  # the page then starts on the training mix
    config = ServeConfig() if screenshot else ServeConfig(precision="fp32")
    with run_in_thread(create_app(model, "cpu", config)) as url:
        yield url


def wait_for(driver, script: str, timeout: float = 120.0):
    """Wait until the JavaScript expression `script` is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(f"return {script}"))


def test_the_playground_in_headless_chromium(driver, page_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(page_url)
    wait_for(driver, "document.body.dataset.ready === 'true'", 30)
    assert driver.find_element(By.CSS_SELECTOR, "input[name=s-mode][value=mix]").is_selected()
    assert driver.find_element(By.ID, "s-context-text").text == "Context: mix"
    slider = driver.find_element(By.ID, "s-w-hero")
    slider.send_keys(*[Keys.ARROW_RIGHT] * 20)  # 0 -> 1 in steps of 0.05, as a keyboard user would
    assert driver.find_element(By.CSS_SELECTOR, "input[name=s-mode][value=blend]").is_selected()
    assert "hero=1" in driver.find_element(By.ID, "s-context-text").text
    rows = 2 if os.environ.get("SPRITEDIFF_SCREENSHOT") else 1
    n = driver.find_element(By.ID, "s-n")
    n.clear()
    n.send_keys(str(8 * rows))
    driver.find_element(By.ID, "s-start").click()
    wait_for(driver, "document.getElementById('s-grid').dataset.state === 'done'")
    assert int(driver.find_element(By.ID, "s-live").get_attribute("data-frames")) >= 1
    check_grid(driver, "s-grid", ((8 * 17 + 1) * 4, (rows * 17 + 1) * 4))
    links = [a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "#s-downloads a")]
    assert [link.rsplit("/", 1)[1] for link in links] == ["grid.png", "denoise.gif", "samples.npy"]
    screenshot(driver, tmp_path)
    run_race(driver)
    edit_a_picked_sprite(driver)
    interpolate_to_an_upload(driver, tmp_path)
    fill_a_painted_mask(driver)


def check_grid(driver, image_id: str, size: tuple[int, int]) -> None:
    """The image has the grid's size and is not blank: many distinct colours."""
    width, height, colours = driver.execute_script("""
        const img = document.getElementById(arguments[0]);
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
        const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length; i += 4) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        return [img.naturalWidth, img.naturalHeight, seen.size];""", image_id)
    assert (width, height) == size
    assert colours > 20


def screenshot(driver, tmp_path: Path) -> None:
    """A screenshot of the sample panel; also written to $SPRITEDIFF_SCREENSHOT when that is set."""
    path = tmp_path / "playground.png"
    driver.save_screenshot(str(path))
    assert Image.open(path).size[0] >= WINDOW[0] // 2
    target = os.environ.get("SPRITEDIFF_SCREENSHOT")
    if target:
        shutil.copyfile(path, target)


def run_race(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "tab-race").click()
    n = driver.find_element(By.ID, "r-n")
    n.clear()
    n.send_keys("2")
    driver.find_element(By.ID, "r-start").click()
    wait_for(driver, "document.getElementById('lanes').dataset.state === 'done'", 300)
    ranks = {lane: int(driver.find_element(By.ID, f"lane-{lane}").get_attribute("data-rank"))
             for lane in ("ddpm", "ddim", "dpmpp-2m")}
    assert ranks["ddim"] < ranks["ddpm"] and ranks["dpmpp-2m"] < ranks["ddpm"]
    assert "500 / 500 calls" in driver.find_element(By.CSS_SELECTOR, "#lane-ddpm .calls").text


def edit_a_picked_sprite(driver) -> None:
    """Click the first sprite of the sample grid, reconstruct it exactly, and see input beside reconstruction."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.find_element(By.ID, "tab-sample").click()
    grid = driver.find_element(By.ID, "s-grid")
    left = -grid.size["width"] // 2 + grid.size["width"] // 16  # the middle of the first cell
    ActionChains(driver).move_to_element_with_offset(grid, left, 0).click().perform()
    wait_for(driver, "!document.getElementById('panel-edit').hidden", 10)
    Select(driver.find_element(By.ID, "e-op")).select_by_value("reconstruct")
    Select(driver.find_element(By.ID, "e-method")).select_by_value("exact")
    steps = driver.find_element(By.ID, "e-steps")
    steps.clear()
    steps.send_keys("10")
    run_edit(driver)
    assert "Reconstruction error" in driver.find_element(By.ID, "e-stats").text
    check_grid(driver, "e-grid", ((2 * 17 + 1) * 4, (17 + 1) * 4))


def run_edit(driver) -> None:
    from selenium.webdriver.common.by import By

    driver.execute_script("document.getElementById('e-grid').dataset.state = ''")
    driver.find_element(By.ID, "e-run").click()
    state = wait_for(driver, "['done', 'error'].includes(document.getElementById('e-grid').dataset.state) && "
                             "document.getElementById('e-grid').dataset.state", 120)
    assert state == "done", driver.find_element(By.ID, "e-status").text


def set_number(driver, element_id: str, value: int) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(str(value))


def interpolate_to_an_upload(driver, tmp_path: Path) -> None:
    """Upload a 16x16 PNG as sprite B through the file input, then interpolate A -> B in 4 frames."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sprite = tmp_path / "upload.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(sprite)
    driver.find_element(By.ID, "file-b").send_keys(str(sprite))
    wait_for(driver, "document.getElementById('e-status').textContent.includes('loaded from upload.png')", 10)
    Select(driver.find_element(By.ID, "e-op")).select_by_value("interpolate")
    set_number(driver, "e-frames", 4)
    run_edit(driver)
    check_grid(driver, "e-grid", ((4 * 17 + 1) * 4, (17 + 1) * 4))


def fill_a_painted_mask(driver) -> None:
    """Paint a stroke over sprite A with the mouse and fill it (inpainting, two results)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "e-op")).select_by_value("inpaint")
    driver.find_element(By.ID, "paint-mask").click()
    canvas = driver.find_element(By.ID, "canvas-a")
    ActionChains(driver).move_to_element_with_offset(canvas, -40, 0).click_and_hold().move_by_offset(40, 0) \
        .move_by_offset(40, 0).release().perform()
    assert driver.execute_script("return state.mask.reduce((a, b) => a + b, 0)") >= 3
    set_number(driver, "e-n", 2)
    set_number(driver, "e-resample", 1)
    set_number(driver, "e-steps", 10)
    run_edit(driver)
    check_grid(driver, "e-grid", ((4 * 17 + 1) * 4, (17 + 1) * 4))  # the input, the hole, two fills
