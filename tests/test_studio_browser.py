"""The studio's page in a real browser: Debian's chromium, headless, through its chromedriver.

Open the studio on a small digits run, take a query, label five images with the keyboard,
undo one more, add a new class, look at the map and the channels, retrain, wait for it
and see the accuracy update. A screenshot of every panel is kept under
``$SSVAE_TEST_ARTIFACTS/studio/`` (default ``build/test-artifacts/studio/``).

Without chromium, chromedriver or selenium the test is skipped, unless
``SSVAE_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssvae_core.cli import main
from ssvae_core.labels import STORE_NAME, LabelStore

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "browser-test-token-0123456789"
RUN_OPTIONS = [
    "--set", "prior.num_components=14", "--set", 'head.name="tau"', "--set", "head.free_mass=0.06",
    "--set", "train.log_every=20", "--set", "train.eval_every=20",
]
SMALL = [
    "--set", "encoder.hidden=[32]", "--set", "decoder.hidden=[32]", "--set", "model.latent_dim=4",
    "--set", "loss.consistency.weight=0",
]
# SSVAE_STUDIO_DEMO=1: the digits preset's own networks trained for 1500 steps, for the
# screenshots of docs/user-guide.md; the default is a small model that trains in seconds.
DEMO = os.environ.get("SSVAE_STUDIO_DEMO") == "1"
TRAIN_STEPS, RETRAIN_STEPS = (1500, 300) if DEMO else (60, 40)


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        return f"{error.name} is not installed"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install chromium chromium-driver)"
    return None


def _artifacts() -> Path:
    folder = Path(os.environ.get("SSVAE_TEST_ARTIFACTS", ROOT / "build" / "test-artifacts")) / "studio"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    problem = _missing()
    if problem is not None:
        if os.environ.get("SSVAE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test cannot run: {problem}")
        pytest.skip(f"the browser test needs Chromium: {problem}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    import uvicorn

    from ssvae_core.studio import StudioSession, create_app

    run = tmp_path / "run"
    code = main(["train", "--labels-per-class", "2", "--steps", str(TRAIN_STEPS), "--seed", "0",
                 "--out", str(run), "--quiet", "--no-plots", *RUN_OPTIONS, *([] if DEMO else SMALL)])
    assert code == 0
    session = StudioSession(run)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(session, TOKEN), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", run
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        session.close()
        sock.close()


def test_label_with_the_keyboard_add_a_class_and_retrain(browser, served: tuple[str, Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    base, run = served
    shots = _artifacts()
    wait = WebDriverWait(driver, 60)
    element = lambda id_: driver.find_element(By.ID, id_)  # noqa: E731

    def no_error() -> None:
        message = element("message")
        assert not message.is_displayed() or message.get_attribute("class") == "info", message.text

    driver.get(f"{base}/?token={TOKEN}")
    wait.until(lambda d: element("run-name").text == run.name)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#label-buttons .label-button")) == 10)
    assert element("num-labeled").text == "20"
    accuracy_before = element("accuracy").text
    assert accuracy_before.endswith("%")

    # a query, then five images labeled with the keyboard
    element("take-query").click()
    wait.until(lambda d: element("current-image").is_displayed())
    labeled = {}
    for key in "31415":
        index = element("current-image").get_attribute("data-index")
        ActionChains(driver).send_keys(key).perform()
        wait.until(lambda d, index=index: element("current-image").get_attribute("data-index") != index)
        labeled[int(index)] = key
    wait.until(lambda d: element("num-labeled").text == "25")
    no_error()
    driver.save_screenshot(str(shots / "queue.png"))

    # one more, taken back with Backspace
    index = int(element("current-image").get_attribute("data-index"))
    ActionChains(driver).send_keys("9").perform()
    wait.until(lambda d: element("num-labeled").text == "26")
    ActionChains(driver).send_keys(Keys.BACKSPACE).perform()
    wait.until(lambda d: element("num-labeled").text == "25")
    assert int(element("current-image").get_attribute("data-index")) == index

    # a class the model has not seen; the shortcuts keep quiet while a name is typed
    element("new-class-name").send_keys("1", Keys.BACKSPACE, "smudge")
    element("new-class").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#label-buttons [data-label="smudge"]'))
    wait.until(lambda d: element("num-labeled").text == "26")
    labeled[index] = "smudge"
    no_error()

    # → and space skip (space too while the "New class" button has the focus)
    for key in (Keys.ARROW_RIGHT, Keys.SPACE):
        index = element("current-image").get_attribute("data-index")
        ActionChains(driver).send_keys(key).perform()
        wait.until(lambda d, index=index: element("current-image").get_attribute("data-index") != index)
    assert element("num-labeled").text == "26"
    no_error()

    # the map and the channels
    element("tab-map").click()
    wait.until(lambda d: element("map-plot").get_attribute("data-state") == "ready")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-plot .scatterlayer .point")) > 1000)
    # hovering a point shows its image; a lasso selection is labeled in one go (the
    # events Plotly fires for them, on three unlabeled points)
    chosen = driver.execute_script(
        """const map = studio.map;
           return map.index.filter((_, i) => map.label[i] === null).slice(0, 3);"""
    )
    driver.execute_script(
        "document.getElementById('map-plot').emit('plotly_hover', {points: [{customdata: arguments[0]}]})",
        chosen[0],
    )
    wait.until(lambda d: element("hover-image").is_displayed())
    assert f"example #{chosen[0]}" in element("hover-info").text
    driver.execute_script(
        "document.getElementById('map-plot').emit('plotly_selected', "
        "{points: arguments[0].map((i) => ({customdata: i}))})",
        chosen,
    )
    wait.until(lambda d: element("label-selection").is_enabled())
    assert element("label-selection").text == "Label 3 selected"
    from selenium.webdriver.support.select import Select

    Select(element("selection-label")).select_by_value("7")
    element("label-selection").click()
    wait.until(lambda d: element("num-labeled").text == "29")
    wait.until(lambda d: element("map-plot").get_attribute("data-state") == "ready")
    labeled.update({int(i): "7" for i in chosen})
    no_error()
    driver.save_screenshot(str(shots / "map.png"))
    element("tab-channels").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#channels-list .channel img")) == 14)
    wait.until(lambda d: all(
        d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        for img in d.find_elements(By.CSS_SELECTOR, "#channels-list .channel img")
    ))
    driver.save_screenshot(str(shots / "channels.png"))

    # a retrain in the background; the accuracy updates when it is done
    element("tab-training").click()
    steps = element("retrain-steps")
    steps.clear()
    steps.send_keys(str(RETRAIN_STEPS))
    element("retrain").click()
    WebDriverWait(driver, 300).until(
        lambda d: element("retrain-state").get_attribute("data-state") in ("done", "failed")
    )
    assert element("retrain-state").get_attribute("data-state") == "done", element("retrain-state").text
    wait.until(lambda d: element("accuracy").get_attribute("data-version") == "1")
    assert element("accuracy").text.endswith("%")
    assert "held-out accuracy" in element("retrain-state").text
    # the loss and, with train.eval_every, the held-out accuracy as it trained
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#loss-plot .scatterlayer .trace")) == 2)
    driver.save_screenshot(str(shots / "training.png"))

    element("tab-history").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-table tbody tr")) == 29)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-plot .scatterlayer .point")) == 2)
    assert "studio" in element("history-table").text
    driver.save_screenshot(str(shots / "history.png"))
    # the queue was taken again from the retrained model
    element("tab-queue").click()
    wait.until(lambda d: element("current-image").is_displayed())
    assert not driver.find_elements(By.CSS_SELECTOR, "#queue-thumbs .thumb.done")
    assert int(element("current-image").get_attribute("data-index")) not in labeled
    no_error()

    store = LabelStore.load(run / STORE_NAME)
    current = store.current()
    assert {i: current.get(i) for i in labeled} == labeled
    assert {e.source for e in store.entries if e.index in labeled} == {"studio"}
    for name in ("queue", "map", "channels", "training", "history"):
        assert (shots / f"{name}.png").read_bytes().startswith(b"\x89PNG")
