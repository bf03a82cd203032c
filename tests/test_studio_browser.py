"""The studio's page in a real browser: Debian's chromium, headless, through its chromedriver.

Open the studio on a small digits run, take a query, label five images with the keyboard,
one with a click (Enter after it labels nothing), undo one more, add a new class, look at
the map (the class layout by default, stable class colours, a lasso selection through its
preview, labeled and undone as one action), the channels, retrain, wait for it and see the
accuracy update, correct a label from the history, and open a second studio in the same
browser without locking the first one out. A screenshot of every panel is kept under
``$SSVAE_TEST_ARTIFACTS/studio/`` (default ``build/test-artifacts/studio/``).

Without chromium, chromedriver or selenium the test is skipped, unless
``SSVAE_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ssvae_core.cli import main
from ssvae_core.labels.store import STORE_NAME, LabelStore

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


@contextlib.contextmanager
def _serve(run: Path, token: str) -> Iterator[str]:
    import uvicorn

    from ssvae_core.studio import StudioSession, create_app

    session = StudioSession(run)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(session, token), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        session.close()
        sock.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    run = tmp_path / "run"
    code = main(["train", "--labels-per-class", "2", "--steps", str(TRAIN_STEPS), "--seed", "0",
                 "--out", str(run), "--quiet", "--no-plots", *RUN_OPTIONS, *([] if DEMO else SMALL)])
    assert code == 0
    shutil.copytree(run, tmp_path / "second")  # for a second studio in the same browser
    with _serve(run, TOKEN) as base:
        yield base, run


def test_label_with_the_keyboard_add_a_class_and_retrain(browser, served: tuple[str, Path]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
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

    # who labels here: asked once, kept by the browser
    element("annotator").send_keys("ana")
    driver.execute_script("document.activeElement.blur()")

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
    # why the image is queued: its two likeliest classes, its channel, its labeled neighbours
    assert "nearest labeled: #" in element("current-why").text and " or " in element("current-why").text
    driver.save_screenshot(str(shots / "queue.png"))
    # ? shows the keys, Escape hides them
    ActionChains(driver).send_keys("?").perform()
    wait.until(lambda d: element("help-overlay").is_displayed())
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    wait.until(lambda d: not element("help-overlay").is_displayed())

    # one with a click; Enter afterwards gives the next image nothing
    index = element("current-image").get_attribute("data-index")
    driver.find_element(By.CSS_SELECTOR, '#label-buttons [data-label="2"]').click()
    wait.until(lambda d: element("num-labeled").text == "26")
    wait.until(lambda d, index=index: element("current-image").get_attribute("data-index") != index)
    labeled[int(index)] = "2"
    index = element("current-image").get_attribute("data-index")
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    time.sleep(0.5)  # time for a label request, had Enter sent one
    assert element("num-labeled").text == "26"
    assert element("current-image").get_attribute("data-index") == index
    # labels changed since the map was drawn: the map says it is stale
    assert element("map-status").get_attribute("data-stale") == "1"

    # one more, taken back with Backspace
    index = int(element("current-image").get_attribute("data-index"))
    ActionChains(driver).send_keys("9").perform()
    wait.until(lambda d: element("num-labeled").text == "27")
    ActionChains(driver).send_keys(Keys.BACKSPACE).perform()
    wait.until(lambda d: element("num-labeled").text == "26")
    assert int(element("current-image").get_attribute("data-index")) == index

    # a class the model has not seen, from its key; the shortcuts keep quiet while a name is typed
    ActionChains(driver).send_keys("+").perform()
    assert driver.switch_to.active_element == element("new-class-name")
    ActionChains(driver).send_keys("1", Keys.BACKSPACE, "smudge", Keys.ENTER).perform()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#label-buttons [data-label="smudge"]'))
    wait.until(lambda d: element("num-labeled").text == "27")
    labeled[index] = "smudge"
    no_error()

    # → and space skip
    for key in (Keys.ARROW_RIGHT, Keys.SPACE):
        index = element("current-image").get_attribute("data-index")
        ActionChains(driver).send_keys(key).perform()
        wait.until(lambda d, index=index: element("current-image").get_attribute("data-index") != index)
    assert element("num-labeled").text == "27"
    no_error()

    # a page at once in the grid: predictions by default, one changed, the rest skipped;
    # labeled as one action, and taken back as one
    element("grid-toggle").click()
    items = driver.find_elements(By.CSS_SELECTOR, "#queue-grid .grid-item")
    assert len(items) >= 3
    Select(items[0].find_element(By.CLASS_NAME, "grid-label")).select_by_value("5")
    for item in items[2:]:
        Select(item.find_element(By.CLASS_NAME, "grid-label")).select_by_value("")
    gridded = {int(items[0].get_attribute("data-index")): "5"}
    driver.save_screenshot(str(shots / "grid.png"))
    element("grid-apply").click()
    wait.until(lambda d: element("num-labeled").text == "29")
    assert LabelStore.load(run / STORE_NAME).current()[next(iter(gridded))] == "5"
    ActionChains(driver).send_keys(Keys.BACKSPACE).perform()
    wait.until(lambda d: element("num-labeled").text == "27")
    element("grid-toggle").click()
    no_error()

    # the map and the channels; the map opens on the class layout
    element("tab-map").click()
    wait.until(lambda d: element("map-plot").get_attribute("data-state") == "ready")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-plot .scatterlayer .point")) > 1000)
    assert element("map-projection").get_attribute("value") == "classes"
    assert element("map-status").get_attribute("data-stale") == "0"
    # a class has one colour in every colour mode, whatever its name sorts as
    colours = "return Object.fromEntries(document.getElementById('map-plot').data.map((t) => [t.name, t.marker.color]))"
    predicted_colours = driver.execute_script(colours)
    Select(element("map-colour")).select_by_value("label")
    label_colours = driver.execute_script(colours)
    shared = set(predicted_colours) & set(label_colours) - {"unlabeled"}
    assert {"2", "smudge"} <= set(label_colours) and shared
    assert all(predicted_colours[name] == label_colours[name] for name in shared)
    assert len(set(label_colours.values())) == len(label_colours)
    Select(element("map-colour")).select_by_value("predicted")
    # filters: one predicted class, then only its labeled examples, then everything again
    total = len(driver.execute_script("return studio.map.index"))
    wanted = driver.execute_script("return studio.map.predicted[0]")
    Select(element("filter-class")).select_by_value(wanted)
    names = driver.execute_script("return document.getElementById('map-plot').data.map((t) => t.name)")
    assert names == [wanted]
    shown = int(element("filter-count").text.split()[0])
    assert 0 < shown < total
    driver.save_screenshot(str(shots / "filters.png"))
    Select(element("filter-labeled")).select_by_value("labeled")
    assert int(element("filter-count").text.split()[0]) < shown
    Select(element("filter-labeled")).select_by_value("")
    Select(element("filter-class")).select_by_value("")
    assert element("filter-count").text.startswith(f"{total} of {total}")
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
    assert element("label-selection").text == "Label 3 selected…"
    # a preview first: the count, the images, the majority prediction as the label
    element("label-selection").click()
    wait.until(lambda d: element("selection-preview").is_displayed())
    assert "Label 3 examples" in element("preview-count").text
    assert len(driver.find_elements(By.CSS_SELECTOR, "#preview-thumbs img")) == 3
    majority = driver.execute_script(
        """const map = studio.map, votes = {};
           for (const i of arguments[0]) { const p = map.predicted[map.index.indexOf(i)]; votes[p] = (votes[p] || 0) + 1; }
           return Object.keys(votes).sort((a, b) => votes[b] - votes[a])[0];""",
        chosen,
    )
    assert Select(element("selection-label")).first_selected_option.get_attribute("value") == majority
    assert element("num-labeled").text == "27"  # nothing labeled before the confirmation
    driver.save_screenshot(str(shots / "preview.png"))
    # labeled, undone as one action, labeled again
    Select(element("selection-label")).select_by_value("7")
    element("confirm-selection").click()
    wait.until(lambda d: element("num-labeled").text == "30")
    wait.until(lambda d: element("undo-batch").is_displayed())
    element("undo-batch").click()
    wait.until(lambda d: element("num-labeled").text == "27")
    assert "Took back 3 labels" in element("message").text
    wait.until(lambda d: element("map-plot").get_attribute("data-state") == "ready")
    driver.execute_script(
        "document.getElementById('map-plot').emit('plotly_selected', "
        "{points: arguments[0].map((i) => ({customdata: i}))})",
        chosen,
    )
    element("label-selection").click()
    Select(element("selection-label")).select_by_value("7")
    element("confirm-selection").click()
    wait.until(lambda d: element("num-labeled").text == "30")
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
    assert "of the unlabeled examples" in element("retrain-state").text  # the stopping signal
    # the loss and, with train.eval_every, the held-out accuracy as it trained
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#loss-plot .scatterlayer .trace")) == 2)
    driver.save_screenshot(str(shots / "training.png"))

    wait.until(lambda d: element("map-status").get_attribute("data-stale") == "0")
    assert "version 1" in element("map-status").get_attribute("textContent")  # the new model's map, drawn at once
    element("tab-history").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-table tbody tr")) == 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-plot .scatterlayer .point")) == 2)
    assert "studio" in element("history-table").text
    low, high = driver.execute_script("return document.getElementById('history-plot')._fullLayout.yaxis.range")
    assert 0.0 <= low < high <= 1.0
    # correct a label from the split in the history
    split_row = driver.find_element(By.XPATH, "//tr[td[4]='split']")
    corrected = int(split_row.get_attribute("data-index"))
    held = split_row.find_elements(By.TAG_NAME, "td")[2].text
    new_label = "0" if held != "0" else "1"
    Select(split_row.find_element(By.CLASS_NAME, "history-relabel")).select_by_value(new_label)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#history-table tbody tr")) == 31)
    assert LabelStore.load(run / STORE_NAME).current()[corrected] == new_label
    driver.save_screenshot(str(shots / "history.png"))

    # the labels the model disputes: one relabeled as it suggests, one kept
    element("tab-issues").click()
    element("find-issues").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#issues-list .issue")) >= 2)
    driver.save_screenshot(str(shots / "issues.png"))
    cards = driver.find_elements(By.CSS_SELECTOR, "#issues-list .issue")
    disputed = [int(card.get_attribute("data-index")) for card in cards[:2]]
    suggested = cards[0].find_element(By.CLASS_NAME, "issue-relabel").text.removeprefix("Relabel ")
    count = len(cards)
    cards[0].find_element(By.CLASS_NAME, "issue-relabel").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#issues-list .issue")) == count - 1)
    cards[1].find_element(By.CLASS_NAME, "issue-keep").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#issues-list .issue")) == count - 2)
    reviewed = LabelStore.load(run / STORE_NAME)
    assert reviewed.current()[disputed[0]] == suggested
    if disputed[0] in labeled:  # a label given above with an arbitrary key, corrected
        labeled[disputed[0]] = suggested
    assert {e.index for e in reviewed.entries[-2:] if e.confirmed} == set(disputed)
    element("find-issues").click()
    wait.until(lambda d: "disputed" in element("issues-status").text or "no label" in element("issues-status").text)
    shown = {int(c.get_attribute("data-index")) for c in driver.find_elements(By.CSS_SELECTOR, "#issues-list .issue")}
    assert not shown & set(disputed)
    no_error()
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
    assert {e.annotator for e in store.entries if e.source == "studio"} == {"ana"}
    for name in ("queue", "grid", "filters", "map", "preview", "channels", "training", "history", "issues"):
        assert (shots / f"{name}.png").read_bytes().startswith(b"\x89PNG")

    # a second studio in the same browser (another port, its own token) leaves the first
    # one's cookie alone
    with _serve(run.parent / "second", "second-token-0123456789") as other:
        driver.get(f"{other}/?token=second-token-0123456789")
        wait.until(lambda d: element("run-name").text == "second")
        driver.get(f"{base}/")  # no token in the URL: the cookie alone
        wait.until(lambda d: element("run-name").text == run.name)
        assert element("annotator").get_attribute("value") == "ana"  # asked once per browser
        driver.get(f"{other}/")
        wait.until(lambda d: element("run-name").text == "second")
